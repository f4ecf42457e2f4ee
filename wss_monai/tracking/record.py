"""The files of one training run's output folder, read and written in one place: :class:`RunRecord`.

A run folder (``runs/<experiment>/<run name>`` by default) holds::

    run.json                    the run's MLflow run, regime, dataset, status and best score
    history.json                the metrics of every epoch (the curves; read back on resume)
    config.json                 the resolved config the run trained with
    models/model.pt             the best network (state_dict, by validation 3D Dice)
    models/preprocessing.json   the model card: classes and preprocessing of new scans
    checkpoints/checkpoint_epoch=<N>.pt   the whole training state, to resume from
    mlflow_fallback.jsonl       what the tracking store could not take (:mod:`wss_monai.tracking.journal`)

What a run holds, in this folder and in MLflow, is the run-content contract of
``docs/ARCHITECTURE.md``. Every JSON file is written whole or not at all (:func:`write_text_atomically`), so a run killed
while writing leaves the previous version, never half a file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wss_monai.tracking.journal import FALLBACK_NAME

__all__ = [
    "RunRecord",
    "RUN_INFO",
    "HISTORY",
    "CONFIG",
    "BEST_CHECKPOINT",
    "MODEL_CARD",
    "CHECKPOINTS",
    "write_text_atomically",
    "read_run_info",
    "latest_checkpoint",
]

RUN_INFO = "run.json"
"""File in a training run's output folder: its MLflow run, regime, dataset and best checkpoint."""

HISTORY = "history.json"
"""Per-epoch metrics of a training run (its curves; read back when the run is resumed)."""

CONFIG = "config.json"
"""The resolved config of a training run (also its MLflow artifact ``config.json``)."""

BEST_CHECKPOINT = "models/model.pt"
"""The best checkpoint (network state_dict, by validation 3D Dice), relative to the output folder."""

MODEL_CARD = "models/preprocessing.json"
"""Beside the best checkpoint: the bundle, classes and preprocessing a new scan must go through."""

CHECKPOINTS = "checkpoints"
"""The folder of the epoch checkpoints ``checkpoint_epoch=<N>.pt`` (the whole training state)."""

CHECKPOINT_PATTERN = re.compile(r"^checkpoint_epoch=(\d+)\.pt$")


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a hidden temporary beside it and a rename (atomic on one filesystem)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


class RunRecord:
    """The output folder of one training run and its files (module docstring); nothing is written until asked."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)

    # where each file is ---------------------------------------------------------------------

    @property
    def info_path(self) -> Path:
        return self.folder / RUN_INFO

    @property
    def history_path(self) -> Path:
        return self.folder / HISTORY

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG

    @property
    def best_checkpoint(self) -> Path:
        return self.folder / BEST_CHECKPOINT

    @property
    def model_card_path(self) -> Path:
        return self.folder / MODEL_CARD

    @property
    def checkpoints_dir(self) -> Path:
        return self.folder / CHECKPOINTS

    @property
    def fallback_journal(self) -> Path:
        return self.folder / FALLBACK_NAME

    # run.json --------------------------------------------------------------------------------

    def read_info(self) -> dict | None:
        """``run.json``, or None when there is none or it cannot be read."""
        try:
            return json.loads(self.info_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def write_info(self, info: Mapping[str, Any]) -> None:
        write_text_atomically(self.info_path, json.dumps(dict(info), indent=2, default=str))

    def note_synced_run(self, run_id: str, experiment_id: str, tracking_uri: str) -> None:
        """After a sync, make ``run.json`` name the run its journal went to (unless it names another run)."""
        info = self.read_info()
        if isinstance(info, dict) and (not info.get("run_id") or info.get("run_id") == run_id):
            info.update(run_id=run_id, experiment_id=experiment_id, tracking_uri=tracking_uri, tracking_synced=True)
            try:
                self.write_info(info)
            except OSError:  # the sync itself succeeded; run.json only repeats its run id
                pass

    # history.json ----------------------------------------------------------------------------

    def read_history(self, upto: int) -> dict[int, dict[str, float]]:
        """The per-epoch metrics of epochs 1..``upto``; raises ``OSError``/``ValueError``/... when unreadable."""
        raw = json.loads(self.history_path.read_text())
        return {int(k): dict(v) for k, v in raw.items() if int(k) <= upto}

    def write_history(self, history: Mapping[int, Mapping[str, float]]) -> None:
        write_text_atomically(self.history_path, json.dumps({str(k): v for k, v in sorted(history.items())}))

    # config.json and the model card ----------------------------------------------------------

    def read_config(self) -> dict:
        """The resolved config the run trained with. Raises OSError (no file) or ValueError (not JSON)."""
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write the resolved config (``config.json``) atomically."""
        write_text_atomically(self.config_path, json.dumps(config, indent=2, default=str))

    def write_model_card(self, card: Mapping[str, Any]) -> None:
        """Write the model card (``models/preprocessing.json``) atomically."""
        write_text_atomically(self.model_card_path, json.dumps(dict(card), indent=2) + "\n")

    # checkpoints -----------------------------------------------------------------------------

    def latest_checkpoint(self) -> tuple[Path, int] | None:
        """The newest ``checkpoints/checkpoint_epoch=<N>.pt`` and its N, or None."""
        folder = self.checkpoints_dir
        found = []
        for path in folder.glob("checkpoint_epoch=*.pt") if folder.is_dir() else []:
            match = CHECKPOINT_PATTERN.match(path.name)
            if match and path.is_file():
                found.append((int(match.group(1)), path))
        if not found:
            return None
        epoch, path = max(found)
        return path, epoch


def read_run_info(output_dir: str | os.PathLike) -> dict | None:
    """``run.json`` of a training run's output folder, or None."""
    return RunRecord(output_dir).read_info()


def latest_checkpoint(output_dir: str | os.PathLike) -> tuple[Path, int] | None:
    """The newest ``checkpoints/checkpoint_epoch=<N>.pt`` of a run's output folder and its N, or None."""
    return RunRecord(output_dir).latest_checkpoint()
