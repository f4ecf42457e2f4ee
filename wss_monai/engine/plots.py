"""The PNG artifacts of a training run: Dice curves per epoch, and sample predictions over the image.

Both use Matplotlib's non-interactive Agg backend and write files atomically (temporary name,
then rename), so a crash never leaves half a PNG.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_dice_curves", "plot_overlays", "select_overlay_samples"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    os.replace(tmp, path)
    return str(path)


def plot_dice_curves(history: Mapping[int, Mapping[str, float]], path: str | os.PathLike, title: str = "") -> str:
    """Training loss and validation Dice per epoch, in two panels.

    Args:
        history: epoch -> metrics of that epoch (``train_loss``, ``train_<term>``, ``val_dice_3d_mean``,
            ``val_dice_3d_<class>``, ``val_dice_2d_one_mean``, ``val_dice_2d_nan_mean``...).
        path: the PNG to write.
        title: figure title (e.g. the run name).

    Returns:
        the path written.
    """
    plt = _pyplot()
    epochs = sorted(history)
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(11, 4))

    def series(key: str) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for e in epochs:
            v = history[e].get(key)
            if v is not None and math.isfinite(float(v)):
                xs.append(e)
                ys.append(float(v))
        return xs, ys

    keys = sorted({k for e in epochs for k in history[e]})
    for key in [k for k in keys if k.startswith("train_") and not k.endswith("_t") and k != "train_lr"]:
        xs, ys = series(key)
        if xs:
            ax_loss.plot(xs, ys, marker="." if len(xs) < 30 else None, label=key[len("train_"):], lw=2 if key == "train_loss" else 1)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (unweighted terms)")
    ax_loss.set_yscale("symlog", linthresh=1e-3)
    if ax_loss.lines:
        ax_loss.legend(fontsize=8)
    dice_keys = [k for k in keys if k.startswith("val_dice_")]
    for key in dice_keys:
        xs, ys = series(key)
        if xs:
            mean = key.endswith("_mean")
            ax_dice.plot(xs, ys, marker="." if len(xs) < 30 else None, label=key[len("val_"):], lw=2 if key == "val_dice_3d_mean" else 1,
                         ls="-" if mean else ":")
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("validation Dice")
    ax_dice.set_ylim(-0.02, 1.02)
    if ax_dice.lines:
        ax_dice.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def select_overlay_samples(batches: Sequence[Mapping[str, Any]], count: int = 6) -> list[dict[str, Any]]:
    """Up to ``count`` slices for the overlay figure, from distinct volumes first, largest target first.

    ``batches`` are evaluation batches (``image`` (B, 1, H, W), ``label`` (B, H, W), ``volume_name``,
    ``slice``); returns dicts with ``image`` (H, W), ``label`` (H, W), ``name``.
    """
    candidates = []
    for batch in batches:
        images = np.asarray(batch["image"].detach().cpu() if hasattr(batch["image"], "detach") else batch["image"])
        labels = np.asarray(batch["label"].detach().cpu() if hasattr(batch["label"], "detach") else batch["label"])
        names = list(batch.get("volume_name") or [f"v{v}" for v in np.asarray(batch["volume"]).reshape(-1)])
        slices = np.asarray(batch["slice"].detach().cpu() if hasattr(batch["slice"], "detach") else batch["slice"]).reshape(-1)
        for i in range(images.shape[0]):
            label = labels[i] if labels.ndim == 3 else labels[i, 0]
            area = int(((label > 0) & (label != 255)).sum())
            candidates.append({"image": images[i, 0], "label": label, "name": f"{names[i]} slice {int(slices[i])}", "volume": names[i], "area": area})
    candidates.sort(key=lambda c: -c["area"])
    chosen, volumes = [], set()
    for c in candidates:  # one per volume first
        if c["volume"] not in volumes and c["area"] > 0:
            chosen.append(c)
            volumes.add(c["volume"])
        if len(chosen) == count:
            return chosen
    for c in candidates:
        if not any(c is x for x in chosen):
            chosen.append(c)
        if len(chosen) == count:
            break
    return chosen


def plot_overlays(samples: Sequence[Mapping[str, Any]], predictions: Sequence[np.ndarray], path: str | os.PathLike,
                  title: str = "", num_classes: int = 2) -> str:
    """Image, true contour (green) and predicted region (red, translucent) for each sample.

    Args:
        samples: dicts with ``image`` (H, W), ``label`` (H, W) and ``name`` (from :func:`select_overlay_samples`).
        predictions: the predicted label maps (H, W), one per sample.
        path: the PNG to write.
        title: figure title.
        num_classes: classes C (each foreground class gets its own colour).
    """
    plt = _pyplot()
    n = max(1, len(samples))
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.4 * rows), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax in axes.ravel():
        ax.axis("off")
    for ax, sample, pred in zip(axes.ravel(), samples, predictions):
        ax.imshow(sample["image"], cmap="gray", interpolation="nearest")
        pred = np.asarray(pred)
        overlay = np.zeros((*pred.shape, 4))
        for c in range(1, num_classes):
            colour = (1.0, 0.15, 0.1) if num_classes == 2 else cmap(c % 10)[:3]
            overlay[pred == c] = (*colour, 0.4)
        ax.imshow(overlay, interpolation="nearest")
        label = np.asarray(sample["label"])
        for c in range(1, num_classes):
            mask = (label == c).astype(float)
            if mask.any() and mask.min() < 1:
                ax.contour(mask, levels=[0.5], colors=["lime" if num_classes == 2 else cmap(c % 10)], linewidths=1.2)
        ax.set_title(str(sample.get("name", "")), fontsize=8)
    fig.suptitle((title + "\n" if title else "") + "green: true contour, red: prediction", fontsize=9)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
