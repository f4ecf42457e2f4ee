"""In-plane resampling of a 3D volume to the network's grid, and back.

Two modes:

- ``stretch`` (the papers' plain resize, the default): each in-plane axis is resampled to the
  target size independently, so a 216 x 256 slice becomes 256 x 256 with anisotropic pixels.
- ``pad-crop`` (aspect preserving): both in-plane axes are resampled to one common spacing
  (by default the one at which the larger field of view just fits), then centred and zero-padded
  or cropped to the target size.

Coordinates follow pixel centres (output pixel ``o`` of ``m`` samples source position
``(o + 0.5) * n / m - 0.5``), the convention of ITK and of ``align_corners=False``, so a forward
and an inverse nearest-neighbour resampling of a label map round-trip without a half-pixel shift.
Labels use nearest neighbour (never linear, which erodes them), images linear interpolation.
The slice axis is never touched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MODES = ("stretch", "pad-crop")


@dataclass(frozen=True)
class InplanePlan:
    """How the two in-plane axes map to the target grid.

    ``original``: in-plane shape of the raw volume; ``scaled``: shape after interpolation;
    ``size``: final shape; ``offset``: where the scaled grid starts inside the final grid on each
    axis (positive = zero padding before it, negative = cropped).
    """

    original: tuple[int, int]
    scaled: tuple[int, int]
    size: tuple[int, int]
    offset: tuple[int, int]
    mode: str = "stretch"

    def to_dict(self) -> dict:
        """JSON-friendly form (lists), as stored per volume in dataset.json."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "InplanePlan":
        return cls(
            original=tuple(int(v) for v in data["original"]),
            scaled=tuple(int(v) for v in data["scaled"]),
            size=tuple(int(v) for v in data["size"]),
            offset=tuple(int(v) for v in data["offset"]),
            mode=str(data.get("mode", "stretch")),
        )


def plan_inplane(
    shape: tuple[int, int],
    spacing: tuple[float, float],
    size: tuple[int, int],
    mode: str = "stretch",
    target_spacing: float | None = None,
) -> InplanePlan:
    """Plan the in-plane resampling of a slice of ``shape`` pixels of ``spacing`` mm to ``size``.

    In ``pad-crop`` mode ``target_spacing`` (mm) defaults to the smallest spacing at which the
    whole field of view fits in ``size`` (nothing is cropped); pass a fixed value to give every
    volume the same pixel size (then large fields of view are centre-cropped).
    """
    shape = (int(shape[0]), int(shape[1]))
    size = (int(size[0]), int(size[1]))
    if mode == "stretch":
        return InplanePlan(original=shape, scaled=size, size=size, offset=(0, 0), mode=mode)
    if mode != "pad-crop":
        raise ValueError(f"unknown resize mode {mode!r}; expected one of {MODES}")
    extent = (shape[0] * float(spacing[0]), shape[1] * float(spacing[1]))
    if target_spacing is None:
        target_spacing = max(extent[0] / size[0], extent[1] / size[1])
    scaled = tuple(max(1, int(round(extent[a] / target_spacing))) for a in range(2))
    offset = tuple((size[a] - scaled[a]) // 2 for a in range(2))
    return InplanePlan(original=shape, scaled=scaled, size=size, offset=offset, mode=mode)


def resample_axis(array: np.ndarray, axis: int, n_out: int, order: int) -> np.ndarray:
    """Resample ``array`` along ``axis`` to ``n_out`` samples (order 0 nearest, 1 linear)."""
    n_in = array.shape[axis]
    if n_in == n_out:
        return array
    centres = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out)
    if order == 0:
        index = np.minimum(np.floor(centres).astype(np.intp), n_in - 1)
        return np.take(array, index, axis=axis)
    if order != 1:
        raise ValueError(f"order must be 0 (nearest) or 1 (linear), got {order}")
    position = np.clip(centres - 0.5, 0, n_in - 1)
    lower = np.floor(position).astype(np.intp)
    upper = np.minimum(lower + 1, n_in - 1)
    weight_shape = [1] * array.ndim
    weight_shape[axis] = n_out
    weight = (position - lower).astype(np.float32).reshape(weight_shape)
    low_values = np.take(array, lower, axis=axis).astype(np.float32, copy=False)
    high_values = np.take(array, upper, axis=axis).astype(np.float32, copy=False)
    return low_values + (high_values - low_values) * weight


def place_axis(array: np.ndarray, axis: int, offset: int, n_out: int, fill: float = 0) -> np.ndarray:
    """Put ``array`` at ``offset`` on ``axis`` of a length-``n_out`` array (pad with ``fill`` / crop).

    ``place_axis(place_axis(x, a, o, n), a, -o, len)`` gives back ``x`` wherever it was not cropped.
    """
    n_in = array.shape[axis]
    if offset == 0 and n_in == n_out:
        return array
    out_shape = list(array.shape)
    out_shape[axis] = n_out
    out = np.full(out_shape, fill, dtype=array.dtype)
    src_start, dst_start = max(0, -offset), max(0, offset)
    length = min(n_in - src_start, n_out - dst_start)
    if length > 0:
        src = [slice(None)] * array.ndim
        dst = [slice(None)] * array.ndim
        src[axis] = slice(src_start, src_start + length)
        dst[axis] = slice(dst_start, dst_start + length)
        out[tuple(dst)] = array[tuple(src)]
    return out


def apply_plan(array: np.ndarray, plan: InplanePlan, axes: tuple[int, int], order: int) -> np.ndarray:
    """Resample the in-plane ``axes`` of ``array`` to ``plan.size`` (pads with 0)."""
    for a, axis in enumerate(axes):
        array = resample_axis(array, axis, plan.scaled[a], order)
        array = place_axis(array, axis, plan.offset[a], plan.size[a])
    return np.ascontiguousarray(array)


def invert_plan(array: np.ndarray, plan: InplanePlan, axes: tuple[int, int], order: int = 0) -> np.ndarray:
    """Map an array on the target grid back to the original in-plane grid (inverse of :func:`apply_plan`).

    Regions that were cropped away come back as 0 (background).
    """
    for a, axis in enumerate(axes):
        array = place_axis(array, axis, -plan.offset[a], plan.scaled[a])
        array = resample_axis(array, axis, plan.original[a], order)
    return np.ascontiguousarray(array)


def resampled_spacing(spacing: tuple[float, float, float], plan: InplanePlan, axes: tuple[int, int]) -> tuple[float, ...]:
    """Voxel spacing after :func:`apply_plan` (the slice axis keeps its spacing)."""
    out = [float(s) for s in spacing]
    for a, axis in enumerate(axes):
        out[axis] = float(spacing[axis]) * plan.original[a] / plan.scaled[a]
    return tuple(out)


def resampled_affine(affine: np.ndarray, plan: InplanePlan, axes: tuple[int, int]) -> np.ndarray:
    """Affine of the resampled grid, so the output overlays the raw volume in a viewer.

    New index ``o`` on an in-plane axis sits at old index ``(o - offset + 0.5) * n / scaled - 0.5``.
    """
    to_old = np.eye(4)
    for a, axis in enumerate(axes):
        ratio = plan.original[a] / plan.scaled[a]
        to_old[axis, axis] = ratio
        to_old[axis, 3] = (0.5 - plan.offset[a]) * ratio - 0.5
    return np.asarray(affine, dtype=np.float64) @ to_old
