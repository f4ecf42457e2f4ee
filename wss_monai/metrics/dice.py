"""Dice from confusion counts: per 2D slice and per 3D volume, with explicit empty-mask conventions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from wss_monai.metrics.labels import _as_slices, _check_empty, _check_pair


def confusion_counts(pred: Any, target: Any, num_classes: int) -> np.ndarray:
    """Per-slice confusion matrices of two label maps.

    Args:
        pred: predicted labels, shape (N, H, W), (N, 1, H, W) or (H, W).
        target: true labels, same shape.
        num_classes: number of classes C (labels must lie in [0, C)).

    Returns:
        int64 array (N, C, C): ``counts[n, t, p]`` = pixels of slice n with target t predicted p.
    """
    pred, target = _as_slices(pred, "pred"), _as_slices(target, "target")
    _check_pair(pred, target, num_classes)
    n = pred.shape[0]
    # One bincount over (slice, target, pred) codes: no one-hot tensors, linear in the pixels.
    codes = (np.arange(n).reshape(n, 1, 1) * num_classes + target.astype(np.int64)) * num_classes + pred
    counts = np.bincount(codes.ravel(), minlength=n * num_classes * num_classes)
    return counts.reshape(n, num_classes, num_classes)


def dice_from_counts(counts: np.ndarray, empty: str = "nan") -> np.ndarray:
    """Dice per class from confusion matrices (..., C, C) (target on axis -2, prediction on -1).

    Returns:
        float64 array (..., C); the empty-mask case follows ``empty`` (see the module docstring).
    """
    _check_empty(empty)
    counts = np.asarray(counts, dtype=np.float64)
    overlap = np.diagonal(counts, axis1=-2, axis2=-1)
    target_size = counts.sum(axis=-1)
    pred_size = counts.sum(axis=-2)
    denominator = target_size + pred_size
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = 2.0 * overlap / denominator
    both_empty = denominator == 0
    dice[both_empty] = 1.0 if empty == "one" else np.nan
    if empty == "skip":
        dice[target_size == 0] = np.nan
    return dice


def dice_2d(pred: Any, target: Any, num_classes: int, empty: str = "nan") -> np.ndarray:
    """Dice of every slice and class.

    Args:
        pred: predicted labels, shape (N, H, W), (N, 1, H, W) or (H, W); NumPy or torch.
        target: true labels, same shape.
        num_classes: number of classes C, background included.
        empty: ``"one"`` (reference code: absent from both = 1), ``"nan"`` (absent from both =
            NaN) or ``"skip"`` (absent from the target = NaN); see the module docstring.

    Returns:
        float64 array (N, C); column c is class c.

    Example::

        >>> target = np.zeros((2, 4, 4), int); target[0, :2, :2] = 1   # slice 1 has no class 1
        >>> dice_2d(target, target, 2, empty="one")[:, 1]
        array([1., 1.])
        >>> dice_2d(target, target, 2, empty="nan")[:, 1]
        array([ 1., nan])
    """
    return dice_from_counts(confusion_counts(pred, target, num_classes), empty=empty)


def dice_3d(
    pred: Any, target: Any, volume: Any, num_classes: int, empty: str = "nan"
) -> tuple[np.ndarray, np.ndarray]:
    """Dice of every volume and class, from its slices.

    The slices of a volume may come in any order: 3D Dice only needs the voxel counts summed
    over the slices that share a volume id.

    Args:
        pred: predicted labels of N slices, shape (N, H, W) or (N, 1, H, W).
        target: true labels, same shape.
        volume: (N,) volume id of each slice (any hashable, sortable values: ints or strings).
        num_classes: number of classes C, background included.
        empty: what a class absent from the volume scores, as for :func:`dice_2d`.

    Returns:
        ``(volume_ids, dice)``: the sorted unique ids (V,) and a float64 array (V, C).

    Example::

        >>> pred = np.ones((3, 4, 4), int); target = pred.copy(); target[2] = 0
        >>> ids, dice = dice_3d(pred, target, [7, 7, 9], num_classes=2)
        >>> ids, dice[:, 1]
        (array([7, 9]), array([1., 0.]))
    """
    counts = confusion_counts(pred, target, num_classes)
    volume = np.asarray(volume.detach().cpu() if isinstance(volume, torch.Tensor) else volume).reshape(-1)
    if volume.shape[0] != counts.shape[0]:
        raise ValueError(f"volume must hold one id per slice ({counts.shape[0]}), got {volume.shape[0]}.")
    ids, index = np.unique(volume, return_inverse=True)
    per_volume = np.zeros((len(ids), num_classes, num_classes), dtype=np.int64)
    np.add.at(per_volume, index.reshape(-1), counts)
    return ids, dice_from_counts(per_volume, empty=empty)
