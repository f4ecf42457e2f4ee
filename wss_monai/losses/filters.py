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
  was prototyped in vectorised PyTorch and not kept: on 2 x 48 x 48 3-channel phantoms
  (sigma_intensity 0.06 and 0.1, sigma_xy 50 and 5) its error against the exact filter was
  4-10 % even with the best global rescaling (which needs the exact result), 12-15 % with the
  analytic amplitude, and 10-30 % when the blur was renormalised by the occupied neighbours; a
  sparse lattice drops the blur's mass that leaves the occupied lattice points. Deduplicating
  its ~4.7 M vertex keys for 12 x 256 x 256 pixels by sorting measured 0.13-0.6 s on one thread
  here, before any filtering.
- ``"auto"``: exact when the image has at most ``exact_max_pixels`` pixels, fast otherwise; if the
  grid would exceed ``max_cells`` it falls back to the exact blocked filter with a warning.

All filters are linear in ``S``, run on any device, compute in float32 (float64 inputs stay
float64, for gradcheck), switch autocast off internally, and are differentiable with respect to
``S`` through a custom autograd function that applies the same symmetric operator to the
incoming gradient (no N x N or per-pixel intermediates are kept for the backward pass). The image
is a constant: no gradient flows to it.

The losses use :meth:`AffinityOperator.moments` instead: the per-class forms ``S_k^T W S_k`` and
``d^T S_k`` (d = W 1) from one filtering of ``[S, 1]`` (C + 1 channels), with a backward pass
that reuses ``W S`` and ``d`` (W symmetric: ``d(S_k^T W S_k)/dS_k = 2 W S_k``) and filters
nothing. A DenseCRF or cut loss step thus filters once instead of three times (``W S``,
``W 1``, and ``W`` applied to the gradient). Each operator names its method in ``.method``
(``"exact"`` or ``"fast"``), so the choice of ``"auto"`` can be reported.

Example::

    >>> import torch
    >>> from wss_monai.losses.filters import AffinityFilter
    >>> image = torch.rand(2, 1, 64, 64)
    >>> probs = torch.softmax(torch.randn(2, 3, 64, 64), 1)
    >>> op = AffinityFilter(sigma_xy=5.0, sigma_intensity=0.1, method="fast").prepare(image)
    >>> op(probs).shape, op.degree().shape
    (torch.Size([2, 3, 64, 64]), torch.Size([2, 1, 64, 64]))
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Sequence

import torch

FILTER_METHODS = ("exact", "fast", "auto")


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 when any floating input is float64 (gradcheck), float32 otherwise (half, autocast)."""
    for t in tensors:
        if t is not None and t.dtype == torch.float64:
            return torch.float64
    return torch.float32


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """A context that disables autocast on ``device`` so the filters compute in full precision."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # device type without autocast support
        return contextlib.nullcontext()


def as_sigma_list(sigma: float | Sequence[float], channels: int, name: str) -> list[float]:
    """Broadcast one sigma to ``channels`` values, or check a per-channel list; all must be > 0."""
    if isinstance(sigma, (int, float)):
        values = [float(sigma)] * channels
    else:
        values = [float(s) for s in sigma]
        if len(values) == 1:
            values = values * channels
        if len(values) != channels:
            raise ValueError(f"{name} has {len(values)} values but the image has {channels} channel(s).")
    for v in values:
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be positive and finite, got {sigma!r}.")
    return values


def match_image_to(image: torch.Tensor, size: tuple[int, int], owner: str) -> torch.Tensor:
    """Average-pool ``image`` (B, Ci, Hi, Wi) down to ``size`` (h, w) when Hi, Wi are integer multiples.

    Raises a clear error when the image is smaller than ``size`` or not an integer multiple of it.
    """
    if image.dim() != 4:
        raise ValueError(f"{owner} expects image of shape (B, Ci, H, W), got {tuple(image.shape)}.")
    hi, wi = image.shape[-2:]
    h, w = size
    if (hi, wi) == (h, w):
        return image
    if hi % h or wi % w or hi < h or wi < w or hi // h != wi // w:
        raise ValueError(
            f"{owner}: image spatial size {(hi, wi)} must equal the prediction's {(h, w)} or be the "
            f"same integer multiple of it in both axes."
        )
    f = hi // h
    return torch.nn.functional.avg_pool2d(image, kernel_size=f, stride=f)


