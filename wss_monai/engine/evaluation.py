"""The output of an evaluation pass: the scores as files, one log line, and the scores in the training's MLflow run."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from wss_monai.engine.distributed import current_rank
from wss_monai.engine.errors import as_bool, end_for_user, shorten_engine_errors, user_data_error
from wss_monai.engine.handler_tools import add_first
from wss_monai.tracking.record import write_text_atomically

logger = logging.getLogger("wss_monai.engine")


class EvaluationReport:
    """Write the scores of an evaluation pass and log them into the training run.

    At the end of the evaluator's run: ``<results_dir>/metrics.json`` (split, checkpoint, every
    score), ``<results_dir>/per_volume.csv`` (3D Dice and HD95 per volume and class), one log line,
    and, when the checkpoint's training run is known (``run.json``) and ``log_to_run``, the scores
    as metrics of that MLflow run (``test_dice_3d_mean``...; step = the best epoch) with the two
    files as artifacts under ``evaluate/``.
    """

    def __init__(self, session: Any, metric: Any, log_to_run: bool = True) -> None:
        self.session = session
        self.metric = metric
        self.log_to_run = as_bool(log_to_run, "log_to_run")
        self.summary: dict[str, float] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)
        add_first(engine, Events.EXCEPTION_RAISED, self._exception_raised)
        shorten_engine_errors(engine)

    def _exception_raised(self, engine: Engine, error: BaseException) -> None:
        """A slice file that cannot be read during the evaluation: its one line, exit 2 (rule: :func:`user_data_error`); a bug traces."""
        end_for_user(error, None if isinstance(error, KeyboardInterrupt) else user_data_error(error))

    def _per_volume_csv(self) -> str:
        scores = self.metric.last_scores or {}
        names = self.metric.last_volume_names
        from wss_monai.metrics import VolumeScores

        classes = VolumeScores(self.session.num_classes, class_names=self.session.class_names).class_names
        out = io.StringIO()
        writer = csv.writer(out)
        header = ["volume"] + [f"dice_3d_{classes[c]}" for c in range(1, len(classes))]
        if "hd95" in scores:
            header += [f"hd95_{classes[c]}" for c in range(1, len(classes))]
        writer.writerow(header)
        for i, vid in enumerate(scores.get("volume", [])):
            row = [names.get(int(vid), str(vid))] + [f"{scores['dice_3d'][i, c]:.6f}" for c in range(1, len(classes))]
            if "hd95" in scores:
                row += [f"{scores['hd95'][i, c]:.4f}" for c in range(1, len(classes))]
            writer.writerow(row)
        return out.getvalue()

    def __call__(self, engine: Engine) -> None:
        if current_rank() != 0:
            return
        s = self.session
        summary = dict(self.metric.last_summary or {})
        self.summary = summary
        folder = Path(s.results_dir)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {"split": s.split, "dataset_dir": s.dataset_dir, "checkpoint": s.ckpt_path, "metrics": summary}
        for name, text in (("metrics.json", json.dumps(payload, indent=2)), ("per_volume.csv", self._per_volume_csv())):
            write_text_atomically(folder / name, text)
        p = s.prefix
        line = ", ".join(f"{k[len(p):]} {summary[k]:.4f}" for k in (f"{p}dice_3d_mean", f"{p}dice_2d_nan_mean", f"{p}dice_2d_one_mean") if k in summary)
        if f"{p}hd95_mean" in summary:
            line += f", hd95 {summary[f'{p}hd95_mean']:.2f} mm"
        logger.info(f"{s.split} split ({int(summary.get(f'{p}n_volumes', 0))} volumes): {line}; results in {folder}")
        info = s.run_info or {}
        if self.log_to_run and info.get("run_id") and info.get("tracking_uri"):
            try:
                from wss_monai import tracking

                run = tracking.TrackedRun(info["run_id"], info["tracking_uri"], info.get("experiment_id") or "", info.get("run_name") or "")
                step = int(info.get("best_epoch") or 0)
                run.log_metrics(summary, epoch=step)
                run.set_tags({f"{s.workflow}_split": s.split, f"{s.workflow}_checkpoint": s.ckpt_path})
                run.log_artifacts(folder / "metrics.json", folder / "per_volume.csv", artifact_path=s.workflow)
                logger.info(f"scores logged to MLflow run {info.get('run_name')!r} ({info['tracking_uri']})")
            except Exception as err:
                logger.warning(f"could not log the scores to the training run's MLflow store: {err}")
