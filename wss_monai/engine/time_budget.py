"""A training handler that ends training before a wall-clock deadline, and times every run.

:class:`TimeBudget` is an ignite handler like the others of :mod:`wss_monai.engine`: a bundle adds
it to its trainer's ``handlers`` list. The pipelines (``python -m pipelines.regimes``, the demo,
``pipelines.reproduce``) do so through a small overlay config merged after a bundle's
``train.json`` (MONAI's ``+key`` appends to a list), so that every regime of a comparison gets
the same wall time, start-up included::

    {
      "time_budget_deadline": 1767225600.0,
      "+train#handlers": [
        {"_target_": "wss_monai.engine.time_budget.TimeBudget", "deadline": "@time_budget_deadline",
         "reserve_s": 6.0, "output_dir": "$@session.output_dir", "tags": {"wss.key": "acdc/t1/full/s0"}}
      ]
    }

The overlay the pipelines write is ``pipelines.runner.TIME_BUDGET_CONFIG``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_RESERVE_S", "TimeBudget"]

DEFAULT_RESERVE_S = 6.0
"""Seconds kept by default for what a run does after its last epoch (overlay figure, artifacts, exit)."""


class TimeBudget:
    """Ignite handler: stop training before a wall-clock deadline.

    It measures each whole epoch (validation, checkpoints and logging included) and, when a
    ``deadline`` (a Unix time) is set, ends training at the end of an epoch when another epoch,
    as long as the longest of the last three plus 10%, would not finish ``reserve_s`` seconds
    before the deadline. The time metrics of the run (``time_train_s``, ``time_train_images``,
    ``time_per_epoch_s``, ``ms_per_image``) are logged by the bundle's own ``MLflowTracker``, for
    every run, not only those of the pipelines. Attach it after the bundle's own handlers (it
    needs the MLflow run the bundle's ``MLflowTracker`` starts).

    When training starts it also sets ``tags`` on the run: the pipelines store there the key of
    each (table, row, seed) so that a killed reproduction finds what is already done. They are
    set as soon as the run exists, not at its end, so that an interrupted run carries them too.

    Args:
        deadline: Unix time (``time.time()``) by which the process should be done; None: no limit.
        reserve_s: seconds left for the end of the run (figures, artifacts, exit).
        output_dir: the run's output folder (its ``run.json`` names the MLflow run).
        tags: MLflow tags set on the run when training starts (a dict, or its JSON text).
    """

    def __init__(self, deadline: float | None = None, reserve_s: float = DEFAULT_RESERVE_S, output_dir: str | None = None,
                 tags: Mapping[str, Any] | str | None = None) -> None:
        self.deadline = None if deadline in (None, "") else float(deadline)
        self.reserve_s = float(reserve_s)
        self.output_dir = output_dir
        if isinstance(tags, str):
            tags = json.loads(tags) if tags.strip() else None
        self.tags = {str(k): str(v) for k, v in dict(tags or {}).items()}
        self.epoch_seconds: list[float] = []
        self.stopped_early = False
        self._run = None
        self._t0 = 0.0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, engine) -> None:
        if not self.tags:
            return
        run = self._mlflow_run()  # the bundle's MLflowTracker, attached before, has written run.json
        if run is not None:
            run.set_tags(self.tags)  # no try: a run the pipeline cannot find again must not go unnoticed

    def _epoch_started(self, engine) -> None:
        self._t0 = time.perf_counter()

    def _mlflow_run(self):
        if self._run is None and self.output_dir:
            try:
                info = json.loads((Path(self.output_dir) / "run.json").read_text())
                if info.get("run_id") and info.get("tracking_uri"):
                    from wss_monai import tracking

                    self._run = tracking.TrackedRun(info["run_id"], info["tracking_uri"], info.get("experiment_id") or "", info.get("run_name") or "")
            except (OSError, ValueError):
                self._run = None
        return self._run

    def _epoch_completed(self, engine) -> None:
        self.epoch_seconds.append(time.perf_counter() - self._t0)
        if self.deadline is None or engine.state.epoch >= (engine.state.max_epochs or 0):
            return
        need = 1.1 * max(self.epoch_seconds[-3:])
        if time.time() + need + self.reserve_s > self.deadline:
            self.stopped_early = True
            import logging

            logging.getLogger("wss_monai.train").info(
                f"time budget: stopping after epoch {engine.state.epoch} (another epoch takes about {need:.0f} s "
                f"and the run must end within {max(self.deadline - time.time(), 0):.0f} s)"
            )
            engine.terminate()
