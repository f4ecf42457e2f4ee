"""Resample annotations (class index or 255 per voxel) to the prepared grid without losing thin strokes.

Nearest-neighbour resampling, right for full masks, drops a 1-pixel scribble whenever the grid
shrinks (only one raw pixel in two or three is looked at). The rule for annotations:

    A prepared pixel takes the annotated class of the raw pixels that cover it: the raw pixels
    whose centres fall inside it, and the raw pixel under its own centre (nearest neighbour).
    When those pixels hold several classes, the class earliest in the priority order wins
    (``--weak-priority``; default: the target classes in ``--targets`` order, background last)
    and the pixel is counted as a conflict.

Every annotated raw pixel lies under exactly one prepared pixel (the one holding its centre), so
a stroke can only vanish by losing a conflict or by being cropped away (``--resize pad-crop``),
and :func:`survival` counts both. When the grid grows, the rule is plain nearest neighbour.
The max over a rectangle is the max over rows of the max over columns, so the rule is applied
one axis at a time, on priority ranks (0 = unannotated).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from data_prep.resample import InplanePlan, place_axis
from data_prep.weak_labels import UNANNOTATED


def covering_ranges(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """For each output pixel the first and last input pixel covering it (inclusive)."""
    out = np.arange(n_out, dtype=np.float64)
    scale = n_in / n_out
    nearest = np.minimum(np.floor((out + 0.5) * scale).astype(np.intp), n_in - 1)
    first = np.ceil(out * scale - 0.5).astype(np.intp)  # input centres i + 0.5 in [o, o + 1) * scale
    last = np.ceil((out + 1) * scale - 0.5).astype(np.intp) - 1
    first = np.clip(np.minimum(first, nearest), 0, n_in - 1)
    last = np.clip(np.maximum(last, nearest), 0, n_in - 1)
    return first, last


def max_cover_axis(array: np.ndarray, axis: int, n_out: int, fill: int) -> np.ndarray:
    """The max of ``array`` over the input pixels covering each output pixel along ``axis``.

    ``fill`` is the value that loses every comparison (0 for ranks, a large value for the minimum
    taken through negation).
    """
    n_in = array.shape[axis]
    if n_in == n_out:
        return array
    first, last = covering_ranges(n_in, n_out)
    result = np.take(array, first, axis=axis)
    for step in range(1, int((last - first).max()) + 1):
        index = np.minimum(first + step, last)
        result = np.maximum(result, np.take(array, index, axis=axis))
    return result


def priority_ranks(priority: tuple[int, ...]) -> np.ndarray:
    """Lookup table class/255 -> rank (highest for the first class of ``priority``, 0 for 255)."""
    table = np.zeros(256, dtype=np.uint8)
    for position, cls in enumerate(priority):
        table[cls] = len(priority) - position
    return table


def resample_annotation(weak: np.ndarray, plan: InplanePlan, axes: tuple[int, int],
                        priority: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``weak`` (uint8 classes, 255 unannotated) on the prepared grid, and the mask of conflict pixels."""
    table = priority_ranks(priority)
    ranks = table[weak]
    top = ranks
    # Lowest non-zero rank, as a max of (big - rank) with unannotated pixels at 0.
    big = np.uint8(len(priority) + 1)
    low = np.where(ranks > 0, big - ranks, 0).astype(np.uint8)
    for a, axis in enumerate(axes):
        top = place_axis(max_cover_axis(top, axis, plan.scaled[a], 0), axis, plan.offset[a], plan.size[a], fill=0)
        low = place_axis(max_cover_axis(low, axis, plan.scaled[a], 0), axis, plan.offset[a], plan.size[a], fill=0)
    conflict = (top > 0) & (low > 0) & (big - low != top)
    decode = np.full(len(priority) + 2, UNANNOTATED, dtype=np.uint8)
    for position, cls in enumerate(priority):
        decode[len(priority) - position] = cls
    return np.ascontiguousarray(decode[top]), np.ascontiguousarray(conflict)


def centre_index(n_in: int, n_out: int, offset: int) -> np.ndarray:
    """The output pixel holding each input pixel's centre (may fall outside ``[0, size)`` when cropped)."""
    return np.floor((np.arange(n_in) + 0.5) * n_out / n_in).astype(np.intp) + offset


def survival(raw: np.ndarray, prepared: np.ndarray, plan: InplanePlan, axes: tuple[int, int], slice_axis: int,
             n_classes: int) -> dict[int, dict[str, int]]:
    """Per class (0 = background): annotated raw pixels and strokes, and how many kept their class.

    A stroke is a connected group of one class's pixels on one slice (8-connected); it survives
    when at least one of its pixels lies under a prepared pixel of its class.
    """
    structure = np.zeros((3, 3, 3), dtype=bool)
    plane = [slice(None)] * 3
    plane[slice_axis] = 1
    structure[tuple(plane)] = True  # 8-connected within a slice, never across slices
    stats = {}
    window = _window(raw != UNANNOTATED)  # strokes are sparse: look only at their bounding box
    if window is not None:
        landed, in_view = _landing(raw.shape, prepared, plan, axes, slice_axis, window)
    for cls in range(n_classes + 1):
        stats[cls] = {"pixels": 0, "pixels_kept": 0, "strokes": 0, "strokes_kept": 0}
        if window is None:
            continue
        mask = raw[window] == cls
        if not mask.any():
            continue
        kept_mask = mask & in_view & (landed == cls)
        strokes, count = ndimage.label(mask, structure=structure)
        stats[cls] = {"pixels": int(np.count_nonzero(mask)), "pixels_kept": int(np.count_nonzero(kept_mask)),
                      "strokes": int(count), "strokes_kept": len(np.unique(strokes[kept_mask]))}
    return stats


def _landing(shape, prepared, plan, axes, slice_axis, window):
    """For each raw voxel of ``window``: the prepared value where its centre lands, and whether it lands inside."""
    index = [None, None, None]
    index[slice_axis] = np.arange(shape[slice_axis])
    for a, axis in enumerate(axes):
        index[axis] = centre_index(shape[axis], plan.scaled[a], plan.offset[a])
    index = [ix[window[ax]] for ax, ix in enumerate(index)]
    inside = [np.clip(ix, 0, prepared.shape[ax] - 1) for ax, ix in enumerate(index)]
    landed = prepared[np.ix_(*inside)]
    in_view = np.ones(landed.shape, dtype=bool)
    for ax, ix in enumerate(index):
        shape_ax = [1, 1, 1]
        shape_ax[ax] = -1
        in_view &= ((ix >= 0) & (ix < prepared.shape[ax])).reshape(shape_ax)
    return landed, in_view


def _window(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of ``mask`` (None when empty)."""
    found = ndimage.find_objects(mask.astype(np.uint8))
    return found[0] if found else None
