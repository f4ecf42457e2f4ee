"""Checkpoints written whole or not at all, and resuming a training from the last one.

- :class:`AtomicDiskSaver` / :class:`AtomicCheckpointSaver`: ignite's and MONAI's savers, writing
  each file through a temporary and a rename;
- :class:`LastCheckpoint` (trainer): the whole training state every ``interval`` epochs, and the
  resume from one (``--resume``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

from wss_monai.engine.distributed import current_rank
from wss_monai.engine.errors import fail
from wss_monai.engine.handler_tools import add_first, as_float

logger = logging.getLogger("wss_monai.engine")


class _EvaluatorState:
    """The evaluator's best score so far, as an object with ``state_dict`` (saved with the checkpoint).

    Holds ``best_metric`` / ``best_metric_epoch`` of the evaluator's state and the list of files
    kept by each key-metric ``CheckpointSaver`` attached to it (ignite's ``Checkpoint._saved``), so
    that a resumed run replaces ``models/model.pt`` only with a better network, as an
    uninterrupted run would.
    """

    def __init__(self, evaluator: Engine) -> None:
        self.evaluator = evaluator

    def _savers(self) -> list[Any]:
        from ignite.handlers import Checkpoint

        found = []
        for entry in getattr(self.evaluator, "_event_handlers", {}).get(Events.EPOCH_COMPLETED, []):
            handler = entry[0]
            handler = getattr(handler, "__wrapped__", handler)
            owner = getattr(handler, "__self__", None)
            checkpoint = getattr(owner, "_key_metric_checkpoint", None)
            if isinstance(checkpoint, Checkpoint) and checkpoint not in found:
                found.append(checkpoint)
        return found

    def state_dict(self) -> dict[str, Any]:
        state = self.evaluator.state
        best = as_float(getattr(state, "best_metric", None))
        return {
            "best_metric": -1.0 if best is None else best,
            "best_metric_epoch": int(getattr(state, "best_metric_epoch", -1) or -1),
            "key_metric_saved": [[[float(p), str(f)] for p, f in c.state_dict()["_saved"]] for c in self._savers()],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.evaluator.state.best_metric = float(state.get("best_metric", -1.0))
        self.evaluator.state.best_metric_epoch = int(state.get("best_metric_epoch", -1))
        for checkpoint, saved in zip(self._savers(), state.get("key_metric_saved", [])):
            checkpoint.load_state_dict({"_saved": [(p, f) for p, f in saved]})


class AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` for the epoch checkpoints, writing each file whole or not at all.

    The checkpoint is written to a hidden temporary in the same folder
    (``.checkpoint_epoch=<N>.pt.<pid>.tmp``, a name :func:`~wss_monai.engine.latest_checkpoint`
    never picks), flushed to disk, then renamed over the final name with ``os.replace`` (atomic on
    one filesystem): a run killed while saving leaves the previous checkpoints intact and, at
    worst, a stray temporary, which resume removes. The file gets the process's usual permissions
    (umask), as MONAI's own saver gives (ignite's ``atomic=True`` makes it owner-only). Saves on
    rank 0 only.

    ignite's ``Checkpoint`` removes the oldest file *before* it writes the new one; with
    ``n_saved=1`` a run killed in between would have no checkpoint at all. Removals asked for
    are therefore held back until the new file is in place.
    """

    TEMPORARY = ".*.tmp"
    """glob of the temporaries in the checkpoint folder"""

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        super().__init__(dirname, atomic=True, create_dir=True, require_empty=False)
        self.filename = filename  # a fixed name (MONAI's ``key_metric_filename``) instead of ignite's pattern
        self._to_remove: list[str] = []

    def remove(self, filename: str) -> None:
        self._to_remove.append(self.filename or filename)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        filename = self.filename or filename
        super().__call__(checkpoint, filename, metadata)
        for old in self._to_remove:
            if old != filename:  # a file saved again under its own name was just replaced
                super().remove(old)
        self._to_remove.clear()

    def _save_func(self, checkpoint: Mapping, path: Path, func: Any) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as stream:
                func(checkpoint, stream, **self.kwargs)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) writing every file through :class:`AtomicDiskSaver`.

    MONAI's saver deletes ``model.pt`` and then writes the new one in place: a run killed in
    between loses its best model, or leaves a truncated one. Here the old file stays until the new
    one is whole.
    """

    def __init__(self, save_dir: str, save_dict: dict, *args: Any, **kwargs: Any) -> None:
        super().__init__(save_dir, save_dict, *args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                fixed = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = AtomicDiskSaver(self.save_dir, filename=fixed)


class LastCheckpoint:
    """Save the whole training state every ``interval`` epochs, keeping the last ``n_saved`` files; resume from one.

    MONAI's ``CheckpointSaver`` with the trainer itself added to ``save_dict`` (a config cannot
    reference the trainer from inside its own handler list): ``checkpoint_epoch=<N>.pt`` holds
    the state_dicts of the network, optimizer, scheduler and trainer (epoch, iteration) and, with
    ``evaluator``, the best validation score so far and the best checkpoint's score.

    With ``resume_from`` (a checkpoint path; the session's ``resume_checkpoint``) the same objects
    are loaded from it when the trainer starts, before any other handler runs, like MONAI's
    ``CheckpointLoader``; the trainer then goes on at the next epoch up to its ``max_epochs``.

    Put it last in ``train_handlers``: at the end of an epoch it then runs after the handlers that
    log the epoch, so a checkpoint never exists for an epoch whose metrics were not recorded (a run
    killed in between repeats that epoch when resumed).
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: Mapping[str, Any],
        interval: int = 1,
        n_saved: int = 1,
        trainer_key: str = "trainer",
        evaluator: Engine | None = None,
        resume_from: str | os.PathLike | None = None,
    ) -> None:
        self.save_dir = save_dir
        self.save_dict = dict(save_dict)
        self.interval = int(interval)
        self.n_saved = int(n_saved)
        self.trainer_key = trainer_key
        if evaluator is not None:
            self.save_dict.setdefault("evaluator", _EvaluatorState(evaluator))
        self.resume_from = None if resume_from is None or str(resume_from).strip() == "" else str(resume_from)

    def attach(self, engine: Engine) -> None:
        save_dict = dict(self.save_dict)
        if self.trainer_key:
            save_dict.setdefault(self.trainer_key, engine)
        if self.resume_from is not None:
            add_first(engine, Events.STARTED, self._load, save_dict)
        saver = AtomicCheckpointSaver(self.save_dir, save_dict, save_interval=self.interval, n_saved=self.n_saved, epoch_level=True)
        saver.attach(engine)

    def _load(self, engine: Engine, objects: Mapping[str, Any]) -> None:
        from ignite.handlers import Checkpoint

        path = Path(self.resume_from)
        if current_rank() == 0:  # a run killed while saving leaves its temporary; it never was a checkpoint
            for stray in path.parent.glob(AtomicDiskSaver.TEMPORARY):
                stray.unlink(missing_ok=True)
                logger.info(f"removed {stray.name}: an unfinished checkpoint of the killed run")
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            fail(f"{path}: cannot read this checkpoint to resume from ({str(err).splitlines()[0] if str(err) else type(err).__name__}).")
        missing = [k for k in objects if k not in checkpoint]
        if any(k in missing for k in ("model", self.trainer_key)):
            fail(f"{path}: not a training checkpoint of this bundle (no {', '.join(missing)}).")
        if missing:
            logger.warning(f"{path.name} has no {', '.join(missing)}: those start afresh")
        max_epochs = engine.state.max_epochs
        Checkpoint.load_objects(to_load={k: v for k, v in objects.items() if k not in missing}, checkpoint=checkpoint)
        if max_epochs is not None:  # the command line's --epochs, not the checkpoint's
            engine.state.max_epochs = max_epochs
        logger.info(f"resumed from {path} at epoch {engine.state.epoch} (iteration {engine.state.iteration})")
