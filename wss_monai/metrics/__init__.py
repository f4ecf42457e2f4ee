"""Evaluation of integer label maps: per-slice 2D Dice, per-volume 3D Dice, HD95 in mm.

All functions take integer label maps (class index per pixel), as NumPy arrays or torch
tensors on any device, and return NumPy float64 arrays whose last axis is the class index
(column ``c`` is class ``c``, background included, so ``scores[:, 1]`` is class 1).

Empty masks are the delicate part, and every function makes its convention explicit:

- ``dice_2d(..., empty="one")``: a class absent from both prediction and target of a slice
  scores 1. This is the convention of the authors' reference code; it inflates averages
  because every correctly empty slice counts as a perfect one.
- ``empty="nan"``: that 0/0 case is NaN (undefined) and is left out of NaN-aware means. A
  false positive on a slice without the class still scores 0 and still counts.
- ``empty="skip"``: every slice whose *target* lacks the class is NaN, whatever was predicted
  (MONAI ``DiceMetric(ignore_empty=True)``): Dice over the slices that contain the class only,
  so false positives on other slices are not seen.
- ``hd95_mm``: NaN when prediction or target of a class is empty (no surface to measure), or,
  with ``missing="diagonal"``, the physical diagonal of the volume as a worst-case penalty when
  exactly one of them is empty.

:class:`VolumeScores` accumulates batches of slice predictions (slices of a volume in any
order, over several batches), stacks them per volume and summarises everything in one flat
dict of floats, ready to log to MLflow.
"""

from __future__ import annotations

from wss_monai.metrics.dice import confusion_counts, dice_2d, dice_3d, dice_from_counts
from wss_monai.metrics.distance import hd95_mm
from wss_monai.metrics.labels import EMPTY_CONVENTIONS
from wss_monai.metrics.volume_scores import VolumeScores

__all__ = [
    "EMPTY_CONVENTIONS",
    "confusion_counts",
    "dice_from_counts",
    "dice_2d",
    "dice_3d",
    "hd95_mm",
    "VolumeScores",
]
