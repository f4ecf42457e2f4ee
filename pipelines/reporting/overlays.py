"""The qualitative figure of a report: the same validation slices segmented by every regime.

As in the papers' figures: one line per validation slice, the image, its ground truth, then each
regime's prediction (its best checkpoint), so that the regimes are compared on identical inputs.
The slices are chosen by :func:`wss_monai.engine.plots.select_overlay_samples` (distinct volumes,
largest target first) from the validation split of the runs' prepared dataset.

The network is rebuilt from the run's own ``config.json`` (its ``network_def``) without
evaluating any expression of it: only wss-monai's networks, with literal arguments (and
``@num_classes``), are accepted; other runs are left out of the figure with a note. A run
without a local output folder or checkpoint (made on another machine, or interrupted before its
first validation) is left out too.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NETWORKS", "build_network", "validation_samples", "plot_regime_overlays", "overlay_figure"]

NETWORKS = {"wss_monai.networks.ENet": "ENet", "wss_monai.networks.ResUNet": "ResUNet",
            "wss_monai.networks.enet.ENet": "ENet", "wss_monai.networks.resunet.ResUNet": "ResUNet"}
"""``network_def`` targets the report rebuilds (anything else is not instantiated)."""


class OverlayError(ValueError):
    """A run that cannot take part in the overlay figure (the message says why)."""


def build_network(run_dir: str | Path, num_classes: int | None = None):
    """The network of a training run's folder, with its best checkpoint loaded, in eval mode on the CPU.

    Raises:
        OverlayError: no config or checkpoint, a network that is not one of :data:`NETWORKS`, an
            argument that is an expression, or a checkpoint that does not fit.
    """
    import wss_monai.networks as networks
    from wss_monai.engine import load_network
    from wss_monai.tracking.record import RunRecord

    folder = Path(run_dir)
    record = RunRecord(folder)
    try:
        config = record.read_config()
    except (OSError, ValueError) as err:
        raise OverlayError(f"{folder.name}: no readable config.json ({type(err).__name__})") from None
    spec = config.get("network_def")
    if not isinstance(spec, dict) or spec.get("_target_") not in NETWORKS:
        target = spec.get("_target_") if isinstance(spec, dict) else spec
        raise OverlayError(f"{folder.name}: network {target!r} is not one the report rebuilds ({', '.join(sorted(set(NETWORKS.values())))})")
    resolved = config.get("resolved") or {}
    kwargs: dict[str, Any] = {}
    for key, value in spec.items():
        if key.startswith("_"):
            continue
        if value == "@num_classes":
            value = num_classes or resolved.get("num_classes")
        elif isinstance(value, str) and value.startswith("@") and not isinstance(config.get(value[1:]), str):
            value = config.get(value[1:])
        if isinstance(value, str) and value.startswith(("$", "@", "%")):
            raise OverlayError(f"{folder.name}: network_def {key} = {value!r} is an expression; the report does not evaluate those")
        kwargs[key] = value
    network = getattr(networks, NETWORKS[spec["_target_"]])(**kwargs)
    checkpoint = record.best_checkpoint
    if not checkpoint.is_file():
        raise OverlayError(f"{folder.name}: no best checkpoint (models/model.pt)")
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return load_network(network, checkpoint, device="cpu")
    except SystemExit:  # wss_monai.engine's one-line input errors
        raise OverlayError(stderr.getvalue().strip().removeprefix("error: ") or f"{folder.name}: checkpoint does not fit") from None


def validation_samples(dataset_dir: str | Path, count: int = 4) -> list[dict[str, Any]]:
    """``count`` validation slices (``image``, ``label``, ``name``) of a prepared dataset."""
    from wss_monai.data import make_dataloader
    from wss_monai.engine.plots import select_overlay_samples

    loader = make_dataloader(dataset_dir, "validation", weak=None, bounds=None, batch_size=64, cache=False, shuffle=False)
    return select_overlay_samples(list(loader), count)


def _dice(pred: np.ndarray, label: np.ndarray, num_classes: int) -> float:
    scores = []
    for c in range(1, num_classes):
        p, t = pred == c, label == c
        denom = p.sum() + t.sum()
        if denom:
            scores.append(2.0 * (p & t).sum() / denom)
    return float(np.mean(scores)) if scores else math.nan


def plot_regime_overlays(samples: Sequence[dict[str, Any]], predictions: dict[str, Sequence[np.ndarray]], path: str | Path,
                         num_classes: int = 2, title: str = "") -> str:
    """Rows: samples; columns: image, ground truth, then each regime's prediction (red) over the true contour (green)."""
    from wss_monai.engine.plots import _pyplot, _save

    plt = _pyplot()
    names = list(predictions)
    cols, rows = 2 + len(names), max(1, len(samples))
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.0 * rows + 0.4), squeeze=False)
    cmap = plt.get_cmap("tab10")

    def colour(c: int):
        return (1.0, 0.15, 0.1) if num_classes == 2 else cmap(c % 10)[:3]

    for r, sample in enumerate(samples):
        image, label = np.asarray(sample["image"]), np.asarray(sample["label"])
        panels = [("image", None), ("ground truth", label)] + [(n, np.asarray(predictions[n][r])) for n in names]
        for c, (name, mask) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(image, cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if mask is not None:
                overlay = np.zeros((*mask.shape, 4))
                for k in range(1, num_classes):
                    overlay[mask == k] = (*colour(k), 0.45) if c > 1 else (0.2, 1.0, 0.2, 0.35)
                ax.imshow(overlay, interpolation="nearest")
            if c > 1:
                for k in range(1, num_classes):
                    m = (label == k).astype(float)
                    if m.any() and m.min() < 1:
                        ax.contour(m, levels=[0.5], colors=["lime"], linewidths=0.8)
            head = name if r == 0 else ""
            if c > 1:
                dice = _dice(mask, label, num_classes)
                head = (head + "\n" if head else "") + (f"Dice {dice:.2f}" if not math.isnan(dice) else "")
            ax.set_title(head, fontsize=7)
            if c == 0:
                ax.set_ylabel(str(sample.get("name", "")), fontsize=6)
    fig.suptitle((title + "\n" if title else "") + "ground truth green, prediction red over the true contour (green line)", fontsize=8)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def overlay_figure(frame, path: str | Path, count: int = 4, max_regimes: int = 12) -> tuple[str | None, list[str]]:
    """Draw the overlay figure for the runs of a report frame (:data:`pipelines.store.RUN_COLUMNS`).

    One run per (table, row): the FINISHED run with a checkpoint and the lowest seed. The
    slices come from the first such run's dataset (Table 4's variants share its images).
    Returns the path (None if no run qualifies) and a list of notes on the runs left out.
    """
    import torch

    from pipelines.reporting.results import ordered_rows
    from pipelines.reporting.paper import dataset_key

    notes: list[str] = []
    if frame is None or not len(frame):
        return None, notes
    done = frame[(frame["status"] == "FINISHED") & (frame["checkpoint"] != "")]
    missing = frame[(frame["status"] == "FINISHED") & (frame["checkpoint"] == "")]
    if len(missing):
        notes.append(f"overlays leave out {len(missing)} finished run(s) without a local checkpoint")
    if not len(done):
        return None, notes
    chosen = []
    for table in dict.fromkeys(done["table"]):
        part = done[done["table"] == table]
        dataset = dataset_key(next((d for d in part["dataset"] if d), None))
        for row in ordered_rows(table, dataset, part["row"]):
            runs = part[part["row"] == row].sort_values("seed", na_position="last")
            label = row if done["table"].nunique() == 1 else f"T{table} {row}"
            chosen.append((label, runs.iloc[0]))
    if len(chosen) > max_regimes:
        notes.append(f"overlays show the first {max_regimes} of {len(chosen)} rows")
        chosen = chosen[:max_regimes]
    dataset_dir = next((r["dataset_dir"] for _, r in chosen if r["dataset_dir"] and Path(r["dataset_dir"]).is_dir()), None)
    if dataset_dir is None:
        notes.append("overlays: the runs' prepared dataset is not on this machine")
        return None, notes
    samples = validation_samples(dataset_dir, count)
    if not samples:
        return None, notes
    from wss_monai.data import read_dataset_json

    num_classes = len(read_dataset_json(dataset_dir).get("labels") or {}) or 2
    images = torch.stack([torch.as_tensor(np.asarray(s["image"])) for s in samples])[:, None].float()
    predictions: dict[str, list[np.ndarray]] = {}
    for label, run in chosen:
        try:
            net = build_network(run["output_dir"], num_classes)
        except OverlayError as err:
            notes.append(f"overlays leave out {label}: {err}")
            continue
        with torch.no_grad():
            predictions[label] = list(net(images).argmax(1).numpy())
    if not predictions:
        return None, notes
    return plot_regime_overlays(samples, predictions, path, num_classes=num_classes,
                                title=f"validation slices of {Path(dataset_dir).name}"), notes
