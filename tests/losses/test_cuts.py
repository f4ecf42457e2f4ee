"""Normalized cut (eq. 5) and kernel cut (eq. 6, gradient eq. 12) losses of Tang et al. (ECCV 2018)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from wss_monai.losses.cuts import KernelCutLoss, NormalizedCutLoss
from wss_monai.losses.dense_crf import DenseCRFLoss
from wss_monai.losses.affinity import AffinityFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling test modules, with or without __init__.py
from test_dense_crf import loop_dense_crf  # noqa: E402
from test_affinity import loop_affinity, smooth_phantom, smooth_probs  # noqa: E402


def loop_normalized_cut(probs, image, sigma_xy, sigma, include_self=True):
    """Per image sum_k [sum_ij S_ik W_ij (1 - S_jk)] / [sum_i d_i S_ik], d_i = sum_j W_ij, with loops."""
    b, c, h, w = probs.shape
    n = h * w
    wmat = loop_affinity(image, sigma_xy, [sigma] * image.shape[1], include_self)
    s = probs.double().reshape(b, c, n)
    out = []
    for bi in range(b):
        deg = [sum(float(wmat[bi, i, j]) for j in range(n)) for i in range(n)]
        total = 0.0
        for k in range(c):
            cut = sum(float(s[bi, k, i]) * float(wmat[bi, i, j]) * (1 - float(s[bi, k, j])) for i in range(n) for j in range(n))
            vol = sum(deg[i] * float(s[bi, k, i]) for i in range(n))
            total += cut / vol
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("include_self", [True, False])
def test_normalized_cut_matches_pair_loops(include_self):
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(2, 3, 6, 7), 1)
    image = torch.rand(2, 1, 6, 7)
    loss = NormalizedCutLoss(3.0, 0.2, filter="exact", include_self=include_self, reduction="none")
    expected = loop_normalized_cut(probs, image, 3.0, 0.2, include_self)
    torch.testing.assert_close(loss(probs, image=image).double(), expected, atol=1e-5, rtol=1e-5)


def test_kernel_cut_matches_pair_loops_with_two_affinities():
    torch.manual_seed(1)
    probs = torch.softmax(torch.randn(2, 3, 6, 7), 1)
    image = torch.rand(2, 1, 6, 7)
    loss = KernelCutLoss(3.0, 0.2, gamma=0.7, nc_sigma_xy=5.0, nc_sigma_intensity=0.4, filter="exact", reduction="none")
    expected = loop_dense_crf(probs, image, 3.0, 0.2) + 0.7 * loop_normalized_cut(probs, image, 5.0, 0.4)
    torch.testing.assert_close(loss(probs, image=image).double(), expected, atol=1e-5, rtol=1e-5)
    same = KernelCutLoss(3.0, 0.2, gamma=0.7, filter="exact", reduction="none")(probs, image=image)
    expected_same = loop_dense_crf(probs, image, 3.0, 0.2) + 0.7 * loop_normalized_cut(probs, image, 3.0, 0.2)
    torch.testing.assert_close(same.double(), expected_same, atol=1e-5, rtol=1e-5)
    crf_only = KernelCutLoss(3.0, 0.2, gamma=0.0, filter="exact")(probs, image=image)
    torch.testing.assert_close(crf_only, DenseCRFLoss(3.0, 0.2, "exact")(probs, image=image))


def test_gradcheck_float64():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    image = torch.rand(2, 1, 5, 6, dtype=torch.float64)
    for loss in (NormalizedCutLoss(2.0, 0.3, "exact"), NormalizedCutLoss(2.0, 0.3, "fast"),
                 KernelCutLoss(2.0, 0.3, gamma=0.5, nc_sigma_xy=4.0, filter="exact")):
        assert torch.autograd.gradcheck(lambda x: loss(torch.softmax(x, 1), image=image), (logits,))


def test_gradient_is_eq_12():
    """NC part: exactly eq. 12. CRF part: eq. 12's -2 W S_k plus W 1 (same for every class, removed by the softmax)."""
    torch.manual_seed(3)
    b, c, h, w = 2, 3, 6, 7
    n, gamma = h * w, 0.8
    logits = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
    probs = torch.softmax(logits, 1)
    probs.retain_grad()
    image = torch.rand(b, 1, h, w, dtype=torch.float64)
    KernelCutLoss(3.0, 0.2, gamma=gamma, nc_sigma_xy=5.0, nc_sigma_intensity=0.3, filter="exact")(probs, image=image).backward()
    wm = AffinityFilter(3.0, 0.2, "exact").prepare(image).matrix()
    wh = AffinityFilter(5.0, 0.3, "exact").prepare(image).matrix()
    s = probs.detach().reshape(b, c, n)
    ws, whs = torch.einsum("bij,bcj->bci", wm, s), torch.einsum("bij,bcj->bci", wh, s)
    d = wh.sum(-1).unsqueeze(1)  # (B, 1, N) degrees of W^
    ds = (d * s).sum(-1, keepdim=True)  # d^T S_k
    sws = (s * whs).sum(-1, keepdim=True)  # S_k^T W^ S_k
    eq12 = -2 * ws / n + gamma * (sws * d / ds**2 - 2 * whs / ds)  # paper's eq. 12 (CRF part per pixel, / N)
    eq12 = eq12 / b  # reduction "mean"
    crf_constant = wm.sum(-1).unsqueeze(1) / (n * b)
    torch.testing.assert_close(probs.grad.reshape(b, c, n), eq12 + crf_constant)
    g = eq12.reshape(b, c, h, w)
    sp = probs.detach()
    torch.testing.assert_close(logits.grad, sp * (g - (sp * g).sum(1, keepdim=True)))


