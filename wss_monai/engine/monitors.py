"""Watching a training as it runs: the loss and its terms (a NaN/Inf guard), a progress bar, one line per epoch.

- :class:`TrainLossMonitor` (trainer): sums the loss and each loss term on the device (no host
  synchronisation per iteration), stops training with :class:`NonFiniteLossError` naming the epoch
  and iteration where the loss first became NaN or infinite, and puts ``train_loss`` and
  ``train_<term>`` into ``engine.state.metrics`` at the end of each epoch. It runs first at the end
  of an epoch, so a diverged network is never validated or checkpointed: the last good checkpoint
  stays.
- :class:`ProgressBar` (trainer): ignite's tqdm bar, only on an interactive terminal.
- :class:`EpochSummary` (trainer): one log line per epoch.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from wss_monai.engine.distributed import current_rank, world_size
from wss_monai.engine.errors import UserDataError, as_bool
from wss_monai.engine.handler_tools import add_first, as_float

logger = logging.getLogger("wss_monai.engine")


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
    record is read (one host synchronisation) at the end of each epoch (and every
    ``check_interval`` iterations when set); a non-finite loss stops training with :class:`NonFiniteLossError`, whose
    message gives the epoch, the iteration, the term values of that iteration and the last good
    checkpoint.

    A NaN voxel in a slice file gives a NaN loss too, and lowering the learning rate would not
    help: each iteration also records, on the device and without synchronising, which samples of
    the batch have a non-finite image (or NaN bounds, a non-finite spacing), with the batch's
    ``image_path`` list. When the loss of an iteration is not finite and one of its samples is
    flagged, training stops with :class:`NonFiniteInputError` instead, naming those slice files
    and asking for the dataset to be prepared again; the run ends with that one line (exit 2).
    Only the iterations since the last check are kept (at most an epoch's: a few booleans per sample).

    Metrics set at the end of each epoch: ``train_loss`` and ``train_<term>`` (the means over the
    epoch's iterations, of all ranks under ``torch.distributed``); terms with a schedule report it
    too (``train_log_barrier_t``). Under ``torch.distributed`` the check is collective: every rank
    stops at the same iteration.

    Args:
        loss: the loss whose terms are logged (optional; without it only ``train_loss``).
        check_interval: iterations between checks; None (default) = at the end of each epoch only.
            Each check reads a value back from the device and costs Python work per iteration
            (about 1% of a 48 x 48 step on a CPU); a NaN met mid-epoch wastes at most the rest of
            that epoch, and the message still names the first bad iteration and its inputs, and
            the checkpoint before it is kept. Set it to stop sooner (1: at the bad iteration).
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
        add_first(engine, Events.EPOCH_COMPLETED, self._epoch_completed)

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
        if world_size() > 1:  # every rank stops together, or the others would wait for it forever
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
        if world_size() > 1:  # the means over every rank's iterations
            import torch.distributed as dist

            dist.all_reduce(totals)
        values = (totals[:-1] / totals[-1]).tolist()  # one transfer per epoch
        engine.state.metrics[f"{self.prefix}loss"] = values[0]
        for key, value in zip(self._term_keys or [], values[1:]):
            engine.state.metrics[f"{self.prefix}{key}"] = value
        for key, module in getattr(self.loss, "term_modules", {}).items():
            if hasattr(module, "t") and as_float(getattr(module, "t")) is not None:
                engine.state.metrics[f"{self.prefix}{key}_t"] = float(module.t)


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
        if not show or current_rank() != 0:
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
        if current_rank() != 0:
            return
        m = engine.state.metrics
        parts = [f"epoch {engine.state.epoch}/{engine.state.max_epochs}"]
        if "train_loss" in m:
            terms = [f"{k[6:]} {m[k]:.4g}" for k in m if k.startswith("train_") and k != "train_loss" and as_float(m[k]) is not None]
            parts.append(f"loss {m['train_loss']:.4g}" + (f" ({', '.join(terms)})" if terms else ""))
        ev = self.evaluator
        if ev is not None and getattr(ev.state, "epoch", None) == engine.state.epoch:
            vm = ev.state.metrics
            val = [f"{k[4:]} {vm[k]:.4f}" for k in ("val_dice_3d_mean", "val_dice_2d_nan_mean", "val_dice_2d_one_mean") if k in vm]
            if "val_hd95_mean" in vm:
                val.append(f"hd95 {vm['val_hd95_mean']:.2f} mm")
            parts.append("val " + ", ".join(val))
            best = as_float(getattr(ev.state, "best_metric", None))
            if best is not None and getattr(ev.state, "best_metric_epoch", -1) > 0:
                parts.append(f"best {best:.4f} @ {ev.state.best_metric_epoch}")
        if self.optimizer is not None:
            parts.append(f"lr {self.optimizer.param_groups[0]['lr']:.3g}")
        parts.append(f"{time.perf_counter() - self._t0:.1f} s")
        self.logger.info(" | ".join(parts))