def gaussian_features(image: torch.Tensor, sigma_xy: float, sigma_intensity: Sequence[float]) -> torch.Tensor:
    """Scaled features (B, 2 + Ci, N): (y / sigma_xy, x / sigma_xy, I_c / sigma_c), so W = exp(-|f_i - f_j|^2 / 2)."""
    b, ci, h, w = image.shape
    dev, dt = image.device, image.dtype
    ys = torch.arange(h, device=dev, dtype=dt).view(h, 1).expand(h, w) / sigma_xy
    xs = torch.arange(w, device=dev, dtype=dt).view(1, w).expand(h, w) / sigma_xy
    pos = torch.stack([ys, xs]).reshape(1, 2, h * w).expand(b, 2, h * w)
    scale = torch.tensor(sigma_intensity, device=dev, dtype=dt).view(1, ci, 1)
    inten = image.reshape(b, ci, h * w) / scale
    return torch.cat([pos, inten], dim=1)


class _SymmetricLinear(torch.autograd.Function):
    """y = A x for a fixed symmetric operator A; the backward pass is A applied to the gradient."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, op: "AffinityOperator") -> torch.Tensor:  # noqa: D401
        ctx.op = op
        with torch.no_grad():
            return op._apply(values)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _SymmetricLinear.apply(grad.contiguous(), ctx.op), None


class _AffinityMoments(torch.autograd.Function):
    """Per image and class ``assoc_k = S_k^T A S_k`` and ``volume_k = d^T S_k`` (d = A 1) from one filtering.

    A is symmetric, so ``d assoc_k / d S_k = 2 A S_k`` and ``d volume_k / d S_k = d``: both are
    results of the forward pass, which filters ``[S, 1]`` together (C + 1 channels, one splat and
    one slice), and the backward pass filters nothing. Kept for the backward: ``A S`` (B, C, H, W)
    and ``d`` (B, 1, H, W).
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, op: "AffinityOperator"):  # noqa: D401
        b, c, h, w = values.shape
        with torch.no_grad():
            ones = torch.ones(b, 1, h, w, dtype=values.dtype, device=values.device)
            both = op._apply(torch.cat([values, ones], dim=1))
            filtered, degree = both[:, :c], both[:, c:]
            assoc = (values * filtered).sum(dim=(2, 3))
            volume = (values * degree).sum(dim=(2, 3))
        ctx.save_for_backward(filtered, degree)
        return assoc, volume

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_assoc: torch.Tensor | None, grad_volume: torch.Tensor | None):
        filtered, degree = ctx.saved_tensors
        grad = torch.zeros_like(filtered)
        if grad_assoc is not None:
            grad = grad + 2.0 * filtered * grad_assoc[:, :, None, None]
        if grad_volume is not None:
            grad = grad + degree * grad_volume[:, :, None, None]
        return grad, None


