"""Gated CRF loss (Obukhov et al. 2019, eq. 1-5, 10, 11) against a brute-force double loop over pixel pairs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from wss_monai.losses.gated_crf import GatedCRFLoss


def brute_force(probs, image, kernels, radius, compat=None, src=None, dst=None):
    """Per image: energy of eq. 5 (gates of eq. 4, kernels of eq. 1-2) and sum of m_dst, with Python loops.

    ``image`` is already at the probabilities' resolution; masks are (B, H, W) or None.
    """
    b, c, h, w = probs.shape
    p = probs.double()
    img = None if image is None else image.double()
    mu = 1.0 - torch.eye(c, dtype=torch.float64) if compat is None else torch.as_tensor(compat, dtype=torch.float64)
    energies, denoms = [], []
    for bi in range(b):
        total = 0.0
        for ay in range(h):
            for ax in range(w):
                gd = 1.0 if dst is None else float(dst[bi, ay, ax])
                for by in range(ay - radius, ay + radius + 1):
                    for bx in range(ax - radius, ax + radius + 1):
                        if (by, bx) == (ay, ax) or not (0 <= by < h and 0 <= bx < w):
                            continue
                        gs = 1.0 if src is None else float(src[bi, by, bx])
                        k = 0.0
                        for spec in kernels:
                            e = 0.0
                            if spec.get("xy") is not None:
                                e += ((ay - by) ** 2 + (ax - bx) ** 2) / (2 * spec["xy"] ** 2)
                            if spec.get("image") is not None:
                                sig = spec["image"] if isinstance(spec["image"], list) else [spec["image"]] * img.shape[1]
                                for ch in range(img.shape[1]):
                                    e += float(img[bi, ch, ay, ax] - img[bi, ch, by, bx]) ** 2 / (2 * sig[ch] ** 2)
                            k += spec.get("weight", 1.0) * math.exp(-e)
                        pair = 0.0
                        for i in range(c):
                            for j in range(c):
                                pair += float(mu[i, j]) * float(p[bi, i, ay, ax]) * float(p[bi, j, by, bx])
                        total += gd * gs * k * pair
        energies.append(total)
        denoms.append(float(h * w) if dst is None else float(dst[bi].sum()))
    return torch.tensor(energies, dtype=torch.float64), torch.tensor(denoms, dtype=torch.float64)


KERNELS = [{"weight": 1.0, "xy": 2.0, "image": 0.3}, {"weight": 0.5, "xy": 1.5}, {"weight": 0.7, "image": [0.4, 0.2]}]
COMPAT = [[0.0, 1.0, 2.0], [1.5, 0.0, 0.5], [2.0, 0.3, 0.1]]


def test_matches_brute_force_with_masks_kernels_compat():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(2, 3, 6, 7), 1)
    image = torch.rand(2, 2, 12, 14)  # twice the prediction's resolution: average-pooled
    src = (torch.rand(2, 6, 7) > 0.3).float()
    dst = (torch.rand(2, 1, 6, 7) > 0.4).float()
    loss = GatedCRFLoss(KERNELS, radius=2, compatibility=COMPAT, reduction="none")
    energy, denom = brute_force(probs, F.avg_pool2d(image, 2), KERNELS, 2, COMPAT, src, dst[:, 0])
    got = loss(probs, image=image, source_mask=src, dest_mask=dst)
    torch.testing.assert_close(got.double(), energy / denom, atol=1e-5, rtol=1e-5)
    mean = GatedCRFLoss(KERNELS, radius=2, compatibility=COMPAT)(probs, image=image, source_mask=src, dest_mask=dst)
    torch.testing.assert_close(mean.double(), energy.sum() / denom.sum(), atol=1e-5, rtol=1e-5)
    total = GatedCRFLoss(KERNELS, radius=2, compatibility=COMPAT, reduction="sum")(probs, image=image, source_mask=src, dest_mask=dst)
    torch.testing.assert_close(total.double(), (energy / denom).sum(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("radius", [1, 3, 5])
def test_potts_matches_brute_force_without_masks(radius):
    torch.manual_seed(radius)
    probs = torch.softmax(torch.randn(2, 3, 6, 7), 1)
    image = torch.rand(2, 1, 6, 7)
    kernels = [{"weight": 1.0, "xy": 6.0, "image": 0.1}]
    energy, denom = brute_force(probs, image, kernels, radius)
    got = GatedCRFLoss(kernels, radius=radius, reduction="none")(probs, image=image)
    torch.testing.assert_close(got.double(), energy / denom, atol=1e-5, rtol=1e-5)


def test_valid_mask_gates_sources_and_destinations_and_annotated_pixels():
    torch.manual_seed(1)
    probs = torch.softmax(torch.randn(2, 3, 6, 7), 1)
    image = torch.rand(2, 1, 6, 7)
    valid = (torch.rand(2, 6, 7) > 0.2).float()
    weak = torch.full((2, 6, 7), 255, dtype=torch.long)
    weak[:, 2, 1:5] = 1
    kernels = [{"xy": 3.0, "image": 0.5}]
    dst = valid * (weak == 255).float()
    energy, denom = brute_force(probs, image, kernels, 2, None, valid, dst)
    got = GatedCRFLoss(kernels, radius=2, mask_annotated=True, reduction="none")(probs, image=image, valid=valid, weak=weak)
    torch.testing.assert_close(got.double(), energy / denom, atol=1e-5, rtol=1e-5)


def test_no_out_of_image_neighbours():
    """One label everywhere: every in-image pair agrees, so the Potts energy is exactly 0 (zero padding would not be)."""
    probs = torch.zeros(2, 3, 9, 9)
    probs[:, 1] = 1.0
    image = torch.rand(2, 1, 9, 9)
    for src in (None, torch.ones(2, 1, 9, 9)):
        value = GatedCRFLoss(radius=5)(probs, image=image, source_mask=src)
        assert float(value) == 0.0
    # A corner pixel with a different label: only its in-image neighbours count.
    probs[:, 1, 0, 0], probs[:, 2, 0, 0] = 0.0, 1.0
    kernels = [{"xy": 2.0}]
    energy, denom = brute_force(probs, None, kernels, 5)
    got = GatedCRFLoss(kernels, radius=5, reduction="none")(probs)
    torch.testing.assert_close(got.double(), energy / denom)
    expected_pairs = sum(math.exp(-(dy * dy + dx * dx) / 8.0) for dy in range(6) for dx in range(6) if (dy, dx) != (0, 0))
    torch.testing.assert_close(got.double(), torch.full((2,), 2 * expected_pairs / 81, dtype=torch.float64))


def test_window_larger_than_image():
    torch.manual_seed(2)
    probs = torch.softmax(torch.randn(1, 2, 3, 4), 1)
    image = torch.rand(1, 1, 3, 4)
    kernels = [{"xy": 2.0, "image": 0.5}]
    energy, denom = brute_force(probs, image, kernels, 6)
    got = GatedCRFLoss(kernels, radius=6, reduction="none")(probs, image=image)
    torch.testing.assert_close(got.double(), energy / denom, atol=1e-6, rtol=1e-6)


def test_inputs_unchanged():
    torch.manual_seed(3)
    probs = torch.softmax(torch.randn(2, 3, 8, 8), 1).requires_grad_(True)
    image, src, dst, valid = torch.rand(2, 1, 16, 16), torch.ones(2, 1, 8, 8), torch.ones(2, 8, 8), torch.ones(2, 1, 8, 8)
    weak = torch.full((2, 8, 8), 255, dtype=torch.uint8)
    weak[0, 3, 3] = 0
    inputs = [probs, image, src, dst, valid, weak]
    before = [t.detach().clone() for t in inputs]
    value = GatedCRFLoss(KERNELS[:2], radius=3, mask_annotated=True)(probs, image=image, source_mask=src, dest_mask=dst, valid=valid, weak=weak)
    value.backward()
    for t, b in zip(inputs, before):
        assert torch.equal(t.detach(), b)


def test_gradcheck_float64():
    torch.manual_seed(4)
    logits = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    image = torch.rand(2, 1, 5, 6, dtype=torch.float64)
    src = (torch.rand(2, 1, 5, 6) > 0.3).double()
    dst = (torch.rand(2, 1, 5, 6) > 0.3).double()
    for compat in ("potts", COMPAT):
        loss = GatedCRFLoss([{"xy": 2.0, "image": 0.3}, {"weight": 0.5, "xy": 1.0}], radius=2, compatibility=compat)
        assert torch.autograd.gradcheck(
            lambda x: loss(torch.softmax(x, 1), image=image, source_mask=src, dest_mask=dst), (logits,)
        )


def test_empty_masks_uniform_image_zero_probs_are_finite():
    probs = torch.zeros(2, 3, 8, 8)
    probs[:, 0, :4] = 1.0
    probs[:, 2, 4:] = 1.0
    probs.requires_grad_(True)
    image = torch.full((2, 1, 8, 8), 0.5)
    loss = GatedCRFLoss()
    for kwargs in ({}, {"dest_mask": torch.zeros(2, 1, 8, 8)}, {"source_mask": torch.zeros(2, 1, 8, 8)}):
        for red in ("mean", "sum", "none"):
            value = GatedCRFLoss(reduction=red)(probs, image=image, **kwargs)
            (g,) = torch.autograd.grad(value.sum(), probs)
            assert torch.isfinite(value).all() and torch.isfinite(g).all()
    assert float(loss(probs, image=image, dest_mask=torch.zeros(2, 1, 8, 8)).detach()) == 0.0
    assert float(loss(probs, image=image).detach()) > 0.0


def test_argument_errors():
    probs = torch.softmax(torch.randn(1, 3, 8, 8), 1)
    with pytest.raises(ValueError, match="'image'"):
        GatedCRFLoss()(probs)
    with pytest.raises(ValueError, match="integer multiple"):
        GatedCRFLoss()(probs, image=torch.rand(1, 1, 12, 12))
    with pytest.raises(ValueError, match="C=3"):
        GatedCRFLoss(compatibility=[[0, 1], [1, 0]])(probs, image=torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="square"):
        GatedCRFLoss(compatibility=[[0, 1, 1], [1, 0, 1]])
    with pytest.raises(ValueError, match="unknown key"):
        GatedCRFLoss(kernels=[{"rgb": 0.1, "xy": 6}])
    with pytest.raises(ValueError, match="radius"):
        GatedCRFLoss(radius=0)
    with pytest.raises(ValueError, match="'weak'"):
        GatedCRFLoss(mask_annotated=True)(probs, image=torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="source_mask"):
        GatedCRFLoss()(probs, image=torch.rand(1, 1, 8, 8), source_mask=torch.ones(1, 2, 8, 8))
    with pytest.raises(ValueError, match="2 sigmas"):
        GatedCRFLoss(kernels=[{"image": [0.1, 0.2]}])(probs, image=torch.rand(1, 1, 8, 8))


def test_autocast_float32():
    probs = torch.softmax(torch.randn(1, 3, 16, 16), 1)
    image = torch.rand(1, 1, 16, 16)
    ref = GatedCRFLoss()(probs, image=image)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = GatedCRFLoss()(probs.bfloat16(), image=image, bounds=None, volume=None)
    assert out.dtype == torch.float32
    assert math.isclose(float(out), float(ref), rel_tol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_cpu():
    torch.manual_seed(5)
    probs = torch.softmax(torch.randn(2, 3, 32, 32), 1)
    image = torch.rand(2, 1, 64, 64)
    loss = GatedCRFLoss(KERNELS[:2], radius=5, compatibility=COMPAT)
    torch.testing.assert_close(loss(probs.cuda(), image=image.cuda()).cpu(), loss(probs, image=image), atol=1e-5, rtol=1e-4)
