"""Gaussian affinity filters ``W @ S`` over pixel position and image intensity (DenseCRF and cut losses).

The affinity between pixels i and j of one image is the dense Gaussian of Tang et al. (ECCV 2018,
eq. 4-6, "dense Gaussian kernel over RGBXY")::

    W_ij = exp(- |p_i - p_j|^2 / (2 sigma_xy^2) - sum_c (I_ic - I_jc)^2 / (2 sigma_c^2))

Units: ``p`` is the pixel position in pixels of the map being filtered (the probability map), so
``sigma_xy`` is in those pixels; ``I`` is the image at the same resolution and ``sigma_intensity``
is in the image's own intensity units (one value, or one per channel). One channel (MR, CT) is
the main case; several channels are allowed.

Self term: the Gaussian has ``W_ii = exp(0) = 1``. By default it is kept (``include_self=True``),
as in the dense-CRF reference (its permutohedral lattice includes it); with
``include_self=False`` the operator is ``W - I``, i.e. the diagonal is removed exactly, also from
the fast filter (which then subtracts ``S`` from its approximation of ``W S``).

Two filters share one interface (:class:`AffinityOperator`, built by :class:`AffinityFilter`):

- ``"exact"`` (:class:`ExactAffinity`): forms the N x N affinity of each image, in blocks of rows
  so memory stays O(block x N); O(N^2) time. For small images, tests, and as a reference.
- ``"fast"`` (:class:`BilateralGridAffinity`): a bilateral grid over (y, intensity..., x) that
  never forms N x N. Each pixel is splatted with multilinear ("tent") weights onto a regular grid
  whose spacing is ``sigma / cells_per_sigma`` along every feature axis, the grid is blurred by a
  separable Gaussian, and the result is sliced back with the same weights, so the operator is
  ``P^T B P`` and stays symmetric (its adjoint is itself, which the backward pass uses). The
  grid Gaussian has variance ``cells_per_sigma^2 - 1/3`` cells^2 so that, with the two tents
  (variance 1/6 cell^2 each), the overall kernel has the target variance; its amplitude is set so
  that the kernel's mass matches the exact one. With the default ``cells_per_sigma=2`` the
  relative error ``||fast - exact||_F / ||exact||_F`` of the filtered probabilities is 0.8-1.8 %
  on 48 x 48 and 64 x 64 MR-like images (smooth background, edges, noise) for sigma_xy from 1.5
  to 80 px, and the DenseCRF / cut loss gradients have cosine similarity >= 0.9998 with the exact
  ones (tests require < 5 % and >= 0.99). Cost: 2^(2+Ci) scatter-adds and gathers per pixel plus
  a separable blur of the grid (dense G x G matrix products on short axes, truncated shifted
  adds on axes over ``banded_above`` cells); the grid has about
  ``(H / s)(W / s)(range / s_I)`` cells, s = sigma_xy / cells_per_sigma, so a small sigma_xy on a
  large image gives a grid larger than the image (still linear in N, but cache-bound). Works
  for any number of channels
  (2 + Ci grid axes, 2^(2+Ci) corners per pixel) while the dense grid fits ``max_cells``: in
  practice one to three channels; on CPU, channels and images are filtered in groups of about
  ``chunk_cells`` grid cells so each grid stays in cache. Three channels are slow: the grid of a
  256 x 256 3-channel image at sigma_xy 100, sigma_intensity 0.06 has about 1e6 cells per
  channel (its size is set by the intensity range over sigma_intensity, so downscaling the image
  barely shrinks it); see the ``dense_crf`` benchmark for the measured times.

  A permutohedral lattice (Adams, Baek & Davis 2010: d + 1 vertices per pixel instead of 2^d)
  was prototyped twice in vectorised PyTorch and not kept; the measurements, on 48 x 48 crops of
  the ``dense_crf`` benchmark's phantoms (sigma_xy 100 / 50 / 5, sigma_intensity 0.06 / 0.1,
  1-3 channels), errors ``||W~S - WS|| / ||WS||`` against the exact filter:

  * the sparse lattice (blur only between splatted vertices, as in the reference code) loses
    mass on every blur path that leaves them: 13-20 % error with the analytic amplitude
    (covolume ``(d+1)^(d-1/2)``, checked to 0.2 % on dense data) at the standard scale, and it
    worsens on finer lattices (18-92 % at 1.5-2x), because more paths leave;
  * that loss can be removed exactly: the vertices a path between splatted vertices passes
    through after blur pass j are those reachable from them by passes <= j and able to reach
    them by passes > j. For one 256 x 256 3-channel image at sigma_xy 100 they are only
    1.4-2.4x the 7,890 splatted vertices per pass (140,776 and 1.6-3.1x at sigma_xy 5);
  * even lossless, the simplex interpolation is coarse in 5-D: 11-18 % error at the standard
    scale, 4.5-5.9 % at 1.5x, 3.4-5.3 % at 2x (the grid here: 1.5-1.7 % at 2 cells per sigma),
    and averaging four randomly rotated lattices does not lower it (the error is a bias of the
    kernel's shape, not noise), while each finer step multiplies the blur passes;
  * renormalising each pixel's result by the exact degree ``W 1`` gives 0.5-2.5 % at the
    standard scale, but no cheap filter gives that degree: the grid's own degree has the same
    error as its ``W S`` (8 % at 1 cell per sigma, 3.8 % at 1.5).

  The grid with fewer cells is no way out either: 12 x 4 x 256^2 3-channel moments took 0.33 s
  at 1 cell per sigma (8 % error), 1.19 s at 1.5 (3.9 %) and 6.5 s at 2 (1.7 %), one thread.
  Its error there is mostly where the grid happens to lie (fitting the blur taps so that the
  average kernel is Gaussian left it at 8.3 %); the mean of four grids at random sub-cell
  offsets had 1.7-4.5 % at 1 cell per sigma and 0.7-2.6 % at 1.5, for four times the cost.
- ``"auto"``: exact when the image has at most ``exact_max_pixels`` pixels, fast otherwise; if the
  grid would exceed ``max_cells`` it falls back to the exact blocked filter with a warning.

All filters are linear in ``S``, run on any device, compute in float32 (float64 inputs stay
float64, for gradcheck), switch autocast off internally, and are differentiable with respect to
``S`` through a custom autograd function that applies the same symmetric operator to the
incoming gradient (no N x N or per-pixel intermediates are kept for the backward pass). The image
is a constant: no gradient flows to it.

The losses use :meth:`AffinityOperator.moments` instead: the per-class forms ``S_k^T W S_k`` and
``d^T S_k`` (d = W 1) from one filtering of ``[S, 1]`` (C + 1 channels; only the C channels of
probabilities, whose sum is 1, so that ``d = sum_k W S_k``), with a backward pass
that reuses ``W S`` and ``d`` (W symmetric: ``d(S_k^T W S_k)/dS_k = 2 W S_k``) and filters
nothing. A DenseCRF or cut loss step thus filters once instead of three times (``W S``,
``W 1``, and ``W`` applied to the gradient). Each operator names its method in ``.method``
(``"exact"`` or ``"fast"``), so the choice of ``"auto"`` can be reported.

Example::

    >>> import torch
    >>> from wss_monai.losses.affinity import AffinityFilter
    >>> image = torch.rand(2, 1, 64, 64)
    >>> probs = torch.softmax(torch.randn(2, 3, 64, 64), 1)
    >>> op = AffinityFilter(sigma_xy=5.0, sigma_intensity=0.1, method="fast").prepare(image)
    >>> op(probs).shape, op.degree().shape
    (torch.Size([2, 3, 64, 64]), torch.Size([2, 1, 64, 64]))
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import torch

from wss_monai.losses.affinity.bilateral_grid import BilateralGridAffinity, GridTooLargeError
from wss_monai.losses.affinity.exact import ExactAffinity
from wss_monai.losses.affinity.operator import (
    AffinityOperator,
    as_sigma_list,
    autocast_off,
    compute_dtype,
    gaussian_features,
)

FILTER_METHODS = ("exact", "fast", "auto")


class AffinityFilter:
    """Configuration of the Gaussian affinity W; :meth:`prepare` builds the operator for a batch of images.

    Args:
        sigma_xy: spatial bandwidth in pixels of the map being filtered (> 0).
        sigma_intensity: intensity bandwidth in the image's units: one value, or one per channel.
        method: ``"exact"``, ``"fast"`` (bilateral grid) or ``"auto"`` (see the module docstring).
        include_self: keep the self-affinity ``W_ii = 1`` (True) or use ``W - I`` (False).
        cells_per_sigma: bilateral-grid samples per sigma along each axis (>= 1; 2 meets the 5 %
            tolerance with margin; larger is more accurate and slower).
        exact_max_pixels: ``"auto"`` uses the exact filter up to this many pixels per image.
        max_cells: largest bilateral grid (cells over the batch) before ``"fast"`` refuses and
            ``"auto"`` falls back to the exact filter.
    """

    def __init__(self, sigma_xy: float, sigma_intensity: float | Sequence[float], method: str = "auto",
                 include_self: bool = True, cells_per_sigma: float = 2.0, exact_max_pixels: int = 1024,
                 max_cells: int = 1 << 26) -> None:
        if method not in FILTER_METHODS:
            raise ValueError(f"filter method must be one of {FILTER_METHODS}, got {method!r}.")
        if not (float(sigma_xy) > 0 and math.isfinite(float(sigma_xy))):
            raise ValueError(f"sigma_xy must be positive and finite, got {sigma_xy!r}.")
        if not float(cells_per_sigma) >= 1.0:
            raise ValueError(f"cells_per_sigma must be >= 1, got {cells_per_sigma!r}.")
        self.sigma_xy = float(sigma_xy)
        if isinstance(sigma_intensity, (int, float)):
            self.sigma_intensity: float | list[float] = float(sigma_intensity)
            as_sigma_list(self.sigma_intensity, 1, "sigma_intensity")
        else:
            self.sigma_intensity = [float(s) for s in sigma_intensity]
            as_sigma_list(self.sigma_intensity, len(self.sigma_intensity), "sigma_intensity")
        self.method = method
        self.include_self = bool(include_self)
        self.cells_per_sigma = float(cells_per_sigma)
        self.exact_max_pixels = int(exact_max_pixels)
        self.max_cells = int(max_cells)

    def scaled(self, factor: float) -> "AffinityFilter":
        """The same filter for a map resized by ``factor`` (sigma_xy scales with it)."""
        return AffinityFilter(self.sigma_xy * factor, self.sigma_intensity, self.method, self.include_self,
                              self.cells_per_sigma, self.exact_max_pixels, self.max_cells)

    def prepare(self, image: torch.Tensor, dtype: torch.dtype | None = None) -> AffinityOperator:
        """Build W for ``image`` (B, Ci, H, W) at the resolution of the maps it will filter."""
        if image.dim() != 4:
            raise ValueError(f"AffinityFilter expects image of shape (B, Ci, H, W), got {tuple(image.shape)}.")
        b, ci, h, w = image.shape
        sig = as_sigma_list(self.sigma_intensity, ci, "sigma_intensity")
        dtype = dtype or compute_dtype(image)
        with torch.no_grad(), autocast_off(image.device):
            feats = gaussian_features(image.detach().to(dtype), self.sigma_xy, sig)
        method = self.method
        if method == "auto":
            method = "exact" if h * w <= self.exact_max_pixels else "fast"
        if method == "fast":
            try:
                return BilateralGridAffinity(feats, h, w, self.include_self, self.cells_per_sigma, self.max_cells)
            except GridTooLargeError as err:
                if self.method == "fast":
                    raise
                warnings.warn(f"{err}; falling back to the exact O(N^2) filter.", RuntimeWarning, stacklevel=2)
        return ExactAffinity(feats, h, w, self.include_self)

    def __call__(self, values: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """``W @ values`` for values (B, C, H, W) and image (B, Ci, H, W)."""
        return self.prepare(image, compute_dtype(values, image))(values)
