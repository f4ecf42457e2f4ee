"""Priors: entropy, class-proportion KL, class-ratio inequality, fractional moments (eq. 8)."""

import math

import pytest
import torch

from wss_monai.losses import CentroidPenalty, ClassProportionKL, ClassRatioPenalty, EntropyMinimization, MomentPenalty

INF = float("inf")


def random_probs(b=3, c=3, h=4, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(b, c, h, w, generator=g, dtype=torch.float64) * 2, dim=1)


def sq_violation(x, lo, hi):
    if x > hi:
        return (x - hi) ** 2
    if x < lo:
        return (lo - x) ** 2
    return 0.0


# --- entropy -----------------------------------------------------------------------------------


def slow_entropy(probs, mask=None):
    b, c, h, w = probs.shape
    total, count = 0.0, 0
    for n in range(b):
        for i in range(h):
            for j in range(w):
                if mask is not None and not mask[n, i, j]:
                    continue
                total += -sum(float(probs[n, k, i, j]) * math.log(float(probs[n, k, i, j])) for k in range(c)) / math.log(c)
                count += 1
    return total / max(count, 1)


def test_entropy_equals_the_slow_formula_and_is_normalised():
    probs = random_probs()
    assert EntropyMinimization()(probs).item() == pytest.approx(slow_entropy(probs), abs=1e-6)
    assert EntropyMinimization()(torch.full((1, 4, 3, 3), 0.25)).item() == pytest.approx(1.0)
    onehot = torch.zeros(1, 3, 2, 2)
    onehot[:, 1] = 1
    assert EntropyMinimization()(onehot).item() == 0.0
    weak = torch.full((3, 4, 5), 255)
    weak[:, 1, 1:3] = 1
    value = EntropyMinimization(unannotated_only=True)(probs, weak=weak)
    assert value.item() == pytest.approx(slow_entropy(probs, weak == 255), abs=1e-6)
    assert EntropyMinimization(reduction="none")(probs).shape == (3, 4, 5)


def test_entropy_gradient():
    probs = random_probs(b=2, c=3, h=2, w=3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: EntropyMinimization()(p), (probs,))


# --- class-proportion KL -----------------------------------------------------------------------


def slow_kl(q, probs, form):
    b, c, h, w = probs.shape
    phat = [sum(float(probs[n, k, i, j]) for n in range(b) for i in range(h) for j in range(w)) / (b * h * w) for k in range(c)]
    value = 0.0
    for k in range(c):
        if q[k] > 0:
            value += q[k] * math.log(q[k] / phat[k])
        if form == "bernoulli" and q[k] < 1:
            value += (1 - q[k]) * math.log((1 - q[k]) / (1 - phat[k]))
    return value


@pytest.mark.parametrize("form", ["categorical", "bernoulli"])
def test_class_proportion_kl_equals_the_slow_formula(form):
    probs = random_probs()
    q = [0.7, 0.2, 0.1]
    assert ClassProportionKL(target=q, form=form)(probs).item() == pytest.approx(slow_kl(q, probs, form), abs=1e-6)
    assert ClassProportionKL(target=[7, 2, 1], form=form)(probs).item() == pytest.approx(slow_kl(q, probs, form), abs=1e-6)


def test_class_proportion_kl_per_sample_targets():
    probs = random_probs()
    targets = torch.tensor([[0.8, 0.1, 0.1], [0.5, 0.5, 0.0], [0.6, 0.2, 0.2]], dtype=torch.float64)
    per_image = ClassProportionKL(per_image=True, reduction="none")(probs, proportion=targets)
    for n in range(3):
        assert per_image[n].item() == pytest.approx(slow_kl(targets[n].tolist(), probs[n : n + 1], "categorical"), abs=1e-6)
    pooled = ClassProportionKL()(probs, proportion=targets)
    assert pooled.item() == pytest.approx(slow_kl(targets.mean(0).tolist(), probs, "categorical"), abs=1e-6)
    with pytest.raises(ValueError, match="'proportion'"):
        ClassProportionKL()(probs)


def test_class_proportion_kl_is_zero_at_the_prior_and_has_the_right_gradient():
    probs = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64).view(1, 3, 1, 1).expand(2, 3, 3, 3)
    assert abs(ClassProportionKL(target=[0.6, 0.3, 0.1], form="bernoulli")(probs).item()) < 1e-12
    p = random_probs(b=2, c=3, h=2, w=2).requires_grad_(True)
    for form in ("categorical", "bernoulli"):
        assert torch.autograd.gradcheck(lambda x: ClassProportionKL(target=[0.5, 0.3, 0.2], form=form)(x), (p,))


# --- class ratio ---------------------------------------------------------------------------------


def test_class_ratio_equals_the_slow_formula():
    probs = random_probs()
    b, c, h, w = probs.shape
    lower, upper = [0.0, 0.4, 0.05], [1.0, 0.6, 0.15]
    values = []
    for n in range(b):
        for k in (1, 2):
            r = sum(float(probs[n, k, i, j]) for i in range(h) for j in range(w)) / (h * w)
            values.append(sq_violation(r, lower[k], upper[k]))
    expected = sum(values) / len(values)
    assert ClassRatioPenalty(lower=lower, upper=upper)(probs).item() == pytest.approx(expected, abs=1e-9)
    ratio_bounds = torch.tensor([lower, upper], dtype=torch.float64).T.expand(b, c, 2)
    assert ClassRatioPenalty()(probs, ratio_bounds=ratio_bounds).item() == pytest.approx(expected, abs=1e-9)


