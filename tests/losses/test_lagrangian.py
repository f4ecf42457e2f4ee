"""Lagrangian proposals (Pathak et al. 2015) as re-implemented for MedIA 2019: the batched,
vectorised version equals a per-image Python loop of the reference algorithm."""

import math

import pytest
import torch

from wss_monai.losses import LagrangianProposalLoss

INF = float("inf")


def reference_proposals(probs, weak, bounds, classes, lr=5e-5, max_iter=500, tol=1e-3, early_stop=True, eps=1e-10):
    """The reference algorithm, one image at a time, written the obvious way.

    For each image: q = probabilities with weakly labelled pixels set to their one-hot label;
    bounds (0, 0) become (-1, 0); repeat: u = q * exp(-beta_up * f + beta_lo * f) normalised
    over classes, V = sum of u over the pixels of each constrained class,
    beta_up <- max(0, beta_up + lr (V - b)) (stays 0 for b = inf), beta_lo <- max(0, beta_lo + lr (a - V));
    stop after an update whose change is <= tol times the previous multipliers' norm.
    Proposal = argmax of u with the final multipliers; loss = mean over all pixels of -log p[proposal].
    """
    b, c, h, w = probs.shape
    labels, iterations, betas, nll_sum = [], [], [], 0.0
    for n in range(b):
        q = probs[n].clone()
        for i in range(h):
            for j in range(w):
                y = int(weak[n, i, j])
                if y != 255:
                    q[:, i, j] = 0.0
                    q[y, i, j] = 1.0
        lower = [float(bounds[n, k, 0]) for k in classes]
        upper = [float(bounds[n, k, 1]) for k in classes]
        lower = [-1.0 if (lo == 0 and hi == 0) else lo for lo, hi in zip(lower, upper)]
        beta_up = [0.0] * len(classes)
        beta_lo = [0.0] * len(classes)

        def normalised_u():
            factor = torch.ones(c, dtype=probs.dtype)
            for k, cls in enumerate(classes):
                factor[cls] = math.exp(-beta_up[k] + beta_lo[k])
            u = q * factor[:, None, None]
            return u / u.sum(dim=0, keepdim=True)

        count = 0
        for _ in range(max_iter):
            u = normalised_u()
            sizes = [float(u[cls].sum()) for cls in classes]
            new_up = [0.0 if math.isinf(upper[k]) else max(0.0, beta_up[k] + lr * (sizes[k] - upper[k])) for k in range(len(classes))]
            new_lo = [max(0.0, beta_lo[k] + lr * (lower[k] - sizes[k])) for k in range(len(classes))]
            change = math.sqrt(sum((x - y) ** 2 for x, y in zip(new_up + new_lo, beta_up + beta_lo)))
            old_norm = math.sqrt(sum(x**2 for x in beta_up + beta_lo))
            beta_up, beta_lo = new_up, new_lo
            count += 1
            if early_stop and change <= tol * old_norm:
                break
        label = normalised_u().argmax(dim=0)
        for i in range(h):
            for j in range(w):
                nll_sum += -math.log(max(float(probs[n, label[i, j], i, j]), eps))
        labels.append(label)
        iterations.append(count)
        betas.append(torch.tensor([[beta_up[k], beta_lo[k]] for k in range(len(classes))], dtype=probs.dtype))
    return torch.stack(labels), torch.tensor(iterations), torch.stack(betas), nll_sum / max(b * h * w, 1)


