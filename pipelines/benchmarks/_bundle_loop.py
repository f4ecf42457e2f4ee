"""The bundle's training loop as the benchmarks drive it: a ``train.json`` workflow with validation off, and a per-epoch clock.

Shared by part 1 (bundle vs plain loop) and part 3 (fast vs old path) of ``python -m pipelines.benchmarks training``.
"""

from __future__ import annotations

import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class EpochClock:
    """Ignite handler: per epoch, seconds to the last iteration, seconds with the end-of-epoch handlers, images."""

    def __init__(self) -> None:
        self.train_s: list[float] = []
        self.epoch_s: list[float] = []
        self.images: list[int] = []

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._end)  # attached last: runs after the bundle's handlers

    def _start(self, engine) -> None:
        self._t0 = self._last = time.perf_counter()
        self._n = 0

    def _iteration(self, engine) -> None:
        self._last = time.perf_counter()
        self._n += int(engine.state.batch["image"].shape[0])

    def _end(self, engine) -> None:
        self.train_s.append(self._last - self._t0)
        self.epoch_s.append(time.perf_counter() - self._t0)
        self.images.append(self._n)


def bundle_workflow(prepared: Path, work: Path, regime: str, batch_size: int, **overrides):
    """The bundle's ``train.json`` built and initialised for one epoch at a time (validation off, MLflow in ``work``); ``overrides`` are more keys."""
    from monai.bundle import ConfigWorkflow

    configs = REPO / "bundles" / "wss_segmentation" / "configs"
    workflow = ConfigWorkflow(
        config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"), logging_file=False,
        workflow_type="train", dataset_dir=str(prepared), regime=regime, epochs=1, batch_size=batch_size,
        val_interval=10**9, progress=False, num_workers=0, augment=False, seed=0,
        tracking_uri=f"sqlite:///{work / 'mlruns.db'}", run_name="benchmark-training", output_dir=str(work / "run"), **overrides,
    )
    workflow.initialize()
    return workflow


def quiet_phantom(work: Path, cases: int, size: int) -> Path:
    """The benchmarks' prepared phantom (erosion weak labels) in ``work``, with the engine's logs at WARNING."""
    import logging

    from pipelines.phantom_data import prepare_phantom

    prepared = prepare_phantom(work, cases=cases, size=size, inplane=max(64, size), frames=4, log=None,
                               prepare_args=["--weak", "erosion"])
    logging.getLogger("wss_monai").setLevel(logging.WARNING)
    logging.getLogger("ignite").setLevel(logging.WARNING)
    return prepared