class AffinityOperator:
    """The affinity W (or W - I) of one batch of images, prepared once, applied to many maps.

    Call it on values (B, C, H, W) to get ``W @ values`` per image and channel, same shape.
    """

    method = ""
    """The filter's method name (``"exact"``, ``"fast"``): what ``"auto"`` chose."""

    def __init__(self, batch: int, height: int, width: int, dtype: torch.dtype, device: torch.device,
                 include_self: bool = True) -> None:
        self.batch, self.height, self.width = batch, height, width
        self.dtype, self.device = dtype, device
        self.include_self = include_self

    def __call__(self, values: torch.Tensor) -> torch.Tensor:
        self._check(values)
        with autocast_off(values.device):
            return _SymmetricLinear.apply(values.to(self.dtype).contiguous(), self)

    def moments(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(S_k^T W S_k, d^T S_k)`` per image and channel, each (B, C), from a single filtering.

        The quadratic and linear forms every affinity loss here is built from (DenseCRF, normalized
        and kernel cut). Differentiable in ``values``; the backward pass reuses ``W S`` and
        ``d = W 1`` from the forward pass instead of filtering the incoming gradient (W symmetric).
        """
        self._check(values)
        with autocast_off(values.device):
            return _AffinityMoments.apply(values.to(self.dtype).contiguous(), self)

    def _check(self, values: torch.Tensor) -> None:
        if values.dim() != 4 or values.shape[0] != self.batch or tuple(values.shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"{type(self).__name__} was prepared for maps of shape ({self.batch}, C, {self.height}, "
                f"{self.width}), got {tuple(values.shape)}."
            )

    def degree(self) -> torch.Tensor:
        """Node degrees d = W 1, shape (B, 1, H, W) (no gradient: W does not depend on the maps)."""
        ones = torch.ones(self.batch, 1, self.height, self.width, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            return self._apply(ones)

    def _apply(self, values: torch.Tensor) -> torch.Tensor:
        b, c, h, w = values.shape
        out = self._filter(values.reshape(b, c, h * w)).reshape(b, c, h, w)
        if not self.include_self:
            out = out - values
        return out

    def _filter(self, values: torch.Tensor) -> torch.Tensor:  # (B, C, N) -> (B, C, N), W with unit diagonal
        raise NotImplementedError


class ExactAffinity(AffinityOperator):
    """Exact dense Gaussian affinity, formed block of rows by block of rows (O(N^2) time, O(block x N) memory)."""

    method = "exact"

    def __init__(self, features: torch.Tensor, height: int, width: int, include_self: bool = True,
                 block_elements: int = 1 << 22) -> None:
        b, _, n = features.shape
        super().__init__(b, height, width, features.dtype, features.device, include_self)
        self.features = features
        self.rows = max(1, min(n, block_elements // max(1, b * n)))

    def _filter(self, values: torch.Tensor) -> torch.Tensor:
        f = self.features
        n = f.shape[2]
        out = torch.empty_like(values)
        for r0 in range(0, n, self.rows):
            r1 = min(n, r0 + self.rows)
            d2 = (f[:, :, r0:r1, None] - f[:, :, None, :]).square_().sum(1)  # (B, R, N)
            wblock = d2.mul_(-0.5).exp_()
            out[:, :, r0:r1] = torch.bmm(values, wblock.transpose(1, 2))
        return out

    def matrix(self) -> torch.Tensor:
        """The full (B, N, N) affinity (W, or W - I without the self term); for tests on small images."""
        f = self.features
        w = torch.exp(-0.5 * (f[:, :, :, None] - f[:, :, None, :]).square().sum(1))
        if not self.include_self:
            w = w - torch.eye(f.shape[2], dtype=w.dtype, device=w.device)
        return w


class BilateralGridAffinity(AffinityOperator):
    """Bilateral-grid approximation of the dense Gaussian affinity (splat, separable blur, slice).

    ``features`` (B, D, N) are already divided by their sigmas (see :func:`gaussian_features`); the
    grid spacing is ``1 / cells_per_sigma`` in those units along every axis. The blur along an axis
    of at most ``banded_above`` cells is a product with the dense G x G Gaussian matrix (fast BLAS);
    longer axes (small sigma_xy on a large image) use truncated shifted adds (taps below 1e-6 of
    the peak dropped), whose cost per cell does not grow with G. On CPU the batch is processed in
    chunks of about ``chunk_pixels`` pixels (whole images), each with its own grid, to keep the
    scatter/gather working set in cache.
    """

    method = "fast"

    def __init__(self, features: torch.Tensor, height: int, width: int, include_self: bool = True,
                 cells_per_sigma: float = 2.0, max_cells: int = 1 << 26, banded_above: int = 1 << 30,
                 chunk_pixels: int = 1 << 16, block: int = 32, chunk_cells: int = 1 << 20) -> None:
        b, dims, n = features.shape
        super().__init__(b, height, width, features.dtype, features.device, include_self)
        # Grid axes ordered (y, intensities..., x): the long spatial axes are then the first and
        # the last, whose blurs are single large matrix products; the short intensity axes sit in
        # the middle (small batched products). The operator does not depend on the order.
        features = features[:, [0] + list(range(2, dims)) + [1]]
        if not cells_per_sigma >= 1.0:
            raise ValueError(f"cells_per_sigma must be >= 1 (grid spacing at most one sigma), got {cells_per_sigma}.")
        with torch.no_grad():
            u = (features - features.amin(dim=2, keepdim=True)) * cells_per_sigma
            sizes = [int(u[:, d].max().floor().item()) + 2 for d in range(dims)]
            cells = b * math.prod(sizes)
            if cells > max_cells:
                raise GridTooLargeError(
                    f"bilateral grid of {cells} cells (batch {b}, axes {sizes}) exceeds max_cells={max_cells}: "
                    f"increase sigma_xy / sigma_intensity, lower cells_per_sigma, or use method='exact'."
                )
            i0 = u.floor()
            for d, s in enumerate(sizes):
                i0[:, d].clamp_(max=s - 2)
            frac = u - i0
            strides = [math.prod(sizes[d + 1:]) for d in range(dims)]
            # On CPU the batch is filtered in chunks of about chunk_pixels pixels, each with its own
            # small grid, so the scatter/gather working set stays in cache; indices are chunk-local.
            per_image = math.prod(sizes)
            # Also at most about chunk_cells grid cells (whole images) per chunk (multi-channel images).
            self.chunk = max(1, min(b, chunk_pixels // n, chunk_cells // per_image)) if features.device.type == "cpu" else b
            local = torch.arange(b, device=features.device, dtype=torch.int64) % self.chunk
            base = local.view(b, 1) * per_image
            for d in range(dims):
                base = base + i0[:, d].to(torch.int64) * strides[d]
            base = base.reshape(-1)  # int64: index_add_ with int32 indices takes a much slower path
            # Corner c = (bit_0 .. bit_D-1): index base + sum_d bit_d stride_d, weight prod_d (frac_d or
            # 1 - frac_d). Only the fractions are kept; the corner weights are built per chunk in
            # _filter, where they stay in cache (materialising all of them for a large batch made
            # this preparation grow faster than the pixel count).
            offsets = [0]
            for d in range(dims):
                offsets = offsets + [o + strides[d] for o in offsets]
            self.base = base
            self.offsets = offsets
            self.frac = frac.transpose(0, 1).reshape(dims, -1)  # (D, B * N)
            sg = math.sqrt(cells_per_sigma**2 - 1.0 / 3.0)
            amp = cells_per_sigma / sg
            radius = math.ceil(math.sqrt(2.0 * math.log(1e6)) * sg)  # taps below 1e-6 of the peak dropped
            self.taps = [amp * math.exp(-0.5 * t * t / sg**2) for t in range(radius + 1)]
            self.blurs = []
            for s in sizes:
                if s > banded_above:
                    self.blurs.append(None)  # long axis: truncated shifted adds, O(taps) per cell
                    continue
                k = torch.arange(s, device=features.device, dtype=features.dtype)
                self.blurs.append(amp * torch.exp(-0.5 * (k.view(-1, 1) - k.view(1, -1)).square() / sg**2))
        self.sizes = sizes
        # Channels are filtered in groups whose grids hold about chunk_cells cells on CPU: the grid
        # of several channels of a 3-channel image (~1e6 cells each) no longer fits the cache, and
        # measured 0.65 s for 5 channels of 2 x 128^2 RGB at once against 5 x 0.08 s one by one.
        self.channel_group = max(1, chunk_cells // (self.chunk * per_image)) if features.device.type == "cpu" else 1 << 30
        self.block = int(block)
        self.cells = cells
        self.per_image = per_image

    @staticmethod
    def _corner_weights(frac: torch.Tensor) -> list[torch.Tensor]:
        """Multilinear weights (1, M) of the 2^D grid corners, in the order of ``self.offsets``."""
        weights: list[torch.Tensor | None] = [None]
        for f in frac:
            g = 1.0 - f
            weights = [g if w is None else w * g for w in weights] + [f if w is None else w * f for w in weights]
        return [w.view(1, -1) for w in weights]

    def _blur_axis(self, grid: torch.Tensor, pre: int, size: int, post: int, matrix: torch.Tensor | None) -> torch.Tensor:
        x = grid.reshape(pre, size, post)
        if matrix is None:
            y = x * self.taps[0]
            for t in range(1, min(len(self.taps), size)):
                y[:, t:].add_(x[:, :-t], alpha=self.taps[t])
                y[:, :-t].add_(x[:, t:], alpha=self.taps[t])
            return y
        block = self.block
        if size <= 2 * block:
            return x.reshape(-1, size) @ matrix if post == 1 else torch.matmul(matrix, x)
        # Long axis: the Gaussian matrix is banded (entries beyond ``reach`` cells are < 1e-6 of the
        # peak), so each output block only needs the input slab within reach. The cost per cell is
        # then constant instead of growing with the axis length, and every product is still BLAS.
        reach = len(self.taps) - 1
        y = torch.empty_like(x)
        flat_x, flat_y = x.reshape(-1, size), y.reshape(-1, size)
        for start in range(0, size, block):
            stop = min(size, start + block)
            lo, hi = max(0, start - reach), min(size, stop + reach)
            if post == 1:
                flat_y[:, start:stop] = flat_x[:, lo:hi] @ matrix[lo:hi, start:stop]
            else:
                y[:, start:stop] = torch.matmul(matrix[start:stop, lo:hi], x[:, lo:hi])
        return y

    def _filter(self, values: torch.Tensor) -> torch.Tensor:
        # Each chunk of whole images is copied to a channel-major (C, images * pixels) block, so the
        # separable blur runs as matrix products on contiguous views. Working chunk by chunk from
        # the (B, C, N) input avoids batch-sized temporaries, whose fresh pages cost more than the
        # filtering itself for large batches.
        b, c, n = values.shape
        out_all = torch.empty_like(values)
        for b0 in range(0, b, self.chunk):
            b1 = min(b, b0 + self.chunk)
            cols = slice(b0 * n, b1 * n)
            for c0 in range(0, c, self.channel_group):
                c1 = min(c, c0 + self.channel_group)
                out = self._filter_chunk(values[b0:b1, c0:c1], cols)
                out_all[b0:b1, c0:c1] = out.view(c1 - c0, b1 - b0, n).transpose(0, 1)
        return out_all

    def _filter_chunk(self, values: torch.Tensor, cols: slice) -> torch.Tensor:
        """Filter (b, c, N) values of the images whose pixels are ``cols``; returns (c, b * N)."""
        b, c, n = values.shape
        src = values.transpose(0, 1).reshape(c, b * n)
        out = torch.zeros_like(src)
        buf = torch.empty_like(src)  # corner scratch
        base = self.base[cols]
        idx = torch.empty_like(base)
        grid = torch.zeros(c, b * self.per_image, dtype=values.dtype, device=values.device)
        corners = list(zip(self.offsets, self._corner_weights(self.frac[:, cols])))
        for off, wgt in corners:
            grid.index_add_(1, torch.add(base, off, out=idx), torch.mul(src, wgt, out=buf))
        shape = [c * b] + list(self.sizes)
        for d in reversed(range(len(self.sizes))):
            grid = self._blur_axis(grid, math.prod(shape[: d + 1]), shape[d + 1], math.prod(shape[d + 2:]), self.blurs[d])
        grid = grid.reshape(c, -1)
        for off, wgt in corners:
            out.addcmul_(torch.index_select(grid, 1, torch.add(base, off, out=idx), out=buf), wgt)
        return out


class GridTooLargeError(ValueError):
    """The bilateral grid would not fit the configured cell budget."""


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