def test_class_ratio_hinge_form_of_the_slides():
    probs = random_probs()
    ratio = probs[:, 1].mean(dim=(1, 2))
    mu_ps = 0.6
    expected = torch.clamp(mu_ps - ratio, min=0).mean()
    assert ClassRatioPenalty(lower=mu_ps, power=1, classes=[1])(probs).item() == pytest.approx(expected.item())
    p = random_probs(b=2, c=3, h=2, w=2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: ClassRatioPenalty(lower=0.6, upper=0.7)(x), (p,))


# --- moments (eq. 8) -----------------------------------------------------------------------------


def slow_moment_penalty(probs, potentials, bounds, classes):
    """potentials: list of (b, i, j) -> f; bounds[n][k][m] = (lo, hi)."""
    b, c, h, w = probs.shape
    values = []
    for n in range(b):
        for k in classes:
            den = sum(float(probs[n, k, i, j]) for i in range(h) for j in range(w))
            for m, f in enumerate(potentials):
                num = sum(f(n, i, j) * float(probs[n, k, i, j]) for i in range(h) for j in range(w))
                values.append(sq_violation(num / den, *bounds[n][k][m]))
    return sum(values) / len(values)


def test_centroid_penalty_equals_the_slow_formula():
    probs = random_probs()
    b, c, h, w = probs.shape
    bounds = torch.tensor([[1.0, 1.2], [2.5, INF]], dtype=torch.float64).expand(b, c, 2, 2).clone()
    bounds[1, 2] = torch.tensor([[-INF, 1.0], [1.0, 1.5]])
    expected = slow_moment_penalty(probs, [lambda n, i, j: i, lambda n, i, j: j], bounds.tolist(), [1, 2])
    assert CentroidPenalty()(probs, centroid_bounds=bounds).item() == pytest.approx(expected, abs=1e-9)
    norm = CentroidPenalty(coordinates="normalized", bounds=[[0.2, 0.3], [0.1, 0.2]])(probs)
    expected = slow_moment_penalty(
        probs, [lambda n, i, j: i / (h - 1), lambda n, i, j: j / (w - 1)], [[[(0.2, 0.3), (0.1, 0.2)]] * c] * b, [1, 2]
    )
    assert norm.item() == pytest.approx(expected, abs=1e-9)


def test_centroid_of_a_blob_is_its_centre():
    probs = torch.zeros(1, 2, 9, 9, dtype=torch.float64)
    probs[:, 0] = 1
    probs[0, 1, 2:5, 5:8], probs[0, 0, 2:5, 5:8] = 1, 0
    stats = CentroidPenalty().statistics(probs)
    assert stats[0, 1].tolist() == [3.0, 6.0]
    assert CentroidPenalty(bounds=[[2.5, 3.5], [5.5, 6.5]])(probs).item() == 0.0


def test_other_moments_intensity_second_order_and_callable():
    probs = random_probs()
    b, c, h, w = probs.shape
    image = torch.rand(b, 1, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    bounds = [[[(0.45, 0.5)]] * c] * b
    expected = slow_moment_penalty(probs, [lambda n, i, j: float(image[n, 0, i, j])], bounds, [1, 2])
    assert MomentPenalty("intensity", bounds=[[0.45, 0.5]])(probs, image=image).item() == pytest.approx(expected, abs=1e-9)
    second = [lambda n, i, j: i * i, lambda n, i, j: i * j, lambda n, i, j: j * j]
    sb = [[[(2.0, 3.0), (1.0, 2.0), (4.0, 5.0)]] * c] * b
    assert MomentPenalty("second_order", bounds=sb[0][0])(probs).item() == pytest.approx(slow_moment_penalty(probs, second, sb, [1, 2]), abs=1e-9)
    ring = lambda p, image: (torch.arange(p.shape[2], dtype=p.dtype)[:, None] + 0 * p[:1, :1]).expand(1, 1, h, w)  # noqa: E731
    custom = MomentPenalty(ring, bounds=[[0.0, 1.0]], classes=[2])(probs)
    assert custom.item() == pytest.approx(slow_moment_penalty(probs, [lambda n, i, j: i], [[[(0.0, 1.0)]] * c] * b, [2]), abs=1e-9)
    with pytest.raises(ValueError, match="'image'"):
        MomentPenalty("intensity", bounds=[[0.0, 1.0]])(probs)
    with pytest.raises(ValueError, match="'moment_bounds'"):
        MomentPenalty()(probs)


def test_moment_gradient():
    probs = random_probs(b=2, c=2, h=3, w=3).requires_grad_(True)
    bounds = [[0.5, 0.8], [1.5, 1.7]]
    assert torch.autograd.gradcheck(lambda p: CentroidPenalty(bounds=bounds)(p), (probs,))


def test_empty_region_gives_a_finite_moment():
    probs = torch.zeros(1, 2, 4, 4, requires_grad=True)
    value = CentroidPenalty(bounds=[[1.0, 2.0], [1.0, 2.0]])(probs)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(probs.grad).all()
