"""Label maps in, checked: integer NumPy arrays of slices, class ranges, the empty-mask conventions."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

EMPTY_CONVENTIONS = ("one", "nan", "skip")
MISSING_HD_CONVENTIONS = ("nan", "diagonal")


def _to_numpy_labels(labels: Any, name: str) -> np.ndarray:
    """A label map as an integer NumPy array (detached from torch, moved to the CPU)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
            # argmax outputs of MONAI post-transforms (AsDiscrete) are float tensors of integers
            labels = labels.astype(np.int64)
        else:
            raise TypeError(f"{name} must be an integer label map, got dtype {labels.dtype}.")
    return labels


def _as_slices(labels: Any, name: str) -> np.ndarray:
    """(H, W), (N, H, W) or (N, 1, H, W) label maps as (N, H, W)."""
    labels = _to_numpy_labels(labels, name)
    if labels.ndim == 2:
        return labels[None]
    if labels.ndim == 4 and labels.shape[1] == 1:  # MONAI's channel-first (B, 1, H, W)
        return labels[:, 0]
    if labels.ndim != 3:
        raise ValueError(f"{name} must have shape (H, W), (N, H, W) or (N, 1, H, W), got {labels.shape}.")
    return labels


def _check_range(labels: np.ndarray, num_classes: int, name: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} holds values in [{labels.min()}, {labels.max()}], outside the class range "
            f"[0, {num_classes - 1}] (num_classes={num_classes}); weak labels (255 = unannotated) "
            "cannot be scored, use the full labels."
        )


def _check_pair(pred: np.ndarray, target: np.ndarray, num_classes: int) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {pred.shape} and {target.shape}.")
    _check_range(pred, num_classes, "pred")
    _check_range(target, num_classes, "target")


def _check_empty(empty: str) -> str:
    if empty not in EMPTY_CONVENTIONS:
        raise ValueError(f"empty must be one of {EMPTY_CONVENTIONS}, got {empty!r}.")
    return empty


# --------------------------------------------------------------------------------------------
# Dice
