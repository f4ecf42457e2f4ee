"""Size penalty relu(V - b)^2 + relu(a - V)^2 on the soft size (MedIA 2019 eq. 3-4, sec. 4.4)."""

import math

import pytest
import torch

from wss_monai.losses import SizePenalty, bounds_from_tags

INF = float("inf")


def soft_sizes(probs):
    """V[b][c] by explicit loops over pixels."""
    b, c, h, w = probs.shape
    return [[sum(float(probs[n, k, i, j]) for i in range(h) for j in range(w)) for k in range(c)] for n in range(b)]


def slow_penalty(sizes, lower, upper, num_pixels):
    """Mean over entries of C(V) / (H*W), C = eq. 3 written case by case."""
    values = []
    for v, a, b in zip(sizes, lower, upper):
        if v > b:
            values.append((v - b) ** 2)
        elif v < a:
            values.append((v - a) ** 2)
        else:
            values.append(0.0)
    return sum(values) / num_pixels / max(len(values), 1)


def random_probs(b=4, c=3, h=5, w=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(b, c, h, w, generator=g, dtype=dtype) * 2, dim=1)


def bounds_around(sizes, cases, margin=3.0):
    """Bounds that put each size clearly below ('lo'), above ('hi') or inside ('in') them."""
    b, c = len(sizes), len(sizes[0])
    out = torch.zeros(b, c, 2, dtype=torch.float64)
    out[:, 0] = torch.tensor([0.0, INF])
    for n in range(b):
        for k in range(1, c):
            v, case = sizes[n][k], cases[(n + k) % len(cases)]
            out[n, k] = torch.tensor({"lo": [v + margin, v + 4 * margin], "hi": [0.0, v - margin], "in": [v - margin, v + margin]}[case])
    return out


def test_equals_the_slow_formula_on_foreground_classes():
    probs = random_probs()
    sizes = soft_sizes(probs)
    bounds = bounds_around(sizes, ["lo", "hi", "in"])
    value = SizePenalty()(probs, bounds=bounds)
    flat = [(sizes[n][k], float(bounds[n, k, 0]), float(bounds[n, k, 1])) for n in range(4) for k in (1, 2)]
    expected = slow_penalty(*zip(*flat), num_pixels=30)
    assert value.item() == pytest.approx(expected, abs=1e-6)
    assert value.item() > 0


def test_classes_selection_and_reductions():
    probs = random_probs()
    sizes = soft_sizes(probs)
    bounds = bounds_around(sizes, ["lo", "hi"])
    bounds[:, 0] = torch.tensor([1.0, 2.0])  # background constrained too, but only when asked
    per_entry = SizePenalty(include_background=True, reduction="none")(probs, bounds=bounds)
    assert per_entry.shape == (4, 3)
    for n in range(4):
        for k in range(3):
            assert per_entry[n, k].item() == pytest.approx(slow_penalty([sizes[n][k]], [float(bounds[n, k, 0])], [float(bounds[n, k, 1])], 30), abs=1e-9)
    only2 = SizePenalty(classes=[2], reduction="sum")(probs, bounds=bounds)
    assert only2.item() == pytest.approx(per_entry[:, 2].sum().item())
    assert SizePenalty()(probs, bounds=bounds).item() == pytest.approx(per_entry[:, 1:].mean().item())
    raw = SizePenalty(normalize=False, reduction="none")(probs, bounds=bounds)
    assert torch.allclose(raw, per_entry[:, 1:] * 30)


def test_unconstrained_class_contributes_zero():
    probs = random_probs()
    bounds = torch.tensor([0.0, INF], dtype=torch.float64).expand(4, 3, 2).clone()
    p = probs.clone().requires_grad_(True)
    value = SizePenalty()(p, bounds=bounds)
    value.backward()
    assert value.item() == 0.0 and torch.all(p.grad == 0)


def test_gradient_matches_finite_differences_away_from_the_kinks():
    probs = random_probs(b=3, c=3, h=3, w=4)
    bounds = bounds_around(soft_sizes(probs), ["lo", "hi", "in"], margin=0.5)
    probs.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: SizePenalty()(p, bounds=bounds), (probs,))
    assert torch.autograd.gradcheck(lambda p: SizePenalty(per_volume=True)(p, bounds=bounds[[0, 0, 0]], volume=torch.tensor([5, 5, 5])), (probs,))


