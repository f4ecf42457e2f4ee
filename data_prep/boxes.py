"""Boxes drawn around objects (``--boxes CSV``): background outside them, and the class present inside.

Columns ``case,class,i_min,i_max,j_min,j_max,k_min,k_max``: voxel indices of the image file, from
0, inclusive; a box on one slice has equal min and max along the slice axis, a 3D box spans
several slices. The box protocol: on every slice a box crosses, each object of every class is
boxed, so pixels outside all boxes of that slice are annotated background (0) and pixels inside
stay unannotated (255); the boxed class is present on that slice. Slices no box crosses are
left alone (absence is never guessed from a missing box).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data_prep.errors import InputError
from data_prep.tables import Table
from data_prep.user_classes import ClassVocabulary
from data_prep.weak_labels import UNANNOTATED

COLUMNS = ("case", "class", "i_min", "i_max", "j_min", "j_max", "k_min", "k_max")


@dataclass(frozen=True)
class Box:
    cls: int
    low: tuple[int, int, int]
    high: tuple[int, int, int]
    where: str
    path: str


def read_boxes(path, vocab: ClassVocabulary, volumes: set[str]) -> dict[str, list[Box]]:
    """Boxes per case; a box of background, or with min > max, is an input error."""
    table = Table(path, "boxes", COLUMNS)
    found: dict[str, list[Box]] = {}
    for row, line in table.rows:
        case = table.case(row, line, volumes)
        cls = table.cls(row, line, vocab)
        if cls == 0:
            raise table.error(line, "a box must enclose a target class, not background")
        bounds = [int(table.number(row, line, c, integer=True)) for c in COLUMNS[2:]]
        low, high = tuple(bounds[0::2]), tuple(bounds[1::2])
        if any(lo > hi for lo, hi in zip(low, high)):
            raise table.error(line, f"box min {low} exceeds max {high}")
        found.setdefault(case, []).append(Box(cls, low, high, f"line {line}", str(table.path)))
    return found


def box_layer(boxes: list[Box], shape: tuple[int, int, int], slice_axis: int) -> tuple[np.ndarray, dict[int, set[int]]]:
    """The background annotation of the boxes (raw grid) and, per slice, the classes boxed there."""
    layer = np.full(shape, UNANNOTATED, dtype=np.uint8)
    inside = np.zeros(shape, dtype=bool)
    boxed_slices = np.zeros(shape[slice_axis], dtype=bool)
    present: dict[int, set[int]] = {}
    for box in boxes:
        if any(box.low[a] < 0 or box.high[a] >= shape[a] for a in range(3)):
            raise InputError(box.path, f"{box.where}: box {box.low}..{box.high} lies outside the image (shape {shape})")
        inside[tuple(slice(lo, hi + 1) for lo, hi in zip(box.low, box.high))] = True
        boxed_slices[box.low[slice_axis] : box.high[slice_axis] + 1] = True
        for k in range(box.low[slice_axis], box.high[slice_axis] + 1):
            present.setdefault(k, set()).add(box.cls)
    on_boxed = boxed_slices.reshape([-1 if a == slice_axis else 1 for a in range(3)])
    layer[~inside & on_boxed] = 0
    return layer, present
