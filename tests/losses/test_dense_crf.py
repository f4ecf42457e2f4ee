"""DenseCRF loss (Tang et al. ECCV 2018 eq. 4, gradient eq. 11) against pixel-pair loops and the exact filter."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from wss_monai.losses.dense_crf import DenseCRFLoss
from wss_monai.losses.affinity import AffinityFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling test modules, with or without __init__.py
from test_affinity import loop_affinity, smooth_phantom, smooth_probs  # noqa: E402


def loop_dense_crf(probs: torch.Tensor, image: torch.Tensor, sigma_xy: float, sigma: float, include_self=True):
    """Per image sum_k sum_ij S_ik W_ij (1 - S_jk) / N with explicit loops over pixel pairs."""
    b, c, h, w = probs.shape
    n = h * w
    wmat = loop_affinity(image, sigma_xy, [sigma] * image.shape[1], include_self)
    s = probs.double().reshape(b, c, n)
    out = []
    for bi in range(b):
        total = 0.0
        for i in range(n):
            for j in range(n):
                wij = float(wmat[bi, i, j])
                for k in range(c):
                    total += float(s[bi, k, i]) * wij * (1.0 - float(s[bi, k, j]))
        out.append(total / n)
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("include_self", [True, False])
def test_exact_value_matches_pair_loops(include_self):
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(2, 3, 6, 7), 1)
    image = torch.rand(2, 1, 6, 7)
    loss = DenseCRFLoss(sigma_xy=3.0, sigma_intensity=0.2, filter="exact", include_self=include_self, reduction="none")
    expected = loop_dense_crf(probs, image, 3.0, 0.2, include_self)
    torch.testing.assert_close(loss(probs, image=image).double(), expected, atol=1e-5, rtol=1e-5)
    mean = DenseCRFLoss(3.0, 0.2, "exact", include_self=include_self)(probs, image=image)
    assert mean.dim() == 0
    torch.testing.assert_close(mean.double(), expected.mean(), atol=1e-5, rtol=1e-5)
    total = DenseCRFLoss(3.0, 0.2, "exact", include_self=include_self, reduction="sum")(probs, image=image)
    torch.testing.assert_close(total.double(), expected.sum(), atol=1e-5, rtol=1e-5)


def test_scale_factor_and_larger_image():
    torch.manual_seed(1)
    probs = torch.softmax(torch.randn(2, 3, 8, 10), 1)
    image = torch.rand(2, 1, 16, 20)  # twice the prediction's size: average-pooled
    loss = DenseCRFLoss(sigma_xy=4.0, sigma_intensity=0.2, filter="exact", scale_factor=0.5, reduction="none")
    small_p = F.avg_pool2d(probs, 2)
    small_i = F.avg_pool2d(F.avg_pool2d(image, 2), 2)
    expected = loop_dense_crf(small_p, small_i, 2.0, 0.2)
    torch.testing.assert_close(loss(probs, image=image).double(), expected, atol=1e-5, rtol=1e-5)


def test_gradcheck_float64():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    image = torch.rand(2, 1, 5, 6, dtype=torch.float64)
    for method in ("exact", "fast"):
        loss = DenseCRFLoss(2.0, 0.3, filter=method)
        assert torch.autograd.gradcheck(lambda x: loss(torch.softmax(x, 1), image=image), (logits,))


def test_gradient_is_eq_11():
    """Autograd w.r.t. S equals (d - 2 W S_k) / (B N); through the softmax, eq. 11's -2 W S_k gives the same."""
    torch.manual_seed(3)
    b, c, h, w = 2, 3, 6, 7
    n = h * w
    logits = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
    probs = torch.softmax(logits, 1)
    probs.retain_grad()
    image = torch.rand(b, 1, h, w, dtype=torch.float64)
    DenseCRFLoss(3.0, 0.2, "exact")(probs, image=image).backward()
    wmat = AffinityFilter(3.0, 0.2, "exact").prepare(image).matrix()
    s = probs.detach().reshape(b, c, n)
    ws = torch.einsum("bij,bcj->bci", wmat, s)
    d = wmat.sum(-1).unsqueeze(1)
    torch.testing.assert_close(probs.grad.reshape(b, c, n), (d - 2 * ws) / (b * n))
    eq11 = (-2 * ws / (b * n)).reshape(b, c, h, w)
    sp = probs.detach()
    logit_grad = sp * (eq11 - (sp * eq11).sum(1, keepdim=True))  # softmax Jacobian^T
    torch.testing.assert_close(logits.grad, logit_grad)


def test_fast_matches_exact_value_and_gradient_direction():
    image = smooth_phantom(2, 48)
    logits = (torch.randn(2, 3, 48, 48).cumsum(-1).cumsum(-2) / 6).requires_grad_(True)
    grads, values = [], []
    for method in ("exact", "fast"):
        value = DenseCRFLoss(8.0, 0.1, filter=method)(torch.softmax(logits, 1), image=image)
        (g,) = torch.autograd.grad(value, logits)
        grads.append(g.flatten())
        values.append(float(value.detach()))
    cos = F.cosine_similarity(grads[0], grads[1], dim=0)
    assert cos > 0.99, float(cos)
    assert abs(values[1] - values[0]) / values[0] < 0.05


def test_non_negative_and_finite_on_degenerate_inputs():
    loss = DenseCRFLoss(5.0, 0.1, filter="fast")
    uniform = torch.full((2, 1, 40, 40), 0.3)
    onehot = torch.zeros(2, 3, 40, 40)
    onehot[:, 0] = 1.0  # zero probabilities everywhere else
    onehot.requires_grad_(True)
    value = loss(onehot, image=uniform)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(onehot.grad).all()
    assert abs(float(value.detach())) < 1e-4  # a single label everywhere: no cut
    probs = smooth_probs(2, 3, 40)
    assert float(loss(probs, image=uniform)) > 0
    assert float(DenseCRFLoss(5.0, 0.1, "exact")(probs[:, :, :20, :20], image=uniform[:, :, :20, :20])) >= 0


def test_argument_and_batch_key_errors():
    probs = torch.softmax(torch.randn(1, 2, 8, 8), 1)
    with pytest.raises(ValueError, match="'image'"):
        DenseCRFLoss()(probs)
    with pytest.raises(ValueError, match="integer multiple"):
        DenseCRFLoss()(probs, image=torch.rand(1, 1, 12, 12))
    with pytest.raises(ValueError, match="scale_factor"):
        DenseCRFLoss(scale_factor=2.0)
    with pytest.raises(ValueError, match="reduction"):
        DenseCRFLoss(reduction="avg")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        DenseCRFLoss()(probs[0], image=torch.rand(1, 1, 8, 8))


def test_autocast_and_ignored_keywords():
    image, probs = smooth_phantom(1, 32), smooth_probs(1, 2, 32)
    loss = DenseCRFLoss(4.0, 0.1, "fast")
    ref = loss(probs, image=image)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(probs.bfloat16(), image=image, weak=torch.zeros(1, 32, 32), bounds=None, volume=None)
    assert out.dtype == torch.float32
    assert math.isclose(float(out), float(ref), rel_tol=2e-2)
