"""Affinity filters: exact against explicit pixel-pair loops, bilateral grid against exact, adjointness, errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from pipelines.testkit.images import smooth_logits, smooth_phantom, smooth_probs
from wss_monai.losses.affinity import (
    AffinityFilter,
    BilateralGridAffinity,
    ExactAffinity,
    GridTooLargeError,
    gaussian_features,
)


def loop_affinity(image: torch.Tensor, sigma_xy: float, sigmas: list[float], include_self: bool = True) -> torch.Tensor:
    """W (B, N, N) with explicit Python loops over pixel pairs (the definition in the module docstring)."""
    b, ci, h, w = image.shape
    n = h * w
    out = torch.zeros(b, n, n, dtype=torch.float64)
    img = image.double()
    for bi in range(b):
        for i in range(n):
            yi, xi = divmod(i, w)
            for j in range(n):
                if i == j and not include_self:
                    continue
                yj, xj = divmod(j, w)
                e = ((yi - yj) ** 2 + (xi - xj) ** 2) / (2 * sigma_xy**2)
                for c in range(ci):
                    e += float(img[bi, c, yi, xi] - img[bi, c, yj, xj]) ** 2 / (2 * sigmas[c] ** 2)
                out[bi, i, j] = math.exp(-e)
    return out


def relative_error(fast: torch.Tensor, exact: torch.Tensor) -> float:
    """||fast - exact||_F / ||exact||_F over the whole batch (the documented tolerance measure)."""
    return float((fast - exact).norm() / exact.norm())


@pytest.mark.parametrize("include_self", [True, False])
def test_exact_filter_matches_pair_loops(include_self):
    torch.manual_seed(0)
    image = torch.rand(2, 2, 6, 7)
    values = torch.rand(2, 3, 6, 7)
    filt = AffinityFilter(2.5, [0.3, 0.5], method="exact", include_self=include_self)
    op = filt.prepare(image)
    assert isinstance(op, ExactAffinity)
    w = loop_affinity(image, 2.5, [0.3, 0.5], include_self)
    expected = torch.einsum("bij,bcj->bci", w, values.double().reshape(2, 3, 42)).reshape(2, 3, 6, 7)
    torch.testing.assert_close(op(values).double(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(op.matrix().double(), w, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(op.degree().double(), w.sum(-1).reshape(2, 1, 6, 7), atol=1e-5, rtol=1e-5)


def test_exact_filter_blocks_give_same_result():
    torch.manual_seed(1)
    image, values = torch.rand(2, 1, 9, 8), torch.rand(2, 2, 9, 8)
    full = AffinityFilter(3.0, 0.2, "exact").prepare(image)
    feats = full.features
    blocked = ExactAffinity(feats, 9, 8, block_elements=2 * 72 * 5)  # 5 rows per block
    assert blocked.rows == 5
    torch.testing.assert_close(blocked(values), full(values))


@pytest.mark.parametrize("sigma_xy,sigma_int", [(1.5, 0.1), (5.0, 0.1), (20.0, 0.05), (80.0, 0.06)])
def test_fast_filter_within_tolerance_of_exact(sigma_xy, sigma_int):
    image = smooth_phantom(2, 64)
    probs = smooth_probs(2, 3, 64)
    exact = AffinityFilter(sigma_xy, sigma_int, "exact").prepare(image)
    fast = AffinityFilter(sigma_xy, sigma_int, "fast").prepare(image)
    assert isinstance(fast, BilateralGridAffinity)
    err = relative_error(fast(probs), exact(probs))
    assert err < 0.05, err
    assert relative_error(fast.degree(), exact.degree()) < 0.05


def test_banded_blur_equals_matrix_blur():
    image, probs = smooth_phantom(1, 64), smooth_probs(1, 2, 64)
    feats = gaussian_features(image, 1.5, [0.1])
    banded = BilateralGridAffinity(feats, 64, 64, banded_above=64)
    assert banded.sizes[0] > 64 and banded.blurs[0] is None  # long spatial axes take the banded path
    dense = BilateralGridAffinity(feats, 64, 64, banded_above=10**6)
    assert all(m is not None for m in dense.blurs)
    assert relative_error(banded(probs), dense(probs)) < 1e-5


def test_chunked_grid_equals_single_grid():
    image, probs = smooth_phantom(3, 24), smooth_probs(3, 2, 24)
    feats = gaussian_features(image, 4.0, [0.1])
    chunked = BilateralGridAffinity(feats, 24, 24, chunk_pixels=2 * 24 * 24)  # chunks of 2 images, then 1
    whole = BilateralGridAffinity(feats, 24, 24, chunk_pixels=1 << 30)
    assert (chunked.chunk, whole.chunk) == (2, 3)
    torch.testing.assert_close(chunked(probs), whole(probs), atol=1e-6, rtol=1e-5)


def test_fast_filter_two_channels_within_tolerance():
    image = smooth_phantom(1, 48, channels=2)
    probs = smooth_probs(1, 2, 48)
    exact = AffinityFilter(8.0, [0.15, 0.2], "exact").prepare(image)
    fast = AffinityFilter(8.0, [0.15, 0.2], "fast").prepare(image)
    assert len(fast.sizes) == 4
    assert relative_error(fast(probs), exact(probs)) < 0.05


def test_fast_filter_without_self_term_subtracts_identity():
    image, probs = smooth_phantom(1, 32), smooth_probs(1, 2, 32)
    with_self = AffinityFilter(4.0, 0.1, "fast").prepare(image)
    without = AffinityFilter(4.0, 0.1, "fast", include_self=False).prepare(image)
    torch.testing.assert_close(without(probs), with_self(probs) - probs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_filters_are_symmetric_and_gradcheck(method):
    torch.manual_seed(2)
    image = torch.rand(2, 1, 5, 6, dtype=torch.float64)
    op = AffinityFilter(2.0, 0.3, method).prepare(image)
    assert op.dtype == torch.float64
    x, y = torch.rand(2, 2, 5, 6, dtype=torch.float64), torch.rand(2, 2, 5, 6, dtype=torch.float64)
    torch.testing.assert_close((op(x) * y).sum(), (x * op(y)).sum())
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: op(v), (x,))


def test_auto_picks_exact_for_small_and_fast_for_large():
    assert isinstance(AffinityFilter(5.0, 0.1).prepare(torch.rand(1, 1, 8, 8)), ExactAffinity)
    assert isinstance(AffinityFilter(5.0, 0.1).prepare(torch.rand(1, 1, 64, 64)), BilateralGridAffinity)


def test_grid_budget_fast_raises_auto_falls_back():
    image = torch.rand(1, 1, 40, 40) * 100.0
    with pytest.raises(GridTooLargeError, match="max_cells"):
        AffinityFilter(1.0, 0.01, "fast", max_cells=10_000).prepare(image)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        op = AffinityFilter(1.0, 0.01, "auto", max_cells=10_000, exact_max_pixels=10).prepare(image)
    assert isinstance(op, ExactAffinity)
    assert any("falling back" in str(w.message) for w in caught)


def test_argument_errors_are_clear():
    with pytest.raises(ValueError, match="method"):
        AffinityFilter(5.0, 0.1, method="lattice")
    with pytest.raises(ValueError, match="sigma_xy"):
        AffinityFilter(0.0, 0.1)
    with pytest.raises(ValueError, match="sigma_intensity"):
        AffinityFilter(5.0, -1.0)
    with pytest.raises(ValueError, match="2 values but the image has 1"):
        AffinityFilter(5.0, [0.1, 0.2]).prepare(torch.rand(1, 1, 8, 8))
    op = AffinityFilter(5.0, 0.1).prepare(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="prepared for maps"):
        op(torch.rand(1, 2, 8, 9))


def test_uniform_image_and_zero_values_are_finite():
    image = torch.full((1, 1, 40, 40), 0.5)
    op = AffinityFilter(5.0, 0.1, "fast").prepare(image)
    assert torch.isfinite(op(torch.zeros(1, 2, 40, 40))).all()
    assert torch.isfinite(op.degree()).all()
    exact = AffinityFilter(5.0, 0.1, "exact").prepare(image)
    assert relative_error(op.degree(), exact.degree()) < 0.05


def test_autocast_computes_in_float32():
    image, probs = smooth_phantom(1, 32), smooth_probs(1, 2, 32)
    op = AffinityFilter(4.0, 0.1, "fast").prepare(image)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = op(probs.bfloat16())
    assert out.dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_fast_filter_on_gpu_matches_cpu():
    image, probs = smooth_phantom(2, 48), smooth_probs(2, 3, 48)
    cpu = AffinityFilter(6.0, 0.1, "fast").prepare(image)(probs)
    gpu = AffinityFilter(6.0, 0.1, "fast").prepare(image.cuda())(probs.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("include_self", [True, False])
def test_moments_and_their_gradient_match_the_explicit_matrix(include_self):
    """(S_k^T W S_k, d^T S_k) and their gradient (autograd through W built by pair loops)."""
    torch.manual_seed(3)
    image = torch.rand(2, 2, 5, 6, dtype=torch.float64)
    values = torch.rand(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    op = AffinityFilter(2.0, [0.3, 0.4], "exact", include_self=include_self).prepare(image)
    assoc, volume = op.moments(values)
    w = loop_affinity(image, 2.0, [0.3, 0.4], include_self)
    s = values.reshape(2, 3, 30)
    assoc_ref = torch.einsum("bki,bij,bkj->bk", s, w, s)
    volume_ref = torch.einsum("bki,bi->bk", s, w.sum(-1))
    torch.testing.assert_close(assoc, assoc_ref)
    torch.testing.assert_close(volume, volume_ref)
    weights_a, weights_v = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    (grad,) = torch.autograd.grad((assoc * weights_a + volume * weights_v).sum(), values)
    (grad_ref,) = torch.autograd.grad((assoc_ref * weights_a + volume_ref * weights_v).sum(), values)
    torch.testing.assert_close(grad, grad_ref)


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_moments_gradcheck_and_backward_filters_nothing(method):
    torch.manual_seed(4)
    image = torch.rand(2, 1, 5, 6, dtype=torch.float64)
    op = AffinityFilter(2.0, 0.3, method).prepare(image)
    values = torch.rand(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: op.moments(v), (values,))
    calls = []
    inner = op._filter
    op._filter = lambda v: calls.append(v.shape[1]) or inner(v)
    assoc, volume = op.moments(values)
    (assoc.sum() + 2.0 * volume.sum()).backward()
    assert calls == [3]  # one filtering of [S, 1] (2 + 1 channels), none in the backward pass


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_probabilities_are_filtered_without_the_ones_channel_and_give_the_same_moments(method):
    """Channels summing to one: the degree is the sum of the filtered channels (W is linear)."""
    image, probs = smooth_phantom(2, 40), torch.softmax(smooth_logits(2, 3, 40).double(), dim=1)
    op = AffinityFilter(8.0, 0.1, method).prepare(image.double())
    calls = []
    inner = op._filter
    op._filter = lambda v: calls.append(v.shape[1]) or inner(v)
    values = probs.clone().requires_grad_(True)
    assoc, volume = op.moments(values)
    (grad,) = torch.autograd.grad((assoc * 1.5 - volume).sum(), values)
    assert calls == [3]  # the 3 classes only, no ones channel
    filtered, degree = op(probs), op.degree()  # the reference: W S and W 1 filtered separately
    torch.testing.assert_close(assoc, (probs * filtered).sum(dim=(2, 3)))
    torch.testing.assert_close(volume, (probs * degree).sum(dim=(2, 3)))
    torch.testing.assert_close(grad, 3.0 * filtered - degree)


def test_operators_report_their_method():
    assert AffinityFilter(5.0, 0.1).prepare(torch.rand(1, 1, 8, 8)).method == "exact"
    assert AffinityFilter(5.0, 0.1).prepare(torch.rand(1, 1, 64, 64)).method == "fast"
