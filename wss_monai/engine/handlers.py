"""Ignite handlers of the bundles: loss monitoring, epoch schedules, progress, summaries, MLflow, reports.

Each handler has ``attach(engine)`` and goes in a MONAI workflow's ``train_handlers`` /
``val_handlers`` list (``{"_target_": "wss_monai.engine.TrainLossMonitor", ...}``).

- :class:`TrainLossMonitor` (trainer): sums the loss and each loss term on the device (no host
  synchronisation per iteration), stops training with :class:`NonFiniteLossError` naming the epoch
  and iteration where the loss first became NaN or infinite, and puts ``train_loss`` and
  ``train_<term>`` into ``engine.state.metrics`` at the end of each epoch. It runs first at the end
  of an epoch, so a diverged network is never validated or checkpointed: the last good checkpoint
  stays.
- :class:`EpochSetter` (trainer): tells the loss terms the epoch (the log-barrier's t) and the
  loader's sampler (reshuffling of custom distributed samplers).
- :class:`ProgressBar` (trainer): ignite's tqdm bar, only on an interactive terminal.
- :class:`EpochSummary` (trainer): one log line per epoch.
- :class:`MLflowTracker` (trainer): the MLflow run (params, per-epoch metrics, artifacts,
  status) and the ``run.json`` of the output folder.
- :class:`EvaluationReport` (evaluator of ``evaluate.json``): metrics JSON, per-volume CSV, and the
  scores logged into the training run.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

from wss_monai.engine.errors import UserDataError, as_bool, fail, user_data_error
from wss_monai.engine.session import BEST_CHECKPOINT, HISTORY, write_run_info

__all__ = [
    "NonFiniteLossError",
    "NonFiniteInputError",
    "TrainLossMonitor",
    "EpochSetter",
    "AtomicCheckpointSaver",
    "LastCheckpoint",
    "AtomicDiskSaver",
    "ProgressBar",
    "EpochSummary",
    "MLflowTracker",
    "EvaluationReport",
    "load_network",
    "unwrap",
]

logger = logging.getLogger("wss_monai.engine")


def _rank() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:  # pragma: no cover
        pass
    return 0


def _world() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return 1


def _add_first(engine: Engine, event: Any, handler: Any, *args: Any) -> None:
    """Register ``handler`` for ``event`` ahead of the handlers already there (ignite runs them in order)."""
    engine.add_event_handler(event, handler, *args)
    try:
        handlers = engine._event_handlers[event]  # ignite's per-event list of (handler, args, kwargs)
        handlers.insert(0, handlers.pop())
    except (AttributeError, KeyError, IndexError, TypeError):  # pragma: no cover - other ignite versions
        pass


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` (or the network itself)."""
    return getattr(network, "module", network)