def test_zero_with_zero_gradient_inside_the_bounds():
    probs = random_probs()
    bounds = bounds_around(soft_sizes(probs), ["in"])
    p = probs.clone().requires_grad_(True)
    value = SizePenalty()(p, bounds=bounds)
    value.backward()
    assert value.item() == 0.0 and torch.all(p.grad == 0)


@pytest.mark.parametrize("case, direction", [("lo", +1), ("hi", -1)])
def test_gradient_pushes_the_size_back_into_the_bounds(case, direction):
    """Eq. 4: below a, dC/dV < 0 (ascent on S_p); above b, dC/dV > 0; a step moves V towards [a, b]."""
    logits = torch.randn(2, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sizes = soft_sizes(torch.softmax(logits, dim=1))
    bounds = bounds_around(sizes, [case], margin=5.0)
    probs = torch.softmax(logits, dim=1).requires_grad_(True)
    SizePenalty()(probs, bounds=bounds).backward()
    assert torch.all(torch.sign(probs.grad[:, 1]) == -direction)  # dL/dS_p = dC/dV / (HW B K)
    assert torch.all(probs.grad[:, 0] == 0)
    logits = logits.clone().requires_grad_(True)
    SizePenalty()(torch.softmax(logits, dim=1), bounds=bounds).backward()
    stepped = torch.softmax(logits - 50.0 * logits.grad, dim=1)
    after = stepped[:, 1].sum(dim=(1, 2))
    before = torch.tensor([s[1] for s in sizes], dtype=torch.float64)
    assert torch.all(torch.sign(after - before) == direction)


def test_volume_mode_equals_the_2d_penalty_on_per_volume_sums_with_mixed_volumes():
    probs = random_probs(b=6)
    volume = torch.tensor([3, 1, 3, 7, 1, 3])
    sizes = soft_sizes(probs)
    per_volume = {v: [sum(sizes[n][k] for n in range(6) if int(volume[n]) == v) for k in range(3)] for v in (1, 3, 7)}
    vol_bounds = {1: (5.0, 8.0), 3: (14.0, 20.0), 7: (0.0, 1.0)}
    bounds = torch.zeros(6, 3, 2, dtype=torch.float64)
    bounds[:, 0] = torch.tensor([0.0, INF])
    for n in range(6):
        bounds[n, 1:] = torch.tensor(vol_bounds[int(volume[n])], dtype=torch.float64)
    value = SizePenalty(per_volume=True)(probs, bounds=bounds, volume=volume)
    flat = [(per_volume[v][k], *vol_bounds[v]) for v in (1, 3, 7) for k in (1, 2)]
    assert value.item() == pytest.approx(slow_penalty(*zip(*flat), num_pixels=30), abs=1e-6)
    # the reference's 3D setting: the batch is all slices of one volume
    one = SizePenalty(per_volume=True)(probs, bounds=bounds[[2] * 6], volume=torch.zeros(6, dtype=torch.long))
    total = [sum(sizes[n][k] for n in range(6)) for k in (1, 2)]
    assert one.item() == pytest.approx(slow_penalty(total, [14.0] * 2, [20.0] * 2, 30), abs=1e-6)
    # the 2D penalty on a batch whose images are the volume sums
    summed = torch.stack([probs[volume == v].sum(dim=0) for v in (1, 3, 7)])
    two_d = SizePenalty()(summed, bounds=torch.stack([bounds[volume == v][0] for v in (1, 3, 7)]))
    assert value.item() == pytest.approx(two_d.item(), abs=1e-9)


def test_volume_mode_checks_that_slices_of_a_volume_carry_the_same_bounds():
    probs = random_probs(b=3)
    bounds = torch.tensor([[0.0, INF], [1.0, 5.0], [1.0, 5.0]], dtype=torch.float64).expand(3, 3, 2).clone()
    bounds[2, 1] = torch.tensor([2.0, 5.0])
    with pytest.raises(ValueError, match="volume 4 must carry the same bounds"):
        SizePenalty(per_volume=True)(probs, bounds=bounds, volume=torch.tensor([9, 4, 4]))
    with pytest.raises(ValueError, match="'volume'"):
        SizePenalty(per_volume=True)(probs, bounds=bounds)


def test_bounds_in_mm2_with_spacing_equal_the_pixel_bounds():
    probs = random_probs()
    bounds = bounds_around(soft_sizes(probs), ["lo", "hi", "in"])
    spacing = torch.tensor([[1.5, 1.5], [0.5, 2.0], [1.25, 1.0], [2.0, 2.0]], dtype=torch.float64)
    area = spacing.prod(dim=1)
    mm2 = bounds * area[:, None, None]
    px_value = SizePenalty()(probs, bounds=bounds)
    assert SizePenalty(units="mm2")(probs, bounds=mm2, spacing=spacing).item() == pytest.approx(px_value.item(), rel=1e-9)
    with pytest.raises(ValueError, match="'spacing'"):
        SizePenalty(units="mm2")(probs, bounds=mm2)
    vol = torch.tensor([0, 0, 1, 1])
    same = spacing[[0, 0, 2, 2]]
    vb = bounds[[0, 0, 2, 2]]
    px3d = SizePenalty(per_volume=True)(probs, bounds=vb, volume=vol)
    mm3d = SizePenalty(per_volume=True, units="mm2")(probs, bounds=vb * same.prod(1)[:, None, None], volume=vol, spacing=same)
    assert mm3d.item() == pytest.approx(px3d.item(), rel=1e-9)


def test_bad_bounds_are_reported():
    probs = random_probs()
    with pytest.raises(ValueError, match="'bounds'"):
        SizePenalty()(probs)
    with pytest.raises(ValueError, match=r"'bounds' must have shape \(B, C, 2\)"):
        SizePenalty()(probs, bounds=torch.zeros(4, 2, 2))
    bad = torch.zeros(4, 3, 2)
    bad[1, 2] = torch.tensor([5.0, 1.0])
    with pytest.raises(ValueError, match="lower > upper for sample 1, class 2"):
        SizePenalty()(probs, bounds=bad)
    with pytest.raises(ValueError, match="classes"):
        SizePenalty(classes=[3])(probs, bounds=torch.zeros(4, 3, 2))
    with pytest.raises(ValueError, match="units"):
        SizePenalty(units="cm")


def test_tag_bounds_follow_eq_5():
    tags = torch.tensor([[1, 0], [1, 1]])
    expected = torch.tensor([[[1.0, 256.0], [0.0, 0.0]], [[1.0, 256.0], [1.0, 256.0]]])
    assert torch.equal(bounds_from_tags(tags, 256), expected)


def test_float32_matches_float64():
    probs = random_probs()
    bounds = bounds_around(soft_sizes(probs), ["lo", "hi"])
    v64 = SizePenalty()(probs, bounds=bounds)
    v32 = SizePenalty()(probs.float(), bounds=bounds.float())
    assert v32.dtype == torch.float32
    assert math.isclose(v32.item(), v64.item(), rel_tol=1e-5)


def test_volume_mode_on_the_mean_slice_size_divides_size_and_bounds_by_the_slices_of_each_volume():
    probs = random_probs(b=6).requires_grad_(True)
    volume = torch.tensor([3, 1, 3, 7, 1, 3])
    sizes = soft_sizes(probs.detach())
    counts = {1: 2, 3: 3, 7: 1}
    vol_bounds = {1: (5.0, 8.0), 3: (14.0, 20.0), 7: (0.0, 1.0)}
    bounds = torch.zeros(6, 3, 2, dtype=torch.float64)
    bounds[:, 0] = torch.tensor([0.0, INF])
    for n in range(6):
        bounds[n, 1:] = torch.tensor(vol_bounds[int(volume[n])], dtype=torch.float64)
    value = SizePenalty(per_volume=True, volume_size="mean")(probs, bounds=bounds, volume=volume)
    flat = []
    for v in (1, 3, 7):
        n = counts[v]
        for k in (1, 2):
            total = sum(sizes[i][k] for i in range(6) if int(volume[i]) == v)
            flat.append((total / n, vol_bounds[v][0] / n, vol_bounds[v][1] / n))
    assert value.item() == pytest.approx(slow_penalty(*zip(*flat), num_pixels=30), abs=1e-9)
    # for the quadratic penalty this is the summed volume's penalty divided by n^2
    summed = SizePenalty(per_volume=True, reduction="none")(probs, bounds=bounds, volume=volume)
    mean = SizePenalty(per_volume=True, volume_size="mean", reduction="none")(probs, bounds=bounds, volume=volume)
    n2 = torch.tensor([[4.0], [9.0], [1.0]], dtype=torch.float64)
    assert torch.allclose(mean, summed / n2)
    assert torch.autograd.gradcheck(
        lambda p: SizePenalty(per_volume=True, volume_size="mean")(p, bounds=bounds, volume=volume), (probs,))
    with pytest.raises(ValueError, match="volume_size must be 'sum'"):
        SizePenalty(per_volume=True, volume_size="median")
