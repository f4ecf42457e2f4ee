"""Clicks as weak labels: points from a CSV or Slicer markups become discs on the prepared slices.

CSV (``--points``): columns ``case,class`` and either ``x,y,z`` (world mm, in the coordinate
system declared with ``--points-space RAS`` or ``LPS``) or ``i,j,k`` (voxel indices of the image
file, from 0). A point lies on the slice nearest to it along the slice axis and must lie inside
the image (within half a voxel of its border); a point outside is an input error.

Each point becomes a disc of ``--point-radius`` mm on its prepared slice (an ellipse in pixels
when the prepared pixels are not square), clipped to the image. The pixel under the point is
always annotated. Pixels already annotated by a label map keep their class; where the discs of
two classes overlap, the overlap stays unannotated. Two points of different classes on the same
pixel, or a point on a pixel painted with another class, contradict each other: an input error.
"""

from __future__ import annotations

import numpy as np

from data_prep.errors import InputError
from data_prep.markups import WorldPoint
from data_prep.resample import InplanePlan
from data_prep.tables import Table
from data_prep.user_classes import ClassVocabulary
from data_prep.weak_labels import UNANNOTATED

SPACES = ("RAS", "LPS")


def read_points_csv(path, vocab: ClassVocabulary, volumes: set[str], space: str | None) -> dict[str, list[WorldPoint]]:
    """Points per case from the CSV; world coordinates need ``space`` (RAS or LPS)."""
    table = Table(path, "points", ("case", "class"))
    world = all(c in table.columns for c in ("x", "y", "z"))
    voxel = all(c in table.columns for c in ("i", "j", "k"))
    if world == voxel:
        raise InputError(table.path, "points CSV needs columns x,y,z (world mm) or i,j,k (voxel indices), not "
                         + ("both" if world else "neither"))
    if world and space not in SPACES:
        raise InputError(table.path, "points CSV gives world coordinates x,y,z in an undeclared coordinate system; "
                         "say which with --points-space RAS or --points-space LPS")
    flip = np.array([-1.0, -1.0, 1.0]) if space == "LPS" else np.ones(3)
    found: dict[str, list[WorldPoint]] = {}
    for row, line in table.rows:
        case = table.case(row, line, volumes)
        cls = table.cls(row, line, vocab)
        if world:
            position = flip * np.array([table.number(row, line, c) for c in ("x", "y", "z")])
        else:
            position = np.array([table.number(row, line, c) for c in ("i", "j", "k")])
        found.setdefault(case, []).append(
            WorldPoint(cls, tuple(float(v) for v in position), f"line {line}", str(table.path), voxel=voxel))
    return found


def voxel_position(point: WorldPoint, affine: np.ndarray) -> np.ndarray:
    """Continuous voxel indices (i, j, k) of the point in the image."""
    if point.voxel:
        return np.asarray(point.position, dtype=np.float64)
    homogeneous = np.append(np.asarray(point.position, dtype=np.float64), 1.0)
    return (np.linalg.inv(np.asarray(affine, dtype=np.float64)) @ homogeneous)[:3]


def paint_points(weak: np.ndarray, points: list[WorldPoint], shape: tuple[int, int, int], affine: np.ndarray,
                 plan: InplanePlan, axes: tuple[int, int], slice_axis: int, spacing2d, radius_mm: float) -> int:
    """Paint every point's disc into ``weak`` (the prepared annotation volume, in place); returns the pixels painted."""
    centres: dict[tuple[int, int, int], WorldPoint] = {}
    discs: dict[tuple[int, int], np.ndarray] = {}  # (slice, class) -> disc union
    for point in points:
        index = voxel_position(point, affine)
        outside = [a for a in range(3) if not -0.5 <= index[a] < shape[a] - 0.5]
        if outside:
            shown = ", ".join(f"{v:.1f}" for v in index)
            raise InputError(point.path, f"{point.where}: lies outside the image (voxel ({shown}) of a {shape} grid)")
        k = int(np.floor(index[slice_axis] + 0.5))
        centre = [(index[axis] + 0.5) * plan.scaled[a] / plan.original[a] - 0.5 + plan.offset[a] for a, axis in enumerate(axes)]
        pixel = tuple(int(np.floor(c + 0.5)) for c in centre)
        rows = (np.arange(plan.size[0]) - centre[0])[:, None] * spacing2d[0]
        cols = (np.arange(plan.size[1]) - centre[1])[None, :] * spacing2d[1]
        disc = rows * rows + cols * cols <= radius_mm * radius_mm
        if all(0 <= p < n for p, n in zip(pixel, plan.size)):
            disc[pixel] = True
            key = (k, *pixel)
            plane = _plane(weak, slice_axis, k)
            if key in centres and centres[key].cls != point.cls:
                other = centres[key]
                raise InputError(point.path, f"{point.where}: two classes ({other.cls} and {point.cls}) on the same voxel "
                                 f"(also {other.where} of {other.path})")
            if plane[pixel] not in (UNANNOTATED, point.cls):
                raise InputError(point.path, f"{point.where}: two classes on the same voxel: class {point.cls} on a pixel "
                                 f"annotated {int(plane[pixel])} by the label map")
            centres[key] = point
        union = discs.setdefault((k, point.cls), np.zeros(plan.size, dtype=bool))
        union |= disc
    painted = 0
    for (k, cls), disc in discs.items():
        others = np.zeros_like(disc)
        for (k2, cls2), disc2 in discs.items():
            if k2 == k and cls2 != cls:
                others |= disc2
        plane = _plane(weak, slice_axis, k)
        target = disc & ~others & (plane == UNANNOTATED)
        plane[target] = cls
        painted += int(np.count_nonzero(target))
    for (k, row, col), point in centres.items():  # the clicked pixel itself, even inside another class's disc
        _plane(weak, slice_axis, k)[row, col] = point.cls
    return painted


def _plane(volume: np.ndarray, slice_axis: int, index: int) -> np.ndarray:
    """A writable view of slice ``index``."""
    where = [slice(None)] * 3
    where[slice_axis] = index
    return volume[tuple(where)]