def test_fast_matches_exact_value_and_gradient_direction():
    image = smooth_phantom(2, 48, seed=4)
    logits = (torch.randn(2, 3, 48, 48).cumsum(-1).cumsum(-2) / 6).requires_grad_(True)
    for make in (lambda m: NormalizedCutLoss(8.0, 0.1, m), lambda m: KernelCutLoss(8.0, 0.1, 100.0, filter=m)):
        grads, values = [], []
        for method in ("exact", "fast"):
            value = make(method)(torch.softmax(logits, 1), image=image)
            (g,) = torch.autograd.grad(value, logits)
            grads.append(g.flatten())
            values.append(float(value.detach()))
        assert F.cosine_similarity(grads[0], grads[1], dim=0) > 0.99
        assert abs(values[1] - values[0]) / values[0] < 0.05


def test_finite_on_absent_classes_and_uniform_images():
    image = torch.full((2, 1, 36, 36), 0.5)
    probs = torch.zeros(2, 3, 36, 36)
    probs[:, 0] = 1.0  # classes 1 and 2 absent: d^T S_k = 0
    probs.requires_grad_(True)
    for loss in (NormalizedCutLoss(5.0, 0.1, "fast"), KernelCutLoss(5.0, 0.1, filter="fast"), NormalizedCutLoss(5.0, 0.1, "exact")):
        value = loss(probs, image=image)
        (g,) = torch.autograd.grad(value, probs)
        assert torch.isfinite(value) and torch.isfinite(g).all()
        assert abs(float(value.detach()) - 2.0) < 1e-4  # class 0: no cut; absent classes: their limit 1 each
    value = NormalizedCutLoss(5.0, 0.1, "fast")(smooth_probs(2, 3, 36), image=image)
    assert 0 <= float(value) <= 3


def test_argument_errors():
    probs = torch.softmax(torch.randn(1, 2, 8, 8), 1)
    with pytest.raises(ValueError, match="'image'"):
        NormalizedCutLoss()(probs)
    with pytest.raises(ValueError, match="'image'"):
        KernelCutLoss()(probs)
    with pytest.raises(ValueError, match="gamma"):
        KernelCutLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="integer multiple"):
        KernelCutLoss()(probs, image=torch.rand(1, 1, 9, 9))
    with pytest.raises(ValueError, match="method"):
        NormalizedCutLoss(filter="permutohedral")
