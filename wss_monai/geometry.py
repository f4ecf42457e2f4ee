"""The geometry shared by dataset preparation and inference: slicing, in-plane plan and inverse, intensities.

``data_prep`` uses it to turn a raw 3D volume into the prepared 2D slices; inference on a raw scan
(:mod:`wss_monai.inference`) applies exactly the same steps with the plan saved with the model,
then maps the prediction back with :func:`invert_plan` / :func:`restore_volume`. One
implementation, so a model never sees slices prepared differently from its training data.

Slicing: a 3D volume is cut into 2D slices along one axis; a slice keeps the two other axes in
their file order, and its affine places it where it lies in the volume (a 2D slice file opens in
3D Slicer on top of its volume). Per-dataset default slice axes (file index order i, j, k): ACDC 2
(the short-axis stack is the last axis), PROMISE12 2 (z), vertebral body 0 (sagittal).

In-plane resampling, two modes:

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

Intensities: MR intensities have no absolute scale and PROMISE12's centres differ wildly, so each
volume is clipped to two of its own percentiles and mapped to [0, 1]: a few hot voxels
(endorectal coil, flow artefacts) no longer squash the contrast of the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "MODES",
    "DEFAULT_PERCENTILES",
    "FLOAT32_SAFE",
    "InplanePlan",
    "plan_inplane",
    "resample_axis",
    "place_axis",
    "apply_plan",
    "invert_plan",
    "resampled_spacing",
    "resampled_affine",
    "inplane_axes",
    "take_slice",
    "slice_affine",
    "stack_slices",
    "restore_volume",
    "normalise_intensity",
]

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


# ----------------------------------------------------------------------------------------------
# slicing


def inplane_axes(slice_axis: int) -> tuple[int, int]:
    """The two axes of a slice, in file order."""
    if slice_axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, got {slice_axis}")
    return tuple(a for a in range(3) if a != slice_axis)  # type: ignore[return-value]


def take_slice(volume: np.ndarray, slice_axis: int, index: int) -> np.ndarray:
    """Slice ``index`` of ``volume`` along ``slice_axis`` as a contiguous 2D array."""
    return np.ascontiguousarray(np.take(volume, index, axis=slice_axis))


def slice_affine(volume_affine: np.ndarray, slice_axis: int, index: int) -> np.ndarray:
    """Affine of slice ``index``: its two columns are the volume's in-plane columns, its origin the slice's position."""
    first, second = inplane_axes(slice_axis)
    to_volume = np.zeros((4, 4))
    to_volume[first, 0] = 1.0
    to_volume[second, 1] = 1.0
    to_volume[slice_axis, 2] = 1.0
    to_volume[slice_axis, 3] = float(index)
    to_volume[3, 3] = 1.0
    return np.asarray(volume_affine, dtype=np.float64) @ to_volume


def stack_slices(slices: list[np.ndarray], slice_axis: int) -> np.ndarray:
    """Inverse of :func:`take_slice` over all indices: a 3D array with the slices along ``slice_axis``."""
    if not slices:
        raise ValueError("no slices to stack")
    return np.stack([np.asarray(s) for s in slices], axis=slice_axis)


def restore_volume(slices: list[np.ndarray], volume_info: dict, order: int = 0) -> np.ndarray:
    """Stack 2D slices (predictions or labels, in slice order) and map them to the raw volume's grid.

    ``volume_info`` is the volume's entry in dataset.json's ``"volumes"`` list (it holds
    ``"slice_axis"`` and the in-plane ``"plan"``); ``order`` 0 (nearest) for label maps, 1 for
    probabilities. The result has the raw volume's shape, ready for a 3D Dice against its labels.
    """
    slice_axis = int(volume_info["slice_axis"])
    plan = InplanePlan.from_dict(volume_info["plan"])
    stacked = stack_slices(slices, slice_axis)
    return invert_plan(stacked, plan, inplane_axes(slice_axis), order=order)


# ----------------------------------------------------------------------------------------------
# intensities

#: Lower and upper percentiles (in %) used by default.
DEFAULT_PERCENTILES = (0.5, 99.5)


#: Below this magnitude the difference of any two values (``high - low``, ``value - low``, numpy's
#: percentile interpolation) is a finite float32, so float32 arithmetic is exact enough.
FLOAT32_SAFE = float(np.finfo(np.float32).max) / 2


def normalise_intensity(array: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """Clip ``array`` to its ``percentiles`` and rescale linearly to [0, 1] (float32).

    A constant volume maps to all zeros rather than dividing by zero. The rule does not depend on
    the scale of the intensities, so an image whose values come near float32's largest (about
    3.4e38, where ``high - low`` overflows to infinity and every voxel would become 0) is computed
    in float64 and gives what the same image scaled down gives; every other image keeps float32
    arithmetic (prepared files stay byte-identical to earlier versions).

    >>> normalise_intensity(np.array([0.0, 5.0, 10.0]), (0, 100)).tolist()
    [0.0, 0.5, 1.0]
    >>> normalise_intensity(np.array([-3e38, 0.0, 3e38], dtype=np.float32), (0, 100)).tolist()
    [0.0, 0.5, 1.0]
    """
    low_pct, high_pct = percentiles
    if not 0 <= low_pct < high_pct <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    values = np.asarray(array)
    wide = values.size > 0 and max(float(values.max()), -float(values.min())) >= FLOAT32_SAFE
    if wide:
        values64 = values.astype(np.float64)
        low, high = np.percentile(values64, [low_pct, high_pct])
        if not high > low:
            return np.zeros(values.shape, dtype=np.float32)
        return ((np.clip(values64, low, high) - low) / (high - low)).astype(np.float32)
    values = values.astype(np.float32, copy=False)
    low, high = np.percentile(values, [low_pct, high_pct])
    if not high > low:
        return np.zeros_like(values, dtype=np.float32)
    scaled = (np.clip(values, low, high) - np.float32(low)) / np.float32(high - low)
    return scaled.astype(np.float32, copy=False)
