"""Size bounds per slice and class (MedIA 2019 eqs. 5-7, MIDL 2018), computed once at preparation.

All sizes are pixel counts on the resampled slice (the grid the network sees). Rules, each a
``(lower, upper)`` pair per target class, and ``(0, 0)`` where the class is absent:

- ``tags``: ``(1, |Omega|)`` when present (eq. 5).
- ``upper``: ``(1, b)`` when present, with ``b`` the common upper bound: the MIDL "tags + upper
  bound" setting (its lower bound is the tag's presence, not a size).
- ``common``: from one reference patient's full masks, ``(0.9 * min, 1.1 * max)`` of its sizes
  over its slices containing the class (eq. 6), or chosen percentiles instead of min and max, or
  hand-typed values (the papers' ACDC ``(60, 2000)``).
- ``individual``: ``(0.9 * size, 1.1 * size)`` of the slice itself (eq. 7).
- ``volume3d``: ``(0.9 * V, 1.1 * V)`` with ``V`` the class's size summed over the whole volume
  (sec. 4.4), the same for every slice of the volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RULES = ("tags", "upper", "common", "individual", "volume3d")
PAPER_MARGINS = (0.9, 1.1)


@dataclass(frozen=True)
class BoundOptions:
    """How the common and individual bounds are derived (defaults: the papers')."""

    common_margins: tuple[float, float] = PAPER_MARGINS
    individual_margins: tuple[float, float] = PAPER_MARGINS
    common_percentiles: tuple[float, float] | None = None


def class_sizes(label: np.ndarray, n_classes: int) -> list[int]:
    """Pixel count of each class 1..n_classes in ``label``."""
    counts = np.bincount(label.ravel(), minlength=n_classes + 1)
    return [int(c) for c in counts[1 : n_classes + 1]]


def common_range(reference_sizes: list[int], options: BoundOptions = BoundOptions()) -> tuple[float, float]:
    """``(margin_lo * min, margin_hi * max)`` of the positive sizes (or of the chosen percentiles).

    Raises ValueError when no reference slice contains the class.
    """
    positive = np.asarray([s for s in reference_sizes if s > 0], dtype=np.float64)
    if positive.size == 0:
        raise ValueError("the reference has no slice containing the class")
    if options.common_percentiles is None:
        low, high = float(positive.min()), float(positive.max())
    else:
        low, high = (float(v) for v in np.percentile(positive, options.common_percentiles))
    return options.common_margins[0] * low, options.common_margins[1] * high


def scaled_bounds(size: int, margins: tuple[float, float]) -> list[float]:
    """``[margins[0] * size, margins[1] * size]``, or ``[0, 0]`` for an absent class."""
    if size <= 0:
        return [0, 0]
    return [margins[0] * size, margins[1] * size]


def slice_bounds(
    sizes: list[int],
    n_pixels: int,
    common: list[tuple[float, float]],
    volume_sizes: list[int],
    options: BoundOptions = BoundOptions(),
) -> dict[str, list[list[float]]]:
    """Every rule's ``[lower, upper]`` per class (list index = class - 1) for one slice."""
    rules: dict[str, list[list[float]]] = {rule: [] for rule in RULES}
    for cls, size in enumerate(sizes):
        present = size > 0
        low_common, high_common = common[cls]
        rules["tags"].append([1, int(n_pixels)] if present else [0, 0])
        rules["upper"].append([1, high_common] if present else [0, 0])
        rules["common"].append([low_common, high_common] if present else [0, 0])
        rules["individual"].append(scaled_bounds(size, options.individual_margins))
        rules["volume3d"].append(scaled_bounds(volume_sizes[cls], options.individual_margins))
    return rules


def known_bounds(
    known: list[int | None],
    n_pixels: int,
    common: list[tuple[float, float]] | None,
    estimates: list[list[float] | None] | None,
    volume_estimates: list[list[float] | None] | None,
    volume_pixels: int | None = None,
) -> tuple[dict[str, list[list[float]]], dict[str, set[str]]]:
    """The rules that can be derived for a slice without a full mask, and where each came from.

    ``known`` per class: 1 present, 0 absent (stated by a tag or an estimate of 0), None unknown.
    A rule is left out when nothing gives it for any class; for a class the rule knows nothing
    about, the pair is the vacuous ``[0, |Omega|]`` (never ``[0, 0]``, which means absent):

    - ``tags``: present ``(1, |Omega|)``, absent ``(0, 0)``, unknown vacuous; needs one known class.
    - ``upper`` / ``common``: present ``(1, b)`` / ``(a, b)``, absent ``(0, 0)``, unknown ``(0, b)``
      (the size is 0 or within the range); need common bounds (reference patients or typed).
    - ``individual`` / ``volume3d``: from the size estimates of the slice / of the volume.
    """
    rules: dict[str, list[list[float]]] = {}
    found: dict[str, set[str]] = {}
    vacuous = [0, int(n_pixels)]
    if any(k is not None for k in known):
        rules["tags"] = [vacuous if k is None else ([1, int(n_pixels)] if k else [0, 0]) for k in known]
    if common is not None:
        rules["upper"], rules["common"] = [], []
        for k, (low, high) in zip(known, common):
            rules["upper"].append([0, high] if k is None else ([1, high] if k else [0, 0]))
            rules["common"].append([0, high] if k is None else ([low, high] if k else [0, 0]))
    whole = [0, int(volume_pixels if volume_pixels is not None else n_pixels)]
    for rule, values, nothing in (("individual", estimates, vacuous), ("volume3d", volume_estimates, whole)):
        if values is not None:
            rules[rule] = [nothing if v is None else list(v) for v in values]
            found[rule] = {"estimated"}
    return {rule: rules[rule] for rule in RULES if rule in rules}, found