def make_case(c=2, size=24, seed=0):
    """Six images: upper violated, lower violated, satisfied, absent target, unconstrained, tight."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, c, size, size, generator=g, dtype=torch.float64) * 1.5
    logits[:, 1:] -= 0.5
    probs = torch.softmax(logits, dim=1)
    weak = torch.full((6, size, size), 255)
    weak[:, size // 2 - 1 : size // 2 + 1, size // 2 - 1 : size // 2 + 1] = 1
    weak[3] = 255
    sizes = probs.sum(dim=(2, 3))
    n = float(size * size)
    bounds = torch.zeros(6, c, 2, dtype=torch.float64)
    bounds[:, 0] = torch.tensor([0.0, INF])
    for k in range(1, c):
        v = sizes[:, k]
        bounds[0, k] = torch.tensor([0.0, float(v[0]) * 0.3])
        bounds[1, k] = torch.tensor([float(v[1]) * 1.6, n])
        bounds[2, k] = torch.tensor([float(v[2]) * 0.5, float(v[2]) * 1.5])
        bounds[3, k] = torch.tensor([0.0, 0.0])
        bounds[4, k] = torch.tensor([0.0, INF])
        bounds[5, k] = torch.tensor([float(v[5]) * 0.9, float(v[5]) * 0.95])
    return probs, weak, bounds


@pytest.mark.parametrize(
    "c, classes, options",
    [
        (2, [1], {}),  # the paper's constants
        (2, [1], {"lr": 2e-3}),
        (2, [1], {"lr": 2e-3, "early_stop": False, "max_iter": 40}),
        (3, [1, 2], {"lr": 1e-3}),
        (3, [2], {"lr": 1e-3}),  # one constrained class among three (the sigmoid path)
    ],
)
def test_batched_proposals_equal_the_per_image_reference_loop(c, classes, options):
    probs, weak, bounds = make_case(c=c)
    term = LagrangianProposalLoss(classes=classes, **options)
    found = term.proposals(probs, weak, bounds)
    labels, iterations, betas, loss = reference_proposals(probs, weak, bounds, classes, **options)
    assert found.classes == classes
    assert torch.equal(found.iterations, iterations)
    assert torch.equal(found.labels, labels)
    assert torch.allclose(found.beta, betas, rtol=1e-9, atol=1e-12)
    assert term(probs, weak=weak, bounds=bounds).item() == pytest.approx(loss, abs=1e-6)
    assert torch.equal(term.last_iterations, iterations)
    if options.get("early_stop", True):
        assert int(iterations.min()) < int(iterations.max())  # images really finish at different times


def test_defaults_are_the_reference_constants():
    term = LagrangianProposalLoss()
    assert (term.lr, term.max_iter, term.tol, term.early_stop, term.absent_lower) == (5e-5, 500, 1e-3, True, -1.0)


def test_without_early_stop_every_image_runs_max_iter():
    probs, weak, bounds = make_case()
    found = LagrangianProposalLoss(early_stop=False, max_iter=30).proposals(probs, weak, bounds)
    assert torch.all(found.iterations == 30)


def test_proposals_keep_the_weak_labels_and_respect_the_constraints():
    probs, weak, bounds = make_case(size=32)
    found = LagrangianProposalLoss(lr=1e-2, max_iter=2000, tol=1e-6).proposals(probs, weak, bounds)
    annotated = weak != 255
    assert torch.equal(found.labels[annotated], weak[annotated])
    hard = (found.labels == 1).sum(dim=(1, 2)).double()
    assert hard[0] <= bounds[0, 1, 1] * 1.1 + 2  # shrunk below the upper bound
    assert hard[1] >= bounds[1, 1, 0] * 0.9 - 2  # grown above the lower bound
    assert hard[3] == 0  # absent target: nothing left
    q = probs[4].argmax(dim=0)
    q[annotated[4]] = weak[4][annotated[4]]
    assert torch.equal(found.labels[4], q)  # unconstrained: argmax of q (network + weak labels)
    assert found.iterations[4] == 1


def test_loss_is_cross_entropy_against_the_proposal_with_gradient_through_probs():
    probs, weak, bounds = make_case(size=4)
    probs = probs.clone().requires_grad_(True)
    term = LagrangianProposalLoss(lr=2e-2, max_iter=20)
    loss = term(probs, weak=weak, bounds=bounds)
    loss.backward()
    labels = term.proposals(probs, weak, bounds).labels
    expected = torch.zeros_like(probs)
    expected.scatter_(1, labels.unsqueeze(1), -1.0 / probs.detach().gather(1, labels.unsqueeze(1)) / labels.numel())
    assert torch.allclose(probs.grad, expected)
    small = probs.detach()[:2].clone().requires_grad_(True)
    short = LagrangianProposalLoss(lr=2e-2, max_iter=3)
    assert torch.autograd.gradcheck(lambda p: short(p, weak=weak[:2], bounds=bounds[:2]), (small,))


def test_extreme_logits_zero_bounds_and_empty_batch_stay_finite():
    logits = torch.tensor([1e4, -1e4]).view(1, 2, 1, 1).repeat(2, 1, 6, 6).requires_grad_(True)
    weak = torch.full((2, 6, 6), 255)
    weak[0, 2, 2] = 1
    bounds = torch.zeros(2, 2, 2)
    bounds[1, 1] = torch.tensor([5.0, 10.0])
    value = LagrangianProposalLoss()(torch.softmax(logits, dim=1), weak=weak, bounds=bounds)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    empty = LagrangianProposalLoss()(torch.zeros(0, 2, 6, 6), weak=torch.zeros(0, 6, 6, dtype=torch.long), bounds=torch.zeros(0, 2, 2))
    assert empty.item() == 0.0


def test_missing_keys_are_named():
    probs, weak, bounds = make_case(size=8)
    with pytest.raises(ValueError, match="'bounds'"):
        LagrangianProposalLoss()(probs, weak=weak)
    with pytest.raises(ValueError, match="'weak'"):
        LagrangianProposalLoss()(probs, bounds=bounds)
