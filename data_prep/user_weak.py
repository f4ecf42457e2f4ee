"""The user's own weak annotations of one case, merged into one strategy on the prepared grid.

A case may have a label map (``--weak-labels``), Slicer markups (``--markups``), points and
boxes from CSV files (``--points``, ``--boxes``); all of them become one weak-label strategy
(``--weak-name``, default ``user``). On the raw grid the label map and the boxes' background are
merged (a voxel given two classes is an input error); the merged map is resampled to the
prepared grid by the thin-stroke rule of :mod:`data_prep.thin_resample`; the points' discs are
then painted on the prepared slices (:mod:`data_prep.points`).

What the annotations say about presence, per slice and class, is collected too: a class
painted on a slice, or boxed there, is present; ``--tags`` adds stated presence and absence and
is checked against the painting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.boxes import Box, box_layer
from data_prep.errors import InputError
from data_prep.io import Volume
from data_prep.markups import WorldPoint, read_markups
from data_prep.points import paint_points
from data_prep.resample import InplanePlan
from data_prep.size_knowledge import Estimate
from data_prep.tags import Tag, check_painted, slice_tags
from data_prep.thin_resample import resample_annotation, survival
from data_prep.user_classes import ClassVocabulary
from data_prep.user_labels import read_label_map
from data_prep.weak_labels import UNANNOTATED

DEFAULT_NAME = "user"
DEFAULT_POINT_RADIUS_MM = 3.0


@dataclass(frozen=True)
class UserOptions:
    """How the user's annotations are read (one set per run)."""

    vocab: ClassVocabulary
    name: str = DEFAULT_NAME
    label_pattern: str | None = None
    value_lookup: tuple[tuple[int, int], ...] | None = None  # file value -> class or 255; None = the default rule
    values_text: str | None = None
    priority: tuple[int, ...] = ()
    markups_pattern: str | None = None
    markups_class_from: str = "label"
    point_radius_mm: float = DEFAULT_POINT_RADIUS_MM
    points_csv: str | None = None
    points_space: str | None = None
    boxes_csv: str | None = None
    tags_csv: str | None = None
    estimates_csv: str | None = None
    every_case: bool = False

    @property
    def paints(self) -> bool:
        """True when some input paints pixels (a user weak-label strategy exists)."""
        return bool(self.label_pattern or self.markups_pattern or self.points_csv or self.boxes_csv)


@dataclass(frozen=True)
class CaseKnowledge:
    """What the user gave for one case (files resolved and CSV rows read by the parent process)."""

    label_map: Path | None = None
    markups: Path | None = None
    points: tuple[WorldPoint, ...] = ()
    boxes: tuple[Box, ...] = ()
    tags: tuple[Tag, ...] = ()
    estimates: tuple[Estimate, ...] = ()

    @property
    def paints(self) -> bool:
        return bool(self.label_map or self.markups or self.points or self.boxes)


@dataclass
class CaseAnnotation:
    """One case's user annotation on the prepared grid, and what it says."""

    weak: np.ndarray | None  # prepared volume (classes, 255) or None when nothing is painted
    painted: list[set[int]]  # per slice: classes painted (fg only) or boxed there
    known: list[list[int | None]]  # per slice and class: 1 present, 0 absent, None unknown
    stats: dict = field(default_factory=dict)


def annotate_case(knowledge: CaseKnowledge, options: UserOptions, image: Volume, n_classes: int, plan: InplanePlan,
                  axes: tuple[int, int], slice_axis: int, spacing2d, volume: str,
                  mask_classes: np.ndarray | None = None) -> CaseAnnotation:
    """Read, check, merge and resample one case's annotations; tags are checked against the painting."""
    shape = image.array.shape
    n_slices = shape[slice_axis]
    raw = None
    stats: dict = {}
    if knowledge.label_map is not None:
        lookup = None if options.value_lookup is None else dict(options.value_lookup)
        raw = read_label_map(knowledge.label_map, image, lookup, options.vocab)
    boxed: dict[int, set[int]] = {}
    if knowledge.boxes:
        layer, boxed = box_layer(list(knowledge.boxes), shape, slice_axis)
        raw = layer if raw is None else _merge(raw, layer, knowledge.boxes[0].path)
    points = list(knowledge.points)
    if knowledge.markups is not None:
        points += read_markups(knowledge.markups, options.vocab, options.markups_class_from)
    weak = None
    if raw is not None or points:
        if raw is None:
            raw = np.full(shape, UNANNOTATED, dtype=np.uint8)
        weak, conflicts = resample_annotation(raw, plan, axes, options.priority)
        stats = {"classes": survival(raw, weak, plan, axes, slice_axis, n_classes),
                 "conflict_pixels": int(np.count_nonzero(conflicts)), "points": len(points), "point_pixels": 0}
        if points:
            stats["point_pixels"] = paint_points(weak, points, shape, image.affine, plan, axes, slice_axis, spacing2d,
                                                 options.point_radius_mm)
    if mask_classes is not None and not knowledge.tags:
        # A full mask says everything about presence; only a tags file needs checking against it.
        return CaseAnnotation(weak=weak, painted=[], known=[], stats=stats)
    painted = [set() for _ in range(n_slices)]
    for source in (weak, mask_classes):
        if source is not None:
            for k, classes in enumerate(classes_per_slice(source, slice_axis, n_classes)):
                painted[k] |= classes
    for k, classes in boxed.items():
        painted[k] |= classes
    check_painted(list(knowledge.tags), painted, volume)
    known = slice_tags(list(knowledge.tags), n_slices, n_classes)
    for k in range(n_slices):
        for cls in painted[k]:
            known[k][cls - 1] = 1
    return CaseAnnotation(weak=weak, painted=painted, known=known, stats=stats)


def classes_per_slice(volume: np.ndarray, slice_axis: int, n_classes: int) -> list[set[int]]:
    """The target classes (1..K) present on each slice of ``volume``."""
    inplane = tuple(a for a in range(3) if a != slice_axis)
    present = [np.flatnonzero((volume == cls).any(axis=inplane)) for cls in range(1, n_classes + 1)]
    found = [set() for _ in range(volume.shape[slice_axis])]
    for cls, slices in enumerate(present, start=1):
        for k in slices:
            found[k].add(cls)
    return found


def _merge(first: np.ndarray, second: np.ndarray, path: str) -> np.ndarray:
    """Union of two annotations of one grid; a voxel with two different classes is an input error."""
    clash = (first != UNANNOTATED) & (second != UNANNOTATED) & (first != second)
    if clash.any():
        where = tuple(int(v) for v in np.argwhere(clash)[0])
        raise InputError(path, f"two classes on the same voxel {where}: {int(first[where])} in the label map, "
                         f"{int(second[where])} from the boxes (background outside every box of the slice)")
    return np.where(first != UNANNOTATED, first, second)

