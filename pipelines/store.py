"""The MLflow store as the pipelines use it: made ready before runs share it, and read back as table rows.

Every run a pipeline (or a user, by hand) trains logs to MLflow; every table and report is read
back from there, never from the processes' own output, so a report of runs made by hand or on
another machine reads like the demo's. :func:`collect` reads runs into a pandas table, one row
per run (:data:`RUN_COLUMNS`: the scores of the best epoch by validation 3D Dice, epochs,
timing, status, output folder, the prepared dataset's fingerprint); :func:`init_store` creates a
new SQLite store's tables before several runs start on it at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FINGERPRINT_TAG", "HISTORY_KEYS", "RUN_COLUMNS", "Runs", "collect", "init_store", "run_record"]

HISTORY_KEYS = ("val_dice_3d_mean", "val_dice_2d_one_mean", "val_dice_2d_nan_mean", "val_hd95_mean",
                "time_train_s", "time_train_images", "train_loss")
"""Per-epoch metrics a report reads (the bundles' and :class:`~wss_monai.engine.time_budget.TimeBudget`'s)."""


RUN_COLUMNS = ["run_id", "run_name", "experiment", "status", "table", "row", "regime", "seed", "key", "bundle", "dataset",
               "fingerprint", "image_size", "epochs", "best_epoch", "dice_3d", "dice_2d_one", "dice_2d_nan", "hd95_mm", "dice_3d_last",
               "train_s", "train_images", "ms_per_image", "run_s", "start_time", "output_dir", "checkpoint", "dataset_dir"]
"""Columns of ``runs.csv``, one row per MLflow run."""


FINGERPRINT_TAG = "dataset_fingerprint"
"""The MLflow tag (and param) naming the prepared dataset a run trained on: 12 hex characters.