def _float(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


# --------------------------------------------------------------------------------------------
# loss monitoring


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the epoch and the iteration."""


class NonFiniteInputError(NonFiniteLossError, UserDataError):
    """The loss became NaN or infinite because a slice of the batch holds NaN/inf: the data, not the
    learning rate, is to blame; the message names the slice files (a user data error, one line, exit 2)."""


#: batch keys checked when the loss turns non-finite -> (what may not be in them, where the value comes from)
_INPUT_CHECKS = {"image": ("NaN or infinite voxels", "its slice file"),
                 "bounds": ("NaN size bounds", "its entry in dataset.json"),
                 "spacing": ("a NaN or infinite pixel spacing", "its entry in dataset.json")}


def _bad_samples(key: str, value: Any) -> torch.Tensor | None:
    """Per sample of the batch, whether ``value`` (the batch's ``key``) holds what :data:`_INPUT_CHECKS` forbids; on its device."""
    value = getattr(value, "as_tensor", lambda: value)() if isinstance(value, torch.Tensor) else value
    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.ndim < 1 or value.shape[0] == 0:
        return None
    flat = value.detach().reshape(value.shape[0], -1)
    bad = torch.isnan(flat) if key == "bounds" else ~torch.isfinite(flat)  # a bound of inf means "no upper bound"
    return bad.any(dim=1)


class TrainLossMonitor:
    """Epoch means of the loss and its terms, and a guard against a NaN/Inf loss.

    Per iteration, the loss (``engine.state.output["loss"]``) and the unweighted term values of
    ``loss`` (a :class:`~wss_monai.losses.WeakSupervisionLoss`, its ``last_values``) are added up
    on their device, and the first iteration with a non-finite loss is recorded there too. The
    record is read (one host synchronisation) every ``check_interval`` iterations and at the end
    of each epoch; a non-finite loss stops training with :class:`NonFiniteLossError`, whose
    message gives the epoch, the iteration, the term values of that iteration and the last good
    checkpoint.

    A NaN voxel in a slice file gives a NaN loss too, and lowering the learning rate would not
    help: each iteration also records, on the device and without synchronising, which samples of
    the batch have a non-finite image (or NaN bounds, a non-finite spacing), with the batch's
    ``image_path`` list. When the loss of an iteration is not finite and one of its samples is
    flagged, training stops with :class:`NonFiniteInputError` instead, naming those slice files
    and asking for the dataset to be prepared again; the run ends with that one line (exit 2).
    Only the iterations since the last check are kept (at most ``check_interval``).

    Metrics set at the end of each epoch: ``train_loss`` and ``train_<term>`` (the means over the
    epoch's iterations, of all ranks under ``torch.distributed``); terms with a schedule report it
    too (``train_log_barrier_t``). Under ``torch.distributed`` the check is collective: every rank
    stops at the same iteration.

    Args:
        loss: the loss whose terms are logged (optional; without it only ``train_loss``).
        check_interval: iterations between checks; None = 1 when the loss lives on the CPU (no
            cost) and 50 on an accelerator (bounded waste, few synchronisations).
        checkpoint_dir: folders named in the error message as holding the last good checkpoints.
        prefix: metric name prefix.
    """

    def __init__(
        self,
        loss: Any = None,
        check_interval: int | None = None,
        checkpoint_dir: str | Sequence[str] | None = None,
        prefix: str = "train_",
    ) -> None:
        self.loss = loss
        self.check_interval = None if check_interval is None else max(0, int(check_interval))
        if checkpoint_dir is None:
            checkpoint_dir = []
        self.checkpoint_dirs = [checkpoint_dir] if isinstance(checkpoint_dir, (str, os.PathLike)) else list(checkpoint_dir)
        self.prefix = prefix
        self._reset()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        _add_first(engine, Events.EPOCH_COMPLETED, self._epoch_completed)

    def _reset(self) -> None:
        self._count = 0
        self._sum: torch.Tensor | None = None
        self._term_keys: list[str] | None = None
        self._term_sum: torch.Tensor | None = None
        self._first_bad: torch.Tensor | None = None
        self._bad_terms: torch.Tensor | None = None
        self._bad_loss: torch.Tensor | None = None
        self._inputs: dict[int, tuple[list[str], dict[str, torch.Tensor]]] = {}

    def _epoch_started(self, engine: Engine) -> None:
        self._reset()

    def _terms(self) -> dict[str, torch.Tensor]:
        values = getattr(self.loss, "last_values", None) or {}
        return {k: v for k, v in values.items() if k != "total" and isinstance(v, torch.Tensor)}

    def _iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output
        loss = output.get("loss") if isinstance(output, Mapping) else output
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach().float().reshape(())
        terms = self._terms()
        if self._term_keys is None:
            self._term_keys = list(terms)
        stacked = torch.stack([terms[k].float().reshape(()) if k in terms else loss.new_tensor(float("nan")) for k in self._term_keys]) if self._term_keys else None
        # the iteration number inside the epoch, 1-based, kept on the loss's device
        it = torch.full((), engine.state.iteration, dtype=torch.int64, device=loss.device)
        bad = ~torch.isfinite(loss)
        if self._sum is None:
            self._sum = loss.clone()
            self._term_sum = None if stacked is None else stacked.clone()
            self._first_bad = torch.where(bad, it, torch.full_like(it, -1))
            self._bad_loss = loss.clone()
            self._bad_terms = None if stacked is None else stacked.clone()
        else:
            self._sum += loss
            if stacked is not None and self._term_sum is not None:
                self._term_sum += stacked
            new = bad & (self._first_bad < 0)
            self._first_bad = torch.where(new, it, self._first_bad)
            self._bad_loss = torch.where(new, loss, self._bad_loss)
            if stacked is not None and self._bad_terms is not None:
                self._bad_terms = torch.where(new, stacked, self._bad_terms)
        self._record_inputs(engine, output)
        self._count += 1
        interval = self.check_interval
        if interval is None:
            interval = 1 if loss.device.type == "cpu" else 50
            self.check_interval = interval
        if interval and self._count % interval == 0:
            self._check(engine)

    def _record_inputs(self, engine: Engine, output: Any) -> None:
        """Keep, for this iteration, the per-sample flags of non-finite inputs (device tensors) and the slice paths."""
        targets = output.get("label") if isinstance(output, Mapping) else None
        values = {"image": output.get("image") if isinstance(output, Mapping) else None}
        if isinstance(targets, Mapping):
            values.update({k: targets.get(k) for k in ("bounds", "spacing")})
            if values["image"] is None:
                values["image"] = targets.get("image")
        flags = {k: f for k, f in ((k, _bad_samples(k, v)) for k, v in values.items()) if f is not None}
        batch = engine.state.batch
        paths = batch.get("image_path") if isinstance(batch, Mapping) else None
        if flags:
            self._inputs[engine.state.iteration] = ([str(p) for p in paths] if isinstance(paths, (list, tuple)) else [], flags)

    def _bad_input_message(self, first: int) -> str | None:
        """What is wrong with the inputs of global iteration ``first`` (None: they are finite, or were not recorded)."""
        paths, flags = self._inputs.get(first, ([], {}))
        found = []
        for key, bad in flags.items():
            rows = [int(i) for i in torch.nonzero(bad.cpu()).flatten()]
            if not rows:
                continue
            what, where = _INPUT_CHECKS[key]
            names = [paths[i] if i < len(paths) else f"sample {i} of the batch" for i in rows]
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            found.append(f"{shown}: {what} ({where})")
        return "; ".join(found) or None

    def _check(self, engine: Engine) -> None:
        if self._first_bad is None:
            return
        first = int(self._first_bad)  # the one host synchronisation
        inputs, self._inputs = self._inputs, {}
        if first >= 0:
            self._inputs = {first: inputs[first]} if first in inputs else {}
        if _world() > 1:  # every rank stops together, or the others would wait for it forever
            import torch.distributed as dist

            flag = torch.tensor([1 if first >= 0 else 0], device=self._first_bad.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if int(flag) and first < 0:
                message = f"training stopped at epoch {engine.state.epoch}: another rank's loss is not finite (see its message)."
                logger.error(message)
                raise NonFiniteLossError(message)
        if first < 0:
            return
        epoch_length = engine.state.epoch_length or 0
        in_epoch = (first - 1) % epoch_length + 1 if epoch_length else first
        terms = ""
        if self._term_keys and self._bad_terms is not None:
            values = self._bad_terms.tolist()
            terms = "; unweighted terms at that iteration: " + ", ".join(f"{k}={v:.4g}" for k, v in zip(self._term_keys, values))
        saved = []
        for folder in self.checkpoint_dirs:
            saved += sorted(str(p) for p in Path(folder).glob("*.pt")) if Path(folder).is_dir() else []
        kept = f"the last good checkpoints are kept: {', '.join(saved)}" if saved else "no checkpoint had been saved yet"
        bad_input = self._bad_input_message(first)
        if bad_input is not None:
            message = (
                f"training stopped: the loss is {float(self._bad_loss):g} (not finite) at epoch {engine.state.epoch}, "
                f"iteration {in_epoch} of {epoch_length or '?'}, because the batch holds non-finite input: {bad_input}. "
                f"The dataset must be prepared again (python -m data_prep ...) or those slices fixed; {kept}."
            )
            logger.error(message)
            raise NonFiniteInputError(message)
        message = (
            f"training stopped: the loss is {float(self._bad_loss):g} (not finite) at epoch {engine.state.epoch}, "
            f"iteration {in_epoch} of {epoch_length or '?'} (global iteration {first}){terms}; {kept}. "
            "Lower the learning rate or the weight of the diverging term."
        )
        logger.error(message)
        raise NonFiniteLossError(message)

    def _epoch_completed(self, engine: Engine) -> None:
        self._check(engine)
        if self._sum is None or self._count == 0:
            return
        sums = [self._sum.reshape(1)] + ([self._term_sum.reshape(-1)] if self._term_sum is not None else [])
        totals = torch.cat(sums + [self._sum.new_tensor([float(self._count)])])
        if _world() > 1:  # the means over every rank's iterations
            import torch.distributed as dist

            dist.all_reduce(totals)
        values = (totals[:-1] / totals[-1]).tolist()  # one transfer per epoch
        engine.state.metrics[f"{self.prefix}loss"] = values[0]
        for key, value in zip(self._term_keys or [], values[1:]):
            engine.state.metrics[f"{self.prefix}{key}"] = value
        for key, module in getattr(self.loss, "term_modules", {}).items():
            if hasattr(module, "t") and _float(getattr(module, "t")) is not None:
                engine.state.metrics[f"{self.prefix}{key}_t"] = float(module.t)


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
        best = _float(getattr(state, "best_metric", None))
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
            _add_first(engine, Events.STARTED, self._load, save_dict)
        saver = AtomicCheckpointSaver(self.save_dir, save_dict, save_interval=self.interval, n_saved=self.n_saved, epoch_level=True)
        saver.attach(engine)

    def _load(self, engine: Engine, objects: Mapping[str, Any]) -> None:
        from ignite.handlers import Checkpoint

        path = Path(self.resume_from)
        if _rank() == 0:  # a run killed while saving leaves its temporary; it never was a checkpoint
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


class EpochSetter:
    """At the start of each epoch, set the epoch on the loss terms and the loader's sampler, and reseed.

    ``loss.set_epoch(epoch - 1)`` (0-based: the log-barrier's t is t0 during the first epoch, and
    right after resuming from a checkpoint); ``set_epoch(epoch)`` on the training loader's sampler
    or batch sampler when it has one and is not a ``DistributedSampler`` (MONAI already sets those).

    With ``seed``, torch's, NumPy's and Python's generators are reseeded from ``(seed, epoch,
    rank)``: what an epoch draws (dropout masks) then depends on the seed and the epoch only, not
    on what earlier epochs drew, so a run resumed from a checkpoint repeats an uninterrupted run.
    """

    def __init__(self, loss: Any = None, seed: int | None = None) -> None:
        self.loss = loss
        self.seed = None if seed is None else int(seed)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if self.seed is not None:
            import random

            import numpy as np

            from wss_monai.data.samplers import derive_seed

            seed = derive_seed(self.seed, engine.state.epoch, _rank(), 7)  # 7: this seed's domain
            torch.manual_seed(seed)
            np.random.seed(seed)
            random.seed(seed)
        if self.loss is not None and hasattr(self.loss, "set_epoch"):
            self.loss.set_epoch(engine.state.epoch - 1)
        loader = getattr(engine, "data_loader", None)
        from torch.utils.data.distributed import DistributedSampler

        for name in ("sampler", "batch_sampler"):
            sampler = getattr(loader, name, None)
            if sampler is not None and not isinstance(sampler, DistributedSampler) and callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(engine.state.epoch)


class ProgressBar:
    """ignite's tqdm progress bar over the iterations of each epoch, only where it can be seen.

    Args:
        enabled: ``"auto"`` (default: only when stderr is a terminal, on rank 0), True or False.
        persist: keep the finished bar of each epoch on screen.
    """

    def __init__(self, enabled: bool | str = "auto", persist: bool = False) -> None:
        self.enabled = as_bool(enabled, "progress", keep=("auto",))  # --progress false arrives as a string
        self.persist = as_bool(persist, "persist")

    def attach(self, engine: Engine) -> None:
        show = self.enabled is True or (self.enabled == "auto" and sys.stderr.isatty())
        if not show or _rank() != 0:
            return
        from ignite.handlers import ProgressBar as IgniteProgressBar

        IgniteProgressBar(persist=self.persist).attach(engine)  # no output_transform: no per-iteration .item()


class EpochSummary:
    """One log line per epoch: loss and terms, validation Dice and HD95, best so far, learning rate, time."""

    def __init__(self, evaluator: Engine | None = None, optimizer: torch.optim.Optimizer | None = None, name: str = "wss_monai.train") -> None:
        self.evaluator = evaluator
        self.optimizer = optimizer
        self.logger = logging.getLogger(name)
        self._t0 = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._completed)

    def _started(self, engine: Engine) -> None:
        self._t0 = time.perf_counter()

    def _completed(self, engine: Engine) -> None:
        if _rank() != 0:
            return
        m = engine.state.metrics
        parts = [f"epoch {engine.state.epoch}/{engine.state.max_epochs}"]
        if "train_loss" in m:
            terms = [f"{k[6:]} {m[k]:.4g}" for k in m if k.startswith("train_") and k != "train_loss" and _float(m[k]) is not None]
            parts.append(f"loss {m['train_loss']:.4g}" + (f" ({', '.join(terms)})" if terms else ""))
        ev = self.evaluator
        if ev is not None and getattr(ev.state, "epoch", None) == engine.state.epoch:
            vm = ev.state.metrics
            val = [f"{k[4:]} {vm[k]:.4f}" for k in ("val_dice_3d_mean", "val_dice_2d_nan_mean", "val_dice_2d_one_mean") if k in vm]
            if "val_hd95_mean" in vm:
                val.append(f"hd95 {vm['val_hd95_mean']:.2f} mm")
            parts.append("val " + ", ".join(val))
            best = _float(getattr(ev.state, "best_metric", None))
            if best is not None and getattr(ev.state, "best_metric_epoch", -1) > 0:
                parts.append(f"best {best:.4f} @ {ev.state.best_metric_epoch}")
        if self.optimizer is not None:
            parts.append(f"lr {self.optimizer.param_groups[0]['lr']:.3g}")
        parts.append(f"{time.perf_counter() - self._t0:.1f} s")
        self.logger.info(" | ".join(parts))


# --------------------------------------------------------------------------------------------
# MLflow


class MLflowTracker:
    """The MLflow run of a training: params, per-epoch metrics, artifacts and final status.

    - Trainer started: the run is created (:meth:`wss_monai.tracking.ResilientRun.start`) with the
      session's experiment and run name; params are the ~20 values runs are compared on
      (:meth:`~wss_monai.engine.session.TrainingSession.params` plus ``network`` and
      ``network_parameters``), the whole config is the artifact ``config.json``; tags
      ``regime``, ``seed``, ``bundle``, ``dataset``, ``dataset_fingerprint``, ``output_dir``; the
      prepared dataset is the run's dataset input (context ``training``, digest = its
      fingerprint); ``run.json`` is written to the output folder.
    - Each epoch: ``train_loss``, ``train_<term>``, ``lr``, the timing (``time_per_epoch_s``: the
      whole epoch, validation included; ``time_train_s`` and ``time_train_images``: the training
      iterations alone and the images they saw; ``ms_per_image`` and ``images_per_s`` from those)
      and, when validation ran that epoch, every ``val_*`` score
      (``val_dice_2d_{one,nan}_<class|mean>``, ``val_dice_3d_<class|mean>``,
      ``val_hd95_<class|mean>``) plus ``best_val_dice_3d_mean``; step = epoch.
    - Training completed: the PNGs ``plots/dice_curves.png`` and ``plots/overlay.png`` (sample
      validation predictions of the best checkpoint), the best checkpoint ``models/model.pt`` as
      an artifact and, with ``log_model``, the best network as the MLflow model ``model``
      (:meth:`wss_monai.tracking.TrackedRun.log_model`: ``pt2``, signature and input example of
      one slice, ``preprocessing.json`` inside; registered under ``session.register_model`` when
      set); status FINISHED. On an exception: the curves, status FAILED (KILLED for Ctrl+C), and
      the exception goes on.
    - Every epoch also rewrites ``history.json`` (the metrics of each epoch, for the curves) and
      ``run.json`` (run id, last epoch, best score) in the output folder.
    - Resumed (``session.resume_checkpoint``): the same MLflow run is reopened (status RUNNING
      again, tag ``resumed_from_epoch``), no params are logged again, and the history of the
      epochs up to the checkpoint is read back from ``history.json``.
    - A tracking store that does not answer, at the start or mid-run, never stops training: the
      run is a :class:`~wss_monai.tracking.ResilientRun`, which keeps what the store could not take
      in ``mlflow_fallback.jsonl`` in the output folder and warns with the command that sends it
      later (``python -m wss_monai.tracking sync --from <output_dir>``).

    Only rank 0 tracks. With ``session.log_mlflow`` False the files are still written.

    Args:
        session: the run's :class:`~wss_monai.engine.session.TrainingSession`.
        evaluator: the validation evaluator (its metrics are logged with the trainer's epoch).
        optimizer: logs the learning rate ``lr``.
        network: the trained network (overlay of the best checkpoint's predictions).
        overlay_loader: the validation loader the overlay samples come from.
        device: where the overlay predictions run.
        overlay_count: number of slices in the overlay figure.
        log_checkpoint: log the best checkpoint as an artifact.
        log_model: log the best network as an MLflow model (a few seconds on a CPU: the export
            traces the network once). Offline runs skip it with a note in their journal.
    """

    def __init__(
        self,
        session: Any,
        evaluator: Engine | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        network: torch.nn.Module | None = None,
        overlay_loader: Any = None,
        device: Any = None,
        overlay_count: int = 6,
        log_checkpoint: bool = True,
        log_model: bool = True,
    ) -> None:
        self.session = session
        self.evaluator = evaluator
        self.optimizer = optimizer
        self.network = network
        self.overlay_loader = overlay_loader
        self.device = device
        self.overlay_count = int(overlay_count)
        self.log_checkpoint = as_bool(log_checkpoint, "log_checkpoint")
        self.log_model = as_bool(log_model, "log_model")
        self.run = None
        self.model_uri: str | None = None
        self._epoch_t0 = self._last_iteration = 0.0
        self._images = 0
        self.history: dict[int, dict[str, float]] = {}
        self._finished = False

    # lifecycle -------------------------------------------------------------------------------

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)
        _add_first(engine, Events.EXCEPTION_RAISED, self._exception_raised)
        _shorten_engine_errors(engine)
        if self.evaluator is not None:
            _shorten_engine_errors(self.evaluator)

    @property
    def output_dir(self) -> Path:
        return Path(self.session.output_dir)

    def _info(self, **extra: Any) -> dict[str, Any]:
        s = self.session
        info = {
            "run_name": s.run_name,
            "run_id": getattr(self.run, "run_id", None),
            "experiment": s.experiment,
            "experiment_id": getattr(self.run, "experiment_id", None),
            "tracking_uri": s.tracking_uri if s.log_mlflow else None,
            "regime": s.spec.name,
            "bundle": s.bundle,
            "seed": s.seed,
            "dataset": s.dataset_name,
            "dataset_dir": s.dataset_dir,
            "output_dir": s.output_dir,
            "checkpoint": str(self.output_dir / BEST_CHECKPOINT),
        }
        if self.run is not None and getattr(self.run, "offline", False):
            info["tracking_fallback"] = str(self.run.journal.path)
        info.update(extra)
        return info

    def _started(self, engine: Engine) -> None:
        if _rank() != 0 or self.run is not None:
            return
        s = self.session
        resuming = bool(getattr(s, "resume_checkpoint", None))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if resuming:
            self.history = self._read_history(upto=int(s.resume_epoch))
        else:
            (self.output_dir / "config.json").write_text(json.dumps(s.full_config(), indent=2, default=str))
        if s.log_mlflow:
            from wss_monai import tracking

            tags = {"bundle": s.bundle or "", "dataset": s.dataset_name, "dataset_fingerprint": s.dataset_fingerprint,
                    "output_dir": s.output_dir}
            self.run = tracking.ResilientRun.start(
                s.experiment,
                s.spec.name,
                s.seed,
                tracking_uri=s.tracking_uri,
                run_name=s.run_name,
                config=None if resuming else s.full_config(),
                params=None if resuming else self._params(),
                tags=tags,
                fallback=self.output_dir / tracking.FALLBACK_NAME,
                resume=resuming,
                resume_run_id=getattr(s, "resume_run_id", None),
            )
            if resuming:
                self.run.set_tags({"resumed_from_epoch": s.resume_epoch})
            else:
                self.run.log_dataset(s.dataset_name, s.dataset_fingerprint, s.dataset_dir, context="training")
        extra = {"last_epoch": int(s.resume_epoch), **self._best()} if resuming else {}
        write_run_info(self.output_dir, self._info(status="RUNNING", **extra))

    def _params(self) -> dict[str, Any]:
        """The session's params plus the network's class and its number of weights (the session does not hold the network)."""
        params = dict(self.session.params())
        if self.network is not None:
            net = unwrap(self.network)
            params["network"] = type(net).__name__
            params["network_parameters"] = sum(p.numel() for p in net.parameters())
        return params

    def _epoch_started(self, engine: Engine) -> None:
        self._epoch_t0 = self._last_iteration = time.perf_counter()
        self._images = 0

    def _iteration_completed(self, engine: Engine) -> None:
        """Note when the epoch's last iteration ended and how many images it has seen (no device synchronisation)."""
        self._last_iteration = time.perf_counter()
        batch = engine.state.batch
        image = batch.get("image") if isinstance(batch, Mapping) else None
        self._images += int(image.shape[0]) if hasattr(image, "shape") and len(image.shape) else 0

    def _timing(self) -> dict[str, float]:
        """This epoch's time metrics: what every run logs, so runs compare on speed as they do on Dice.

        ``time_train_s`` runs from the epoch's start to its last iteration (loading, forward,
        loss, backward, step); ``time_per_epoch_s`` to now, the validation that ran at this
        epoch's end included (this handler comes after the validation handler). The iterations
        are not synchronised with the device: on a GPU the last one may still be running, an error
        of one iteration per epoch. Under ``torch.distributed`` the images are rank 0's.
        """
        train_s = self._last_iteration - self._epoch_t0
        out = {"time_per_epoch_s": time.perf_counter() - self._epoch_t0, "time_train_s": train_s,
               "time_train_images": float(self._images)}
        if self._images > 0 and train_s > 0:
            out["ms_per_image"] = 1000.0 * train_s / self._images
            out["images_per_s"] = self._images / train_s
        return out

    def _read_history(self, upto: int) -> dict[int, dict[str, float]]:
        """The per-epoch metrics of ``history.json``, epochs 1..``upto`` (those the checkpoint covers)."""
        try:
            raw = json.loads((self.output_dir / HISTORY).read_text())
            return {int(k): dict(v) for k, v in raw.items() if int(k) <= upto}
        except (OSError, ValueError, TypeError, AttributeError):
            logger.warning(f"no readable {HISTORY} in {self.output_dir}: the curves start at the resumed epoch")
            return {}

    def _write_history(self) -> None:
        path = self.output_dir / HISTORY
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({str(k): v for k, v in sorted(self.history.items())}))
        os.replace(tmp, path)

    def _epoch_completed(self, engine: Engine) -> None:
        if _rank() != 0:
            return
        epoch = engine.state.epoch
        metrics: dict[str, float] = {}
        for key, value in engine.state.metrics.items():
            if key.startswith("train_") and _float(value) is not None:
                metrics[key] = _float(value)
        if self.optimizer is not None:
            metrics["lr"] = float(self.optimizer.param_groups[0]["lr"])
        metrics.update(self._timing())
        ev = self.evaluator
        if ev is not None and getattr(ev.state, "epoch", None) == epoch:
            for key, value in ev.state.metrics.items():
                if key.startswith("val_") and _float(value) is not None:
                    metrics[key] = _float(value)
            best = _float(getattr(ev.state, "best_metric", None))
            if best is not None and getattr(ev.state, "best_metric_epoch", -1) > 0:
                metrics["best_val_dice_3d_mean"] = best
        self.history[epoch] = metrics
        self._write_history()
        if self.run is not None:
            self.run.log_metrics(metrics, epoch=epoch)
        write_run_info(self.output_dir, self._info(status="RUNNING", last_epoch=epoch, **self._best()))

    def _plots(self, with_overlay: bool) -> list[Path]:
        from wss_monai.engine import plots

        written = []
        folder = self.output_dir / "plots"
        if self.history:
            try:
                written.append(Path(plots.plot_dice_curves(self.history, folder / "dice_curves.png", title=self.session.run_name)))
            except Exception as err:  # a plot must never break training
                logger.warning(f"could not draw the Dice curves: {err}")
        if with_overlay and self.network is not None and self.overlay_loader is not None:
            try:
                written.append(Path(self._overlay(folder / "overlay.png")))
            except Exception as err:
                logger.warning(f"could not draw the prediction overlay: {err}")
        return written

    @torch.no_grad()
    def _overlay(self, path: Path) -> str:
        from wss_monai.engine import plots

        net = copy.deepcopy(unwrap(self.network))
        ckpt = self.output_dir / BEST_CHECKPOINT
        title = f"{self.session.run_name}: last epoch"
        if ckpt.is_file():
            net.load_state_dict(_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)))
            title = f"{self.session.run_name}: best checkpoint"
        device = self.device or next(net.parameters()).device
        net.to(device).eval()
        batches, seen = [], 0
        for batch in self.overlay_loader:
            batches.append(batch)
            seen += int(batch["image"].shape[0])
            if seen >= max(64, 4 * self.overlay_count):
                break
        samples = plots.select_overlay_samples(batches, self.overlay_count)
        images = torch.stack([torch.as_tensor(s["image"]) for s in samples])[:, None].float().to(device)
        preds = net(images).argmax(1).cpu().numpy()
        return plots.plot_overlays(samples, list(preds), path, title=title, num_classes=self.session.num_classes)

    def _log_files(self, paths: Sequence[Path]) -> None:
        if self.run is None:
            return
        for path in paths:
            try:
                self.run.log_artifacts(path, artifact_path="plots")
            except Exception as err:
                logger.warning(f"could not log {path} to MLflow: {err}")
        if self.log_checkpoint and (self.output_dir / BEST_CHECKPOINT).is_file():
            try:
                self.run.log_artifacts(self.output_dir / BEST_CHECKPOINT, artifact_path="models")
            except Exception as err:
                logger.warning(f"could not log the checkpoint to MLflow: {err}")

    def _model_example(self, net: torch.nn.Module) -> Any:
        """One validation slice as the model's input example, ``(1, 1, H, W)`` float32; zeros of the dataset's size without a loader."""
        import numpy as np

        if self.overlay_loader is not None:
            try:
                image = torch.as_tensor(next(iter(self.overlay_loader))["image"])
                return image.reshape(-1, *image.shape[-2:])[:1, None].float().cpu().numpy()
            except Exception:  # an example is only an example: fall back to zeros of the right size
                pass
        size = tuple(self.session.image_size or (64, 64))
        return np.zeros((1, getattr(net, "in_channels", 1), *size), dtype=np.float32)

    def _log_model(self) -> None:
        """Log the best checkpoint's network as the run's MLflow model (class docstring); never fails the run.

        Nothing without a best checkpoint. The network is a copy on the CPU (a model that loads
        anywhere), with the model card ``preprocessing.json`` inside. The seconds it took are the
        metric ``time_log_model_s``.
        """
        ckpt = self.output_dir / BEST_CHECKPOINT
        if self.run is None or not self.log_model or self.network is None or not ckpt.is_file():
            return
        from wss_monai.engine.session import MODEL_CARD

        start = time.perf_counter()
        try:
            net = copy.deepcopy(unwrap(self.network)).cpu()
            net.load_state_dict(_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)))
            card = self.output_dir / MODEL_CARD
            self.model_uri = self.run.log_model(
                net.eval(), self._model_example(net), name="model", extra_files=[card] if card.is_file() else [],
                registered_model_name=getattr(self.session, "register_model", None),
                fallback_note=f"the best checkpoint is {ckpt}",
            )
        except Exception as err:  # the checkpoint is there: a model that cannot be logged is a warning
            logger.warning(f"could not log the best network as an MLflow model: {err}")
            return
        if self.model_uri is not None:
            seconds = time.perf_counter() - start
            logger.info(f"best network logged as MLflow model {self.model_uri} ({seconds:.1f} s)")
            self.run.log_metrics({"time_log_model_s": seconds}, epoch=int(self._best().get("best_epoch") or 0))

    def _best(self) -> dict[str, Any]:
        ev = self.evaluator
        best = _float(getattr(getattr(ev, "state", None), "best_metric", None)) if ev is not None else None
        epoch = getattr(getattr(ev, "state", None), "best_metric_epoch", -1) if ev is not None else -1
        return {"best_metric": best, "best_epoch": epoch} if best is not None and epoch > 0 else {}

    def _completed(self, engine: Engine) -> None:
        if _rank() != 0 or self._finished:
            return
        self._finished = True
        written = self._plots(with_overlay=True)
        self._log_files(written)
        self._log_model()
        best = self._best()
        if self.run is not None:
            if best:
                self.run.set_tags({"best_val_dice_3d_mean": f"{best['best_metric']:.6f}", "best_epoch": best["best_epoch"]})
            self.run.finish("FINISHED")
        write_run_info(self.output_dir, self._info(status="FINISHED", last_epoch=engine.state.epoch, **best))
        self._remind_sync()

    def _remind_sync(self) -> None:
        if self.run is not None and getattr(self.run, "offline", False):
            from wss_monai import tracking

            logger.warning(
                f"the MLflow store {self.session.tracking_uri} was unreachable ({self.run.offline_reason}): this run's "
                f"tracking is kept in {self.run.journal.path}; when the store answers, send it with: "
                f"{tracking.sync_command(self.run.journal.path)}"
            )

    def _exception_raised(self, engine: Engine, error: BaseException) -> None:
        """Record the run as FAILED (KILLED for Ctrl+C), then end it the way the error deserves.

        Ctrl+C: one line and exit 130. An error the user's data caused
        (:func:`~wss_monai.engine.errors.user_data_error` gives the rule: a slice file that
        became unreadable, a file of the wrong shape, NaN in a slice): its one-line cause and
        exit 2. Anything else is a bug of ours and goes on with its traceback.
        """
        user_message = None if isinstance(error, KeyboardInterrupt) else user_data_error(error)
        if _rank() == 0 and not self._finished:
            self._finished = True
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            recorded = user_message if user_message is not None else str(error)
            try:
                self._log_files(self._plots(with_overlay=False))
                if self.run is not None:
                    self.run.set_tags({"error": recorded[:5000]})
                    self.run.finish(status)
                write_run_info(self.output_dir, self._info(status=status, error=recorded, **self._best()))
                self._remind_sync()
            except Exception as err:  # never hide the original error
                logger.warning(f"could not record the failed run in MLflow: {err}")
            if isinstance(error, KeyboardInterrupt):  # Ctrl+C: a user's choice, not a crash to trace
                print(f"interrupted at epoch {engine.state.epoch}: run {self.session.run_name!r} is marked KILLED; "
                      f"continue it with the same command and --resume true (output in {self.output_dir})",
                      file=sys.stderr, flush=True)
                raise SystemExit(130) from None
        _end_for_user(error, user_message)


