"""Extended log-barrier on the size constraints a - V <= 0 and V - b <= 0, t = 5 * 1.1^epoch."""

import math

import pytest
import torch

from wss_monai.losses import LogBarrierPenalty, SizePenalty, extended_log_barrier

INF = float("inf")


def slow_psi(z, t):
    if z <= -1 / t**2:
        return -math.log(-z) / t
    return t * z - math.log(1 / t**2) / t + 1 / t


def slow_log_barrier(probs, bounds, t, classes, zero_lower_active=False, volume=None):
    """Loops over images (or volumes), classes and pixels; mean over entries, divided by H*W."""
    b, c, h, w = probs.shape
    groups = list(range(b)) if volume is None else sorted(set(int(v) for v in volume))
    members = {g: [g] for g in groups} if volume is None else {g: [n for n in range(b) if int(volume[n]) == g] for g in groups}
    values = []
    for g in groups:
        first = members[g][0]
        for k in classes:
            v = sum(float(probs[n, k, i, j]) for n in members[g] for i in range(h) for j in range(w))
            lo, hi = float(bounds[first, k, 0]), float(bounds[first, k, 1])
            value = 0.0
            if math.isfinite(hi):
                value += slow_psi(v - hi, t)
            if math.isfinite(lo) and (lo > 0 or (zero_lower_active and lo >= 0)):
                value += slow_psi(lo - v, t)
            values.append(value)
    return sum(values) / (h * w) / max(len(values), 1)


def random_probs(b=4, c=3, h=5, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(b, c, h, w, generator=g, dtype=torch.float64) * 2, dim=1)


def mixed_bounds(probs):
    sizes = probs.sum(dim=(2, 3))
    b, c = sizes.shape
    bounds = torch.zeros(b, c, 2, dtype=torch.float64)
    bounds[:, 0] = torch.tensor([0.0, INF])
    cases = [(-4.0, 6.0), (2.0, 9.0), (-9.0, -2.0), None]  # inside, below a, above b, unconstrained
    for n in range(b):
        for k in range(1, c):
            case = cases[(n + k) % len(cases)]
            bounds[n, k] = torch.tensor([0.0, INF]) if case is None else (sizes[n, k] + torch.tensor(case)).clamp_min(0.5)
    bounds[0, 1] = torch.tensor([0.0, 0.0])  # absent target
    return bounds


def test_psi_is_the_papers_piecewise_function_and_is_c1_at_the_knot():
    t = 5.0
    zs = torch.tensor([-3.0, -0.5, -1 / t**2 - 1e-3, -1 / t**2, -0.01, 0.0, 0.7, 12.0], dtype=torch.float64)
    values = extended_log_barrier(zs, t)
    assert torch.allclose(values, torch.tensor([slow_psi(float(z), t) for z in zs], dtype=torch.float64))
    knot = torch.tensor([-1 / t**2], dtype=torch.float64, requires_grad=True)
    left = extended_log_barrier(knot - 1e-9, t)
    right = extended_log_barrier(knot + 1e-9, t)
    assert left.item() == pytest.approx(right.item(), abs=1e-6)
    extended_log_barrier(knot, t).backward()
    assert knot.grad.item() == pytest.approx(t)


@pytest.mark.parametrize("epoch", [0, 7])
@pytest.mark.parametrize("zero_lower_active", [False, True])
def test_equals_the_slow_formula(epoch, zero_lower_active):
    probs = random_probs()
    bounds = mixed_bounds(probs)
    term = LogBarrierPenalty(zero_lower_active=zero_lower_active)
    term.set_epoch(epoch)
    expected = slow_log_barrier(probs, bounds, 5.0 * 1.1**epoch, [1, 2], zero_lower_active)
    assert term(probs, bounds=bounds).item() == pytest.approx(expected, abs=1e-6)


def test_volume_mode_and_sum_reduction_share_the_size_penalty_machinery():
    probs = random_probs(b=5)
    volume = torch.tensor([2, 0, 2, 0, 2])
    bounds = mixed_bounds(probs)[[1, 2, 1, 2, 1]]
    value = LogBarrierPenalty(per_volume=True)(probs, bounds=bounds, volume=volume)
    assert value.item() == pytest.approx(slow_log_barrier(probs, bounds, 5.0, [1, 2], volume=volume), abs=1e-6)
    per_entry = LogBarrierPenalty(per_volume=True, reduction="none")(probs, bounds=bounds, volume=volume)
    assert per_entry.shape == SizePenalty(per_volume=True, reduction="none")(probs, bounds=bounds, volume=volume).shape == (2, 2)
    assert LogBarrierPenalty(per_volume=True, reduction="sum")(probs, bounds=bounds, volume=volume).item() == pytest.approx(per_entry.sum().item())


def test_gradient_matches_finite_differences_away_from_the_knot():
    probs = random_probs(b=3, c=3, h=3, w=4)
    bounds = mixed_bounds(probs)
    probs.requires_grad_(True)
    term = LogBarrierPenalty()
    assert torch.autograd.gradcheck(lambda p: term(p, bounds=bounds), (probs,))


@pytest.mark.parametrize("offset, direction", [((3.0, 8.0), +1), ((-8.0, -3.0), -1)])
def test_gradient_pushes_the_size_back_into_the_bounds(offset, direction):
    probs = random_probs(b=2, c=2).requires_grad_(True)
    sizes = probs.detach().sum(dim=(2, 3))
    bounds = torch.zeros(2, 2, 2, dtype=torch.float64)
    bounds[:, 0] = torch.tensor([0.0, INF])
    bounds[:, 1] = sizes[:, 1:2] + torch.tensor(offset, dtype=torch.float64)
    LogBarrierPenalty()(probs, bounds=bounds).backward()
    assert torch.all(torch.sign(probs.grad[:, 1]) == -direction)


def test_t_schedule_starts_at_5_and_grows_by_1_1_per_epoch_and_is_checkpointed():
    term = LogBarrierPenalty()
    assert term.t == 5.0
    term.step_epoch()
    assert term.t == pytest.approx(5.5)
    term.step_epoch()
    assert term.t == pytest.approx(6.05)
    term.set_epoch(10)
    assert term.t == pytest.approx(5.0 * 1.1**10)
    restored = LogBarrierPenalty()
    restored.load_state_dict(term.state_dict())
    assert restored.t == term.t
    assert LogBarrierPenalty(t_max=6.0, factor=2.0).t == 5.0
    capped = LogBarrierPenalty(t_max=6.0, factor=2.0)
    capped.step_epoch()
    assert capped.t == 6.0
    with pytest.raises(ValueError):
        LogBarrierPenalty(t0=0)


def test_unconstrained_and_extreme_inputs_stay_finite():
    logits = torch.tensor([1e4, -1e4]).view(1, 2, 1, 1).repeat(3, 1, 4, 4).requires_grad_(True)
    bounds = torch.tensor([[[0.0, INF], [0.0, 0.0]], [[0.0, INF], [3.0, 5.0]], [[0.0, INF], [0.0, INF]]])
    value = LogBarrierPenalty(zero_lower_active=True)(torch.softmax(logits, dim=1), bounds=bounds)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
