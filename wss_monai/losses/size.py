"""Size constraints on the soft region size (Kervadec et al., MedIA 2019, eq. 1-4, 5-7, sec. 4.4).

One place computes the soft size and gathers the constraints ``a <= V <= b`` for a batch: per
image (2D) or per volume (3D mode: sizes summed over the slices that share a ``volume`` id, also
when one batch mixes volumes), in pixels or in mm^2. :class:`SizePenalty` (the quadratic
penalty of eq. 3) and :class:`~wss_monai.losses.log_barrier.LogBarrierPenalty` both build on
:class:`SizeConstraintTerm`, so they read bounds, classes and volumes identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from wss_monai.losses.base import LossTerm, reduce
from wss_monai.losses.partial_ce import as_float

__all__ = ["SizeConstraints", "SizeConstraintTerm", "SizePenalty", "resolve_classes", "check_bounds", "bounds_from_tags"]


def resolve_classes(owner: str, classes: Sequence[int] | None, include_background: bool, num_classes: int) -> list[int]:
    """The class indices a term constrains: ``classes`` if given, else 1..C-1 (or 0..C-1 with background)."""
    if classes is None:
        return list(range(0 if include_background else 1, num_classes))
    out = [int(c) for c in classes]
    bad = [c for c in out if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"{owner}: classes {bad} out of range for probs with {num_classes} classes.")
    if len(set(out)) != len(out):
        raise ValueError(f"{owner}: classes must not repeat, got {out}.")
    return out


def check_bounds(owner: str, key: str, bounds: torch.Tensor, batch: int, num_classes: int, like: torch.Tensor) -> torch.Tensor:
    """Check a (B, C, 2) bounds tensor (lower, upper per class) and return it in ``like``'s dtype and device."""
    if not isinstance(bounds, torch.Tensor):
        bounds = torch.as_tensor(bounds)
    if tuple(bounds.shape) != (batch, num_classes, 2):
        raise ValueError(
            f"{owner}: batch key '{key}' must have shape (B, C, 2) = {(batch, num_classes, 2)} "
            f"(lower, upper per class), got {tuple(bounds.shape)}."
        )
    bounds = bounds.to(device=like.device, dtype=like.dtype)
    if bounds.numel():
        if bool(torch.isnan(bounds).any()):
            raise ValueError(f"{owner}: batch key '{key}' contains NaN.")
        bad = bounds[..., 0] > bounds[..., 1]
        if bool(bad.any()):
            b, c = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"{owner}: batch key '{key}' has lower > upper for sample {b}, class {c}: "
                f"({float(bounds[b, c, 0])}, {float(bounds[b, c, 1])})."
            )
    return bounds


def bounds_from_tags(tags: torch.Tensor, num_pixels: int) -> torch.Tensor:
    """Image-tag bounds of eq. 5: (1, |Omega|) where a class is present, (0, 0) where it is absent.

    ``tags`` (B, C) boolean or 0/1; returns float32 (B, C, 2) in pixels.
    """
    present = torch.as_tensor(tags).bool()
    lower = present.float()
    upper = present.float() * float(num_pixels)
    return torch.stack([lower, upper], dim=-1)


@dataclass
class SizeConstraints:
    """Constraints ``lower <= size <= upper`` gathered for one batch.

    ``size``, ``lower``, ``upper``: (G, K) for G groups (images, or volumes in 3D mode) and the K
    constrained ``classes``; sizes in pixels (in mm^2 mode: divided by the group's pixel area, so
    the numbers stay pixel-like and the papers' weights carry over). ``groups`` (G,): the volume
    ids in 3D mode, else 0..B-1. ``num_pixels``: H*W of one slice (the papers' normaliser).
    """

    size: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    classes: list[int]
    groups: torch.Tensor
    num_pixels: int


