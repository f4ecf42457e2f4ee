"""Cut a 3D volume into 2D slices along one axis, and put slices back together.

A slice keeps the two other axes in their file order, and its affine places it where it lies
in the volume, so a 2D slice file opens in 3D Slicer on top of its volume.

Per-dataset default slice axes (file index order i, j, k): ACDC 2 (the short-axis stack is the
last axis), PROMISE12 2 (z, the transversal slices), vertebral body 0 (sagittal, 39 slices).
"""

from __future__ import annotations

import numpy as np

from data_prep.resample import InplanePlan, invert_plan


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
