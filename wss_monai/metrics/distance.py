"""The 95th-percentile Hausdorff distance in millimetres, per class, with the missing-surface conventions."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from wss_monai.metrics.labels import MISSING_HD_CONVENTIONS, _check_pair, _to_numpy_labels


def _check_spacing(spacing: Any, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in np.asarray(spacing, dtype=np.float64).reshape(-1))
    if len(spacing) == 1:
        spacing = spacing * ndim
    if len(spacing) != ndim or not all(s > 0 and np.isfinite(s) for s in spacing):
        raise ValueError(f"spacing must be {ndim} positive numbers (mm per array axis), got {spacing}.")
    return spacing


def hd95_mm(
    pred: Any,
    target: Any,
    spacing: Any,
    num_classes: int,
    include_background: bool = False,
    missing: str = "nan",
) -> np.ndarray:
    """95th-percentile symmetric Hausdorff distance of each class, in mm.

    The distance is the larger of the two directed 95th percentiles between the surface voxels
    of prediction and target (voxels of the mask with a face neighbour outside it), measured
    with the voxel ``spacing`` (MONAI ``compute_hausdorff_distance(percentile=95)``, as in
    MedPy's ``hd95`` used by the scribble toolboxes).

    Args:
        pred: predicted labels of one volume, shape (D, H, W) (or (H, W) for one slice).
        target: true labels, same shape.
        spacing: mm per array axis, in the array's axis order (e.g. (slice distance, row, column)
            for a (D, H, W) volume); one number means isotropic.
        num_classes: number of classes C.
        include_background: also score class 0 (otherwise its column is NaN).
        missing: ``"nan"`` (default): NaN when the prediction or the target of a class is empty.
            ``"diagonal"``: when exactly one of them is empty, the length of the volume's
            diagonal in mm (the largest distance possible inside it), so a missed organ
            counts as a failure instead of vanishing from NaN-aware means. Both empty is NaN.

    Returns:
        float64 array (C,).

    Example::

        >>> target = np.zeros((8, 8, 8), int); target[2:5, 2:5, 2:5] = 1
        >>> pred = np.roll(target, 1, axis=0)          # shifted by one slice
        >>> float(hd95_mm(pred, target, spacing=(3.0, 1.0, 1.0), num_classes=2)[1])
        3.0
    """
    with warnings.catch_warnings():
        # importing MONAI 1.6 under torch 2.13 repeats a torch.jit deprecation notice ~70 times
        warnings.filterwarnings("ignore", message=".*torch.jit.*", category=DeprecationWarning)
        from monai.metrics import compute_hausdorff_distance

    if missing not in MISSING_HD_CONVENTIONS:
        raise ValueError(f"missing must be one of {MISSING_HD_CONVENTIONS}, got {missing!r}.")
    pred, target = _to_numpy_labels(pred, "pred"), _to_numpy_labels(target, "target")
    _check_pair(pred, target, num_classes)
    if pred.ndim not in (2, 3):
        raise ValueError(f"hd95_mm scores one volume (D, H, W) or one slice (H, W), got shape {pred.shape}.")
    spacing = _check_spacing(spacing, pred.ndim)
    diagonal = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing))))

    scores = np.full(num_classes, np.nan)
    for c in range(0 if include_background else 1, num_classes):
        pred_c, target_c = pred == c, target == c
        has_pred, has_target = bool(pred_c.any()), bool(target_c.any())
        if not (has_pred and has_target):
            # Decided here rather than by MONAI, which warns and returns inf or nan.
            if missing == "diagonal" and has_pred != has_target:
                scores[c] = diagonal
            continue
        with warnings.catch_warnings():
            # MONAI 1.6 warns about a deprecated argument of its own internal call
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
            value = compute_hausdorff_distance(
                torch.from_numpy(pred_c[None, None]),
                torch.from_numpy(target_c[None, None]),
                include_background=True,
                percentile=95,
                spacing=list(spacing),
            )
        scores[c] = float(value.reshape(-1)[0])
    return scores
