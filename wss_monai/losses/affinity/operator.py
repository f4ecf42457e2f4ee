"""The contract of every affinity filter: an operator W prepared for a batch of images, applied to maps.

:class:`AffinityOperator` is what the losses call: ``op(values)`` for ``W @ values`` and
``op.moments(values)`` for the per-class forms ``S_k^T W S_k`` and ``d^T S_k`` with a backward
pass that filters nothing. A filter method subclasses it and implements ``_filter``. The helpers
beside it (features, dtypes, autocast, image size checks) are shared by every filter and loss.
"""

from __future__ import annotations

import contextlib
import math
from typing import Sequence

import torch

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


PARTITION_TOLERANCE = 1e-5
"""Largest ``|sum_k S_k - 1|`` for which the degree is taken as the sum of the filtered channels
(float32 softmax sums to one within about 1e-7; the degree's error is at most this, relative)."""


class _AffinityMoments(torch.autograd.Function):
    """Per image and class ``assoc_k = S_k^T A S_k`` and ``volume_k = d^T S_k`` (d = A 1) from one filtering.

    A is symmetric, so ``d assoc_k / d S_k = 2 A S_k`` and ``d volume_k / d S_k = d``: both are
    results of the forward pass, which filters ``[S, 1]`` together (C + 1 channels, one splat and
    one slice), and the backward pass filters nothing. When the channels sum to one at every pixel
    (probabilities, within ``PARTITION_TOLERANCE``), ``1 = sum_k S_k`` and A is linear, so
    ``d = sum_k A S_k`` and only the C channels are filtered (a fifth less work for 4 classes).
    Kept for the backward: ``A S`` (B, C, H, W) and ``d`` (B, 1, H, W).
    """

    @staticmethod
    def forward(ctx, values: torch.Tensor, op: "AffinityOperator"):  # noqa: D401
        b, c, h, w = values.shape
        with torch.no_grad():
            if bool((values.sum(dim=1) - 1.0).abs().amax() <= PARTITION_TOLERANCE):
                filtered = op._apply(values)
                degree = filtered.sum(dim=1, keepdim=True)
            else:
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