def _end_for_user(error: BaseException, user_message: str | None) -> None:
    """Re-raise ``error``, or, for a user data error, end with its one line (exit 2; :func:`fail` prints it once)."""
    if user_message is not None and not isinstance(error, SystemExit):
        fail(user_message)
    raise error


class _OneLineEngineErrors(logging.Filter):
    """Keep ignite's "... terminating due to exception: <error>" log line to one line.

    For an error from a DataLoader worker that message is the worker's whole traceback as text,
    which would put a traceback on the screen even when the run ends with a one-line user error;
    the line keeps the worker's original message instead. A genuine bug still prints its own
    traceback when the run ends.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "terminating due to exception" in message and "\n" in message:
            head, _, error = message.partition("exception: ")
            lines = [line for line in error.splitlines() if line.strip()]
            if "Original Traceback" in error and lines:
                record.msg, record.args = f"{head}exception: {lines[0]} {lines[-1].strip()}", ()
            else:
                record.msg, record.args = f"{head}exception: {lines[0] if lines else ''}", ()
        return True


def _shorten_engine_errors(engine: Engine) -> None:
    log = getattr(engine, "logger", None)
    if isinstance(log, logging.Logger) and not any(isinstance(f, _OneLineEngineErrors) for f in log.filters):
        log.addFilter(_OneLineEngineErrors())


# --------------------------------------------------------------------------------------------
# evaluation


def _state_dict(obj: Any) -> Mapping[str, torch.Tensor]:
    """The network weights in a checkpoint: a state_dict, or the ``model``/``network`` entry of a resume checkpoint."""
    if isinstance(obj, Mapping):
        for key in ("model", "network", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a state_dict, got {type(obj).__name__}")
    if obj and all(str(k).startswith("module.") for k in obj):  # saved from DistributedDataParallel
        obj = {str(k)[len("module."):]: v for k, v in obj.items()}
    return obj


def load_network(network: torch.nn.Module, ckpt_path: str | os.PathLike, device: Any = None, strict: bool = True) -> torch.nn.Module:
    """``network`` with the weights of ``ckpt_path`` (a state_dict, read with ``weights_only=True``), in eval mode.

    A file that is not a weights file, or whose weights do not fit the network (another
    ``network_def``), ends the run with one line and exit code 2 (:mod:`wss_monai.engine.weights`).
    """
    from wss_monai.engine.weights import fit_weights, read_weights

    fit_weights(network, read_weights(ckpt_path), ckpt_path, strict=strict,
                hint="Use the network_def of the training run (its config.json), e.g. --network_def#_target_ wss_monai.networks.ResUNet.")
    if device is not None:
        network = network.to(device)
    return network.eval()


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
        _add_first(engine, Events.EXCEPTION_RAISED, self._exception_raised)
        _shorten_engine_errors(engine)

    def _exception_raised(self, engine: Engine, error: BaseException) -> None:
        """A slice file that cannot be read during the evaluation: its one line, exit 2 (rule: :func:`user_data_error`); a bug traces."""
        _end_for_user(error, None if isinstance(error, KeyboardInterrupt) else user_data_error(error))

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
        if _rank() != 0:
            return
        s = self.session
        summary = dict(self.metric.last_summary or {})
        self.summary = summary
        folder = Path(s.results_dir)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {"split": s.split, "dataset_dir": s.dataset_dir, "checkpoint": s.ckpt_path, "metrics": summary}
        for name, text in (("metrics.json", json.dumps(payload, indent=2)), ("per_volume.csv", self._per_volume_csv())):
            tmp = folder / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, folder / name)
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