An experiment is named after its dataset (``acdc-lv``), so one experiment can hold the same data
prepared twice (at 256 and at 64 pixels): everything that summarises runs groups them by this
tag, never averaging two preparations as if they were seeds. Runs logged before the tag existed
have none: they form one preparation of their own, the unknown one (empty fingerprint)."""


def init_store(tracking_uri: str) -> None:
    """Create a SQLite MLflow store's tables now, in this process.

    Two bundle runs started together on a new store would both try to create the tables and
    one would fail (``table runs already exists``); after this they only add rows.
    """
    from wss_monai import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        tracking.store_client(uri)  # creates and upgrades the tables once, under the store's lock


@dataclass
class Runs:
    """The runs of a report: ``frame`` (one row per run, :data:`RUN_COLUMNS`) and ``curves``
    (run id -> {epoch: validation 3D Dice})."""

    frame: Any
    curves: dict[str, dict[int, float]] = field(default_factory=dict)
    tracking_uri: str = ""
    experiment: str = ""




def _image_size(value: Any) -> str:
    """The param ``image_size`` (``"64x64"``; runs of earlier versions: ``resolved.image_size`` ``"[64, 64]"``) as ``"64x64"``.

    "" when unknown or ``"none"``.

    Two preparations of one dataset usually differ by their slice size, the first thing a reader
    asks when a report says an experiment holds several."""
    sizes = [part for part in str(value or "").strip("[]() ").replace(",", " ").replace("x", " ").split() if part.isdigit()]
    return "x".join(sizes) if sizes else ""



def run_record(client, run, experiment: str = "") -> tuple[dict[str, Any], dict[int, float]]:
    """One MLflow run as a report row (:data:`RUN_COLUMNS`) and its validation 3D Dice per epoch.

    Scores are those of the best epoch by ``val_dice_3d_mean``; the timing sums
    ``time_train_s`` and ``time_train_images`` over epochs. Missing metrics give NaN, a missing
    or foreign output folder gives an empty ``output_dir``.
    """
    import pandas as pd

    from wss_monai.tracking.queries import best_step, metric_history
    from wss_monai.tracking.record import RunRecord

    tags = run.data.tags
    h = {key: metric_history(client, run, key) for key in HISTORY_KEYS}
    dice = {e: v for e, v in h["val_dice_3d_mean"].items() if not math.isnan(v)}
    best_epoch = best_step(dice)
    steps = set(h["val_dice_3d_mean"]) | set(h["train_loss"]) | set(h["time_train_s"])
    output_dir = tags.get("output_dir") or run.data.params.get("resolved.output_dir") or ""
    folder = Path(output_dir) if output_dir else None
    checkpoint = RunRecord(folder).best_checkpoint if folder is not None else None
    seed = tags.get("seed")
    params = run.data.params
    train_s = sum(h["time_train_s"].values()) if h["time_train_s"] else math.nan
    images = sum(h["time_train_images"].values()) if h["time_train_images"] else math.nan
    start = run.info.start_time
    end = run.info.end_time
    record = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment": experiment,
        "status": run.info.status,
        "table": tags.get("wss.table", ""),
        "row": tags.get("wss.row") or tags.get("regime") or run.info.run_name,
        "regime": tags.get("regime", ""),
        "seed": int(seed) if seed not in (None, "") and str(seed).lstrip("-").isdigit() else None,
        "key": tags.get("wss.key", ""),
        "bundle": tags.get("bundle", ""),
        "dataset": tags.get("dataset", ""),
        "fingerprint": str(tags.get(FINGERPRINT_TAG) or params.get(FINGERPRINT_TAG) or params.get(f"resolved.{FINGERPRINT_TAG}") or ""),
        "image_size": _image_size(params.get("image_size") or params.get("resolved.image_size")),
        "epochs": max(steps) if steps else 0,
        "best_epoch": best_epoch,
        "dice_3d": dice[best_epoch] if best_epoch is not None else math.nan,
        "dice_2d_one": h["val_dice_2d_one_mean"].get(best_epoch, math.nan),
        "dice_2d_nan": h["val_dice_2d_nan_mean"].get(best_epoch, math.nan),
        "hd95_mm": h["val_hd95_mean"].get(best_epoch, math.nan),
        "dice_3d_last": dice[max(dice)] if dice else math.nan,
        "train_s": train_s,
        "train_images": images,
        "ms_per_image": 1000.0 * train_s / images if images and not math.isnan(images) and images > 0 else math.nan,
        "run_s": (end - start) / 1000.0 if start and end else math.nan,
        "start_time": pd.to_datetime(start, unit="ms", utc=True) if start else pd.NaT,
        "output_dir": str(folder) if folder is not None and folder.is_dir() else "",
        "checkpoint": str(checkpoint) if checkpoint is not None and checkpoint.is_file() else "",
        "dataset_dir": params.get("resolved.dataset_dir") or params.get("dataset_dir") or "",
    }
    return record, dice



def collect(
    experiment: str | None = None,
    tracking_uri: str | None = None,
    *,
    run_ids: Sequence[str] | None = None,
    where: Callable[[Any], bool] | None = None,
) -> Runs:
    """Read runs from MLflow: every run of ``experiment``, or the runs ``run_ids`` (any experiment).

    Args:
        experiment: experiment name (ignored when ``run_ids`` is given).
        tracking_uri: the store (:func:`wss_monai.tracking.resolve_tracking_uri`; default: the
            working folder's ``mlruns.db``).
        run_ids: read these runs only, in this order.
        where: keep only the MLflow runs for which it returns True (e.g. the pipelines' keys).

    Raises:
        ValueError: the experiment does not exist (the message lists those that do).
    """
    import pandas as pd
    from mlflow import MlflowClient

    from wss_monai import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    names: dict[str, str] = {}
    if run_ids is not None:
        found = [client.get_run(run_id) for run_id in run_ids]
    else:
        if not experiment:
            raise ValueError("give an experiment name or run ids")
        found = tracking.experiment_runs(experiment, uri, client=client)
        if found:
            names[found[0].info.experiment_id] = experiment
    rows, curves = [], {}
    for run in found:
        if where is not None and not where(run):
            continue
        exp_id = run.info.experiment_id
        if exp_id not in names:
            names[exp_id] = client.get_experiment(exp_id).name
        record, curve = run_record(client, run, names[exp_id])
        rows.append(record)
        curves[record["run_id"]] = curve
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return Runs(frame=frame, curves=curves, tracking_uri=uri, experiment=experiment or "")
