"""The bilateral-grid filter: splat onto a regular grid over position and intensity, separable blur, slice."""

from __future__ import annotations

import math

import torch

from wss_monai.losses.affinity.operator import AffinityOperator


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
