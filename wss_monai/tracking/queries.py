"""Reading runs back from a store: the one reader of runs (one run, an experiment's runs, a metric's
history and its best epoch, their table). The pipelines' reports (:mod:`pipelines.store`) read
through it too."""

from __future__ import annotations

import math
from collections.abc import Sequence

from wss_monai.tracking.store import resolve_tracking_uri, store_client


def find_run(client, run_id: str):
    """The MLflow ``Run`` of ``run_id`` in ``client``'s store, or None when the store does not have it."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        if getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(err).lower():
            return None
        raise


def run_names_starting_with(experiment: str, prefix: str, tracking_uri: str | None = None) -> set[str]:
    """The names of the runs of ``experiment`` that start with ``prefix`` (none when there is no such experiment)."""
    client = store_client(resolve_tracking_uri(tracking_uri))  # creates a new SQLite store once, under a lock
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return set()
    quoted = prefix.replace("'", "\\'")
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"attributes.run_name LIKE '{quoted}%'",
        max_results=50000,
    )
    return {r.info.run_name for r in runs}


def experiment_runs(experiment: str, tracking_uri: str | None = None, *, client=None,
                    order_by: Sequence[str] = ("attributes.start_time ASC",)) -> list:
    """Every run of ``experiment`` (MLflow ``Run`` objects, oldest first), read page by page.

    Raises:
        ValueError: the experiment does not exist (the message lists those that do).
    """
    uri = resolve_tracking_uri(tracking_uri)
    client = client or store_client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"no experiment {experiment!r} in {uri}; experiments there: {', '.join(names) or 'none'}")
    runs, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], max_results=1000, page_token=token, order_by=list(order_by))
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def metric_history(client, run, key: str) -> dict[int, float]:
    """The values ``run`` logged for ``key``, by step (the epoch for the bundles' metrics); empty when none."""
    if key not in run.data.metrics:
        return {}
    return {int(m.step): float(m.value) for m in client.get_metric_history(run.info.run_id, key)}


def best_step(history: dict[int, float], best: str = "max") -> int | None:
    """The step of the best value that is not NaN (the earliest of equal ones); None when there is none."""
    if best not in ("max", "min"):
        raise ValueError(f"best must be 'max' or 'min', got {best!r}.")
    steps = [step for step, value in history.items() if not math.isnan(value)]
    if not steps:
        return None
    sign = 1.0 if best == "max" else -1.0
    return max(steps, key=lambda step: (sign * history[step], -step))


def runs_dataframe(
    experiment: str,
    tracking_uri: str | None = None,
    *,
    best_of: Sequence[str] = (),
    best: str = "max",
):
    """All runs of an experiment as a pandas DataFrame, one row per run, oldest first.

    Columns: ``run_id``, ``run_name``, ``regime``, ``seed``, ``status``, ``start_time``,
    ``end_time`` (UTC timestamps), ``params.<key>`` (strings), ``metrics.<key>`` (the latest
    value of each metric), ``tags.<key>``; and for each metric in ``best_of``,
    ``best.<metric>`` and ``best_epoch.<metric>`` from its history (the papers report the best
    epoch's validation 3D Dice).

    Args:
        experiment: experiment name.
        tracking_uri: see :func:`resolve_tracking_uri`.
        best_of: metrics whose best value over epochs is wanted.
        best: ``"max"`` (Dice) or ``"min"`` (losses, HD95).

    Raises:
        ValueError: the experiment does not exist (the message lists those that do).
    """
    import pandas as pd

    if best not in ("max", "min"):
        raise ValueError(f"best must be 'max' or 'min', got {best!r}.")
    uri = resolve_tracking_uri(tracking_uri)
    client = store_client(uri)
    rows = []
    for run in experiment_runs(experiment, uri, client=client):
        row = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "regime": run.data.tags.get("regime"),
            "seed": run.data.tags.get("seed"),
            "status": run.info.status,
            "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
            "end_time": pd.to_datetime(run.info.end_time, unit="ms", utc=True) if run.info.end_time else pd.NaT,
        }
        row.update({f"params.{k}": v for k, v in run.data.params.items()})
        row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
        row.update({f"tags.{k}": v for k, v in run.data.tags.items() if not k.startswith("mlflow.")})
        for key in best_of:
            history = metric_history(client, run, key)
            step = best_step(history, best)
            row[f"best.{key}"], row[f"best_epoch.{key}"] = (math.nan, None) if step is None else (history[step], step)
        rows.append(row)
    columns = ["run_id", "run_name", "regime", "seed", "status", "start_time", "end_time"]
    frame = pd.DataFrame(rows, columns=None if rows else columns)
    return frame.sort_values("start_time", ignore_index=True) if rows else frame