class SizeConstraintTerm(LossTerm):
    """Shared base of the size-constraint terms: soft size, classes, volumes, units, reduction.

    Soft size (MedIA 2019 eq. 2): ``V[b, c] = sum_p probs[b, c, p]``. With ``per_volume=True``
    (sec. 4.4) the sizes of the slices that share a ``volume`` id are summed,
    ``V[v, c] = sum_{b: volume[b] = v} V[b, c]``, and compared with the volume's bounds.

    **Per-volume bounds** are read from the ordinary ``bounds`` key: every slice of a volume
    carries that volume's bounds (e.g. 0.9 / 1.1 times the summed true size). All slices of one
    volume must carry identical bounds; a mismatch raises ``ValueError`` naming the volume.

    **Volume size or mean slice size**: ``volume_size="sum"`` (default, the reference code)
    compares the volume's summed size with its bounds; ``"mean"`` divides size and bounds by the
    number of the volume's slices in the batch, i.e. constrains the mean slice size. The quadratic
    penalty is then ``1/n^2`` of the summed one: summed over n slices, the per-pixel gradient of
    one volume is about n times that of a 2D batch of the same n slices (where the penalty is a
    mean over images), and n^2 times its value, so ``"mean"`` weighs a volume the way the 2D
    regime weighs its slices and the same weight carries over.

    **Units**: ``units="px"`` (default) reads bounds in pixels; ``units="mm2"`` reads bounds in
    mm^2 and needs the batch key ``spacing`` (B, 2) (row, column spacing in mm): the soft size is
    measured in mm^2 (pixel area times soft pixel count, summed over a volume's slices) and then
    size and bounds are divided by the group's (mean) pixel area, so the penalty keeps pixel
    units and the same weight works in both modes.

    Which classes: ``classes`` (default: every foreground class, 1..C-1; ``include_background``
    adds class 0). A class whose bounds are ``(0, inf)`` contributes nothing (its penalty is 0).

    Normalisation (the reference code's, so that lambda = 1e-2 carries over): each (group,
    class) value is divided by H*W of one slice (``normalize=True``; also in 3D mode, as in the
    reference) and ``reduction="mean"`` averages over groups and constrained classes;
    ``"sum"`` sums them; ``"none"`` returns the (G, K) values.
    """

    def __init__(
        self,
        classes: Sequence[int] | None = None,
        include_background: bool = False,
        per_volume: bool = False,
        units: str = "px",
        normalize: bool = True,
        bounds_key: str = "bounds",
        reduction: str = "mean",
        volume_size: str = "sum",
    ) -> None:
        super().__init__()
        if volume_size not in ("sum", "mean"):
            raise ValueError(f"volume_size must be 'sum' (the volume's size) or 'mean' (its mean slice size), got {volume_size!r}.")
        self.volume_size = volume_size
        if units not in ("px", "mm2"):
            raise ValueError(f"units must be 'px' (bounds in pixels) or 'mm2' (bounds in mm^2, needs 'spacing'), got {units!r}.")
        self.classes = None if classes is None else [int(c) for c in classes]
        self.include_background = bool(include_background)
        self.per_volume = bool(per_volume)
        self.units = units
        self.normalize = bool(normalize)
        self.bounds_key = bounds_key
        self.reduction = self._check_reduction(reduction)

    def constraints(self, probs: torch.Tensor, **batch) -> SizeConstraints:
        """Gather the (G, K) soft sizes and bounds of a batch (see the class docstring)."""
        owner = type(self).__name__
        probs = self._check_probs(probs)
        p = as_float(probs)
        b, c, h, w = p.shape
        cls = resolve_classes(owner, self.classes, self.include_background, c)
        bounds = check_bounds(owner, self.bounds_key, self._require(self.bounds_key, batch.get(self.bounds_key)), b, c, p)
        index = torch.tensor(cls, device=p.device, dtype=torch.long)
        size = p.sum(dim=(2, 3)).index_select(1, index)  # (B, K)
        lower = bounds[..., 0].index_select(1, index)
        upper = bounds[..., 1].index_select(1, index)
        area = None
        if self.units == "mm2":
            spacing = self._require("spacing", batch.get("spacing"))
            spacing = torch.as_tensor(spacing).to(device=p.device, dtype=p.dtype)
            if spacing.dim() != 2 or spacing.shape[0] != b or spacing.shape[1] < 2:
                raise ValueError(f"{owner}: batch key 'spacing' must have shape (B, 2) with B = {b}, got {tuple(spacing.shape)}.")
            area = spacing[:, 0] * spacing[:, 1]
            if b and not bool((area > 0).all()):
                raise ValueError(f"{owner}: batch key 'spacing' must be positive.")
        if not self.per_volume:
            groups = torch.arange(b, device=p.device)
            if area is not None:
                lower = lower / area[:, None]
                upper = upper / area[:, None]
            return SizeConstraints(size, lower, upper, cls, groups, h * w)
        volume = self._require("volume", batch.get("volume"))
        volume = torch.as_tensor(volume, device=p.device)
        if volume.dim() != 1 or volume.shape[0] != b:
            raise ValueError(f"{owner}: batch key 'volume' must have shape (B,) = ({b},), got {tuple(volume.shape)}.")
        if volume.is_floating_point() or volume.is_complex():
            raise ValueError(f"{owner}: batch key 'volume' must hold integer volume ids, got {volume.dtype}.")
        groups, inv = torch.unique(volume, sorted=True, return_inverse=True)
        g = groups.numel()
        # The first slice of each volume carries the volume's bounds; all others must agree.
        first = torch.full((g,), b, device=p.device, dtype=torch.long)
        first = first.scatter_reduce(0, inv, torch.arange(b, device=p.device), reduce="amin")
        lower_g, upper_g = lower.index_select(0, first), upper.index_select(0, first)
        mismatch = (lower != lower_g.index_select(0, inv)) | (upper != upper_g.index_select(0, inv))
        if bool(mismatch.any()):
            sl, k = (int(i) for i in mismatch.nonzero()[0])
            vid, ref = int(volume[sl]), int(first[inv[sl]])
            raise ValueError(
                f"{owner}(per_volume=True) reads a volume's bounds from its slices' '{self.bounds_key}': every slice of "
                f"volume {vid} must carry the same bounds, but slice {sl} has "
                f"({float(lower[sl, k])}, {float(upper[sl, k])}) and slice {ref} has "
                f"({float(lower[ref, k])}, {float(upper[ref, k])}) for class {cls[k]}."
            )
        if area is None:
            size_g = size.new_zeros(g, len(cls)).index_add(0, inv, size)
        else:
            count = area.new_zeros(g).index_add(0, inv, torch.ones_like(area))
            area_g = area.new_zeros(g).index_add(0, inv, area) / count
            size_g = size.new_zeros(g, len(cls)).index_add(0, inv, size * area[:, None]) / area_g[:, None]
            lower_g = lower_g / area_g[:, None]
            upper_g = upper_g / area_g[:, None]
        if self.volume_size == "mean":
            slices = size.new_zeros(g).index_add(0, inv, torch.ones_like(size[:, 0]))[:, None]
            size_g, lower_g, upper_g = size_g / slices, lower_g / slices, upper_g / slices
        return SizeConstraints(size_g, lower_g, upper_g, cls, groups, h * w)

    def _finish(self, values: torch.Tensor, constraints: SizeConstraints) -> torch.Tensor:
        """Divide (G, K) values by H*W (if ``normalize``) and apply the reduction."""
        if self.normalize:
            values = values / float(max(constraints.num_pixels, 1))
        return reduce(values, self.reduction)


