"""Telling each epoch to what depends on it: the loss terms' schedules, the loader's sampler, the random generators."""

from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Engine, Events

from wss_monai.engine.distributed import current_rank


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

            seed = derive_seed(self.seed, engine.state.epoch, current_rank(), 7)  # 7: this seed's domain
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