class SizePenalty(SizeConstraintTerm):
    r"""Quadratic penalty on soft-size inequality constraints (Kervadec et al., MedIA 2019, eq. 3-4).

    .. math:: C(V) = \mathrm{relu}(V - b)^2 + \mathrm{relu}(a - V)^2, \qquad V = \sum_{p} S_p

    for every image (or volume, ``per_volume=True``, sec. 4.4) and constrained class, with
    ``(a, b)`` from the batch key ``bounds``. Inside the bounds the value and the gradient are
    0; below ``a`` the gradient ``dC/dV = -2 (a - V)`` is negative, so gradient descent grows
    the region; above ``b`` it is ``2 (V - b)`` and shrinks it (eq. 4).

    Default normalisation matches the reference code: divided by H*W and averaged over the
    batch (or volumes) and constrained classes, so the papers' weight lambda = 1e-2 carries
    over. Tag bounds (eq. 5), common bounds (eq. 6) and individual bounds (eq. 7) are only
    different ``bounds`` values.

    Shapes: ``probs`` (B, C, H, W); ``bounds`` (B, C, 2) lower and upper size per class, in
    pixels (or mm^2 with ``units="mm2"`` and ``spacing`` (B, 2)); ``volume`` (B,) int in 3D mode.
    Returns a 0-d tensor (``"mean"``/``"sum"``) or the (G, K) values (``"none"``).

    Args:
        classes: constrained classes (default: all foreground classes, 1..C-1).
        include_background: with ``classes=None``, also constrain class 0.
        per_volume: 3D mode: sum the soft size over slices with the same ``volume`` id; every
            slice of a volume carries the volume's bounds (checked, see
            :class:`SizeConstraintTerm`).
        units: ``"px"`` or ``"mm2"``.
        normalize: divide by H*W of one slice (the reference's normaliser).
        bounds_key: batch key of the bounds (default ``"bounds"``).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.
        volume_size: with ``per_volume``: ``"sum"`` constrains the volume's size (the
            reference), ``"mean"`` its mean slice size (see :class:`SizeConstraintTerm`).

    Example::

        >>> import torch
        >>> probs = torch.softmax(torch.randn(2, 2, 16, 16), dim=1)
        >>> bounds = torch.tensor([[[0, float("inf")], [10, 20]]] * 2, dtype=torch.float32)
        >>> SizePenalty()(probs, bounds=bounds).shape
        torch.Size([])
    """

    def forward(self, probs: torch.Tensor, **batch) -> torch.Tensor:
        sc = self.constraints(probs, **batch)
        penalty = F.relu(sc.size - sc.upper) ** 2 + F.relu(sc.lower - sc.size) ** 2
        return self._finish(penalty, sc)
