"""Train training regimes as real bundle runs and compare them: ``python -m pipelines.regimes --out DIR``.

Each regime runs through its MONAI bundle (``python -m monai.bundle run --config_file
"['bundles/<bundle>/configs/train.json', 'DIR/configs/time_budget.json']" ...``) in its own process, within a wall-clock budget; the
scores are then read back from MLflow into one table (Markdown and CSV), in the order of the
papers' Table 1::

    python -m pipelines.regimes --out regimes_out --cases 24 --size 64 --minutes-per-regime 5
    python -m pipelines.regimes --out regimes_out --prepared prepared/acdc-lv --regimes individual,full

Library use (the demo and ``pipelines.reproduce`` reuse it)::

    from pipelines.regimes import run_regimes
    table = run_regimes("prepared/acdc-lv", ["partial", "individual", "full"], out_dir="runs", minutes_per_regime=2,
                        parallel=2)   # two bundle processes at once, one torch thread each

``parallel=N`` (``--parallel N``) runs up to N bundle processes at once (:func:`run_many`); on a
CPU give each one torch thread and N = the number of cores. Every run dies with the process
that started it (Linux ``PR_SET_PDEATHSIG``), so a killed pipeline leaves no training behind.

The wall-clock budget: the bundle's own ``train.json`` plus a small overlay config (written to
``DIR/configs/time_budget.json``) that appends one handler, :class:`TimeBudget`, to the trainer's
handler list. It measures each epoch and ends training
at the end of the last epoch that fits before the deadline, so every regime gets the same wall
time, start-up included; the number of epochs each regime reached is in the table. ``--epochs``
caps the epochs as well.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.folders import output_problem

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = [
    "DEFAULT_REGIMES",
    "TABLE1_ORDER",
    "TimeBudget",
    "bundle_config",
    "prepare_phantom",
    "run_regime",
    "run_regimes",
    "read_results",
    "to_markdown",
    "main",
]

REPO = Path(__file__).resolve().parents[1]

DEFAULT_REGIMES = ("partial", "tags", "common", "individual", "volume3d", "full", "full_3", "hybrid_3")
"""The regimes of the papers' Tables 1 and 2 that run in minutes on a CPU."""

TABLE1_ORDER = ("partial", "lagrangian_tags", "tags", "lagrangian_common", "common", "upper",
                "lagrangian_individual", "individual", "logbarrier_individual", "volume3d", "full")
"""MedIA 2019 Table 1 order (expected Dice increasing down to ``full``); other regimes follow."""

DEFAULT_FOV_MM = 144.0
"""Field of view (mm) the phantom is cropped to around the heart: 3 mm pixels at 48 x 48, 1.5 mm at 96."""

CPU_LEARNING_RATE = 1e-3
"""Adam learning rate of the short CPU runs (batch 8): the papers' 5e-4 is for batch 1 and 200 epochs.

Measured on the 48-patient ACDC-layout phantom at 48 x 48, ``individual``, 2.5 CPU-minutes, best
validation 3D Dice: 0.826 with 2e-3, 0.846 with 1e-3; at 64 x 64 in 5 minutes (24 patients,
lambda 1e-2): 0.678 with 5e-4, 0.782 with 2e-3, 0.690 with 5e-3. A cosine decay to the deadline
did not help (0.811 with 2e-3)."""

MAX_EPOCHS = 1000
"""Epoch cap when only a time budget is given (the budget ends training long before)."""

FINALIZE_RESERVE_S = 6.0
"""Seconds kept for what a run does after its last epoch (overlay figure, artifacts, exit)."""

TIME_BUDGET_CONFIG: dict[str, Any] = {
    "time_budget_deadline": None,
    "time_budget_reserve": FINALIZE_RESERVE_S,
    "time_budget_tags": None,
    "log_model": False,  # the export takes seconds the wall-clock budget keeps for training; the checkpoint is kept
    "+train#handlers": [
        {
            "_target_": "pipelines.regimes.TimeBudget",
            "deadline": "@time_budget_deadline",
            "reserve_s": "@time_budget_reserve",
            "output_dir": "$@session.output_dir",
            "tags": "@time_budget_tags",
        }
    ],
}
"""Overlay merged after a bundle's ``train.json`` (MONAI's ``+key`` appends to the handler list)."""

COLUMNS = [
    ("regime", "regime"),
    ("bundle", "bundle"),
    ("epochs", "epochs"),
    ("best_epoch", "best epoch"),
    ("dice_3d", "val 3D Dice"),
    ("dice_2d_one", "2D Dice (empty=1)"),
    ("dice_2d_nan", "2D Dice (empty skipped)"),
    ("hd95_mm", "HD95 mm"),
    ("train_s", "train s"),
    ("wall_s", "wall s"),
    ("ms_per_image", "ms/image"),
    ("status", "status"),
]
"""(DataFrame column, table header) of the comparison table, in order."""

LEGEND = (
    "Scores are those of the best epoch by validation 3D Dice (the checkpoint each bundle keeps); 2D Dice is the "
    "mean over validation slices with an empty-vs-empty slice scored 1, or left out; HD95 in mm (3D, per volume). "
    "'train s' sums the epochs' training time (loading, forward, loss, backward, step; validation excluded); "
    "'ms/image' divides it by the training images seen; 'wall s' is the whole bundle process, start-up included."
)


# --------------------------------------------------------------------------------------------
# the handler the overlay config adds to a bundle's trainer


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

    def __init__(self, deadline: float | None = None, reserve_s: float = FINALIZE_RESERVE_S, output_dir: str | None = None,
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


# --------------------------------------------------------------------------------------------
# data


def prepare_phantom(out_dir: str | os.PathLike, *, cases: int = 24, size: int = 64, seed: int = 0,
                    inplane: int | None = None, frames: int | None = 10, fov_mm: float | None = DEFAULT_FOV_MM,
                    prepare_args: Sequence[str] = (), log: Callable[[str], None] | None = print) -> Path:
    """Generate an ACDC-layout phantom in ``out_dir/raw_acdc`` and prepare it into ``out_dir/prepared_acdc``.

    Args:
        cases: phantom patients (3/4 training, 1/4 validation, split by patient).
        size: prepared slice size (pixels, square).
        seed: seed of the phantom and of the preparation (split, random weak labels).
        inplane: raw in-plane size in voxels (None: the real ACDC sizes, 154-256 voxels of
            1.3-1.8 mm; a small value writes faster, noisier files since the noise is not averaged
            by the resampling to ``size``).
        frames: cine frames per patient (only ED and ES are used; fewer frames write faster).
        fov_mm: field of view kept around the image centre, where the heart is (``--resize
            pad-crop`` with pixels of ``fov_mm / size`` mm); None: the papers' plain resize of the
            whole image (``stretch``), where the LV is small at low ``size``.
        prepare_args: extra ``python -m data_prep acdc`` options.
        log: called with one line at the end (None: quiet).

    An existing prepared folder is reused as is. Returns the prepared folder.
    """
    from data_prep.cli import main as data_prep_main

    out = Path(out_dir)
    raw, prepared = out / "raw_acdc", out / "prepared_acdc"
    if (prepared / "dataset.json").is_file():
        if log:
            log(f"reusing the prepared dataset {prepared}")
        return prepared
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    start = time.perf_counter()
    sizes = (["--inplane", str(inplane)] if inplane else []) + (["--frames", str(frames)] if frames else [])
    geometry = ["--resize", "pad-crop", "--inplane-spacing", f"{float(fov_mm) / size:g}"] if fov_mm else []
    steps = [
        ["phantom", "acdc", "--out", str(raw), "--cases", str(cases), "--seed", str(seed), "--overwrite", *sizes],
        ["acdc", "--src", str(raw), "--out", str(prepared), "--size", str(size), "--seed", str(seed), "--overwrite",
         *geometry, *prepare_args],
    ]
    with open(logs / "prepare.log", "w") as handle:
        for argv in steps:
            with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
                code = data_prep_main(argv)
            if code:
                raise RuntimeError(f"python -m data_prep {' '.join(argv)} exited with {code} (see {logs / 'prepare.log'})")
    if log:
        where = f"the central {fov_mm:g} mm" if fov_mm else "the whole image"
        log(f"phantom: {cases} ACDC-layout patients, {where} prepared at {size} x {size}, in "
            f"{time.perf_counter() - start:.0f} s: {prepared}")
    return prepared


# --------------------------------------------------------------------------------------------
# running bundles


def bundle_config(regime: str) -> Path:
    """``bundles/wss_segmentation/configs/train.json``, the bundle that runs every regime (:mod:`wss_monai.regimes`)."""
    from wss_monai.regimes import get_regime

    return REPO / "bundles" / get_regime(regime).bundle / "configs" / "train.json"


def _write_overlay(out_dir: Path) -> Path:
    path = out_dir / "configs" / "time_budget.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(TIME_BUDGET_CONFIG, indent=2) + "\n"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


_INTERPRETED = ("$", "@", "%")
"""First characters that make MONAI's config parser treat a string as code, a reference or a macro."""
_REWRITTEN = "#"
"""MONAI's parser rewrites this (its old id separator) to ``::`` anywhere in a string value."""


def inert(value: Any) -> Any:
    """``value`` as a bundle config value that MONAI's parser reads as plain data.

    A string starting with ``$`` is evaluated as Python by ``monai.bundle``, ``@`` and ``%`` are
    followed as references and macros, and a ``#`` anywhere becomes ``::``. Such a string is replaced by an expression of ours that
    rebuilds it from hexadecimal (so no character of the user's text reaches the evaluator, and
    no ``@`` inside it is taken for a reference); lists and dicts are made inert item by item.
    """
    if isinstance(value, str):
        if value.startswith(_INTERPRETED) or _REWRITTEN in value:
            return f"$bytes.fromhex('{value.encode('utf-8').hex()}').decode('utf-8')"
        return value
    if isinstance(value, Mapping):
        return {str(k): inert(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [inert(v) for v in value]
    return value


def write_values_overlay(values: Mapping[str, Any], path: Path) -> Path:
    """Write the values forwarded to one bundle run as a config overlay file (JSON, every value inert).

    Values travel in a file rather than as ``--key value`` arguments because ``monai.bundle run``
    hands command-line values to fire, which parses them as Python literals (``1e3`` becomes a
    number, ``[x]`` a list) before the config parser evaluates those starting with ``$``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({key: inert(value) for key, value in values.items() if value is not None}, indent=2) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


KILL_GRACE_S = 120.0
"""A run still alive this long after its budget is killed (its whole process group)."""

STOP_GRACE_S = 15.0
"""On Ctrl+C, seconds the runs get to record themselves as KILLED in MLflow before SIGKILL."""


def _prctl():
    """libc's ``prctl`` looked up once in the parent (nothing is loaded between fork and exec)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _die_with_parent(prctl, parent: int) -> Callable[[], None] | None:
    """``preexec_fn`` asking the kernel to SIGKILL the child when this process dies (Linux).

    A pipeline killed with SIGKILL cannot stop its runs; left alone they would go on training
    and finish in MLflow after the rerun started them again (two FINISHED runs for one key).
    """
    if prctl is None:
        return None

    def preexec() -> None:
        prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return preexec


class RegimeProcess:
    """One regime trained by ``python -m monai.bundle run`` in a child process (started at once).

    The child gets its own process group (so it and anything it starts can be stopped together)
    and dies with this process (Linux ``PR_SET_PDEATHSIG``). Call :meth:`poll` until it returns
    a code, then :meth:`result`; :func:`run_regime` does both.

    Args: as :func:`run_regime`.
    """

    def __init__(
        self,
        prepared_dir: str | os.PathLike,
        regime: str,
        *,
        out_dir: str | os.PathLike,
        tracking_uri: str,
        run_name: str,
        seconds: float | None = 300.0,
        epochs: int | None = None,
        overrides: Mapping[str, Any] | None = None,
        threads: int | None = None,
        tags: Mapping[str, Any] | None = None,
        experiment: str | None = None,
    ) -> None:
        out = Path(out_dir).resolve()
        overlay = _write_overlay(out)
        config = bundle_config(regime)
        self.regime, self.run_name, self.seconds = regime, run_name, seconds
        self.bundle = config.parent.parent.name
        self.run_dir = out / "runs" / run_name
        self.log_path = out / "logs" / f"{run_name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.start = time.time()
        values: dict[str, Any] = {
            "dataset_dir": str(Path(prepared_dir).resolve()),
            "regime": regime,
            "epochs": int(epochs) if epochs else (MAX_EPOCHS if seconds else 1),
            "tracking_uri": tracking_uri,
            "experiment_name": experiment,
            "run_name": run_name,
            "output_dir": str(self.run_dir),
            "progress": False,
            "time_budget_deadline": (self.start + float(seconds)) if seconds else None,
            "time_budget_tags": json.dumps({str(k): str(v) for k, v in tags.items()}) if tags else None,
            **dict(overrides or {}),
        }
        forwarded = write_values_overlay(values, out / "configs" / "runs" / f"{run_name}.json")
        cmd = [sys.executable, "-m", "monai.bundle", "run",
               "--config_file", json.dumps([str(config), str(overlay), str(forwarded)]),
               "--meta_file", str(config.parent / "metadata.json"), "--logging_file", str(config.parent / "logging.conf")]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
        if threads:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        self._log = open(self.log_path, "w")
        self._log.write(" ".join(cmd) + "\n" + forwarded.read_text(encoding="utf-8") + "\n")
        self._log.flush()
        try:
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True, preexec_fn=_die_with_parent(_PRCTL, os.getpid()))
        except BaseException:
            self._log.close()
            raise
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code once the run has ended, else None; kills a run far past its budget (code -9)."""
        if self.returncode is None:
            code = self.proc.poll()
            if code is None and self.seconds and time.time() > self.start + float(self.seconds) + KILL_GRACE_S:
                self.kill()
                code = -9
            if code is not None:
                self.returncode = code
                self.wall_s = time.time() - self.start
                self._log.close()
        return self.returncode

    def wait(self) -> int:
        while self.poll() is None:
            time.sleep(0.25)
        return self.returncode

    def kill(self, sig: int = signal.SIGKILL, grace_s: float = 0.0) -> None:
        """Send ``sig`` to the run's process group; after ``grace_s`` seconds, SIGKILL what is left."""
        for s in ([sig] + ([signal.SIGKILL] if sig != signal.SIGKILL else [])):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, s)
            try:
                self.proc.wait(timeout=grace_s if s != signal.SIGKILL else None)
                break
            except subprocess.TimeoutExpired:
                continue

    def result(self) -> dict[str, Any]:
        """``{"regime", "bundle", "run_name", "output_dir", "returncode", "wall_s", "log", "run_info"}``."""
        from wss_monai.engine import read_run_info

        return {
            "regime": self.regime,
            "bundle": self.bundle,
            "run_name": self.run_name,
            "output_dir": str(self.run_dir),
            "returncode": self.returncode,
            "wall_s": getattr(self, "wall_s", time.time() - self.start),
            "log": str(self.log_path),
            "run_info": read_run_info(self.run_dir),
        }


_PRCTL = _prctl()


def run_regime(
    prepared_dir: str | os.PathLike,
    regime: str,
    *,
    out_dir: str | os.PathLike,
    tracking_uri: str,
    run_name: str,
    seconds: float | None = 300.0,
    epochs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    threads: int | None = None,
    tags: Mapping[str, Any] | None = None,
    experiment: str | None = None,
) -> dict[str, Any]:
    """Run one regime as ``python -m monai.bundle run`` in a child process, within ``seconds`` of wall time.

    Args:
        prepared_dir: the prepared dataset.
        regime: regime name; its bundle is :func:`bundle_config`.
        out_dir: the run goes to ``out_dir/runs/<run_name>``, its log to ``out_dir/logs/<run_name>.log``.
        tracking_uri, run_name: MLflow store and (unique) run name.
        seconds: wall-clock budget, start-up included (None: none; then ``epochs``, default 1).
        epochs: epoch cap.
        overrides: further bundle keys (``{"batch_size": 1}``).
        threads: torch threads of the child (``OMP_NUM_THREADS``); None: torch's default.
        tags: MLflow tags set on the run when training starts (:class:`TimeBudget`).
        experiment: MLflow experiment (None: the bundle's default, the dataset's name).

    Returns ``{"regime", "bundle", "run_name", "output_dir", "returncode", "wall_s", "log", "run_info"}``;
    ``run_info`` is the run's ``run.json`` (MLflow run id, best epoch...) or None if it never
    started. A run still alive :data:`KILL_GRACE_S` past its budget is killed (its process group),
    and reported with return code -9.
    """
    proc = RegimeProcess(prepared_dir, regime, out_dir=out_dir, tracking_uri=tracking_uri, run_name=run_name, seconds=seconds,
                         epochs=epochs, overrides=overrides, threads=threads, tags=tags, experiment=experiment)
    try:
        proc.wait()
    except BaseException:
        stop_all([proc])
        raise
    return proc.result()


def run_many(
    jobs: Sequence[Mapping[str, Any]],
    *,
    parallel: int = 1,
    on_start: Callable[[int, Mapping[str, Any]], None] | None = None,
    on_done: Callable[[int, dict[str, Any]], None] | None = None,
    poll_s: float = 0.25,
) -> list[dict[str, Any]]:
    """Run bundle jobs (each the keyword arguments of :func:`run_regime`), up to ``parallel`` at once.

    Why processes and not threads: each run is a real ``python -m monai.bundle run``, exactly what
    a user types, so the pipelines test the bundles as shipped. On a CPU, give each run one torch
    thread (``threads=1``) and ``parallel`` = the number of cores: torch's own threads scale badly
    on small images, and runs sharing cores slow each other down far more than twice.

    Jobs start in the given order; ``on_start(i, job)`` and ``on_done(i, result)`` are called
    from this thread. A job's ``seconds`` may be a function of the number of jobs not finished
    (this one, those still to start and those running), called when the job starts. On an exception or Ctrl+C, the runs still going get SIGINT (they record
    themselves as KILLED in MLflow), SIGKILL after :data:`STOP_GRACE_S`, and the error goes on.
    Returns the results in job order.
    """
    parallel = max(1, int(parallel))
    for uri in dict.fromkeys(str(job["tracking_uri"]) for job in jobs):
        init_store(uri)
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    running: dict[int, RegimeProcess] = {}
    pending = list(range(len(jobs)))
    try:
        while pending or running:
            while pending and len(running) < parallel:
                i = pending.pop(0)
                job = dict(jobs[i])
                if callable(job.get("seconds")):  # a budget decided at launch (see run_regimes' deadline)
                    job["seconds"] = job["seconds"](len(pending) + 1 + len(running))
                if on_start:
                    on_start(i, job)
                running[i] = RegimeProcess(**job)
            for i, proc in list(running.items()):
                if proc.poll() is not None:
                    del running[i]
                    results[i] = proc.result()
                    if on_done:
                        on_done(i, results[i])
            if running:
                time.sleep(poll_s)
    except BaseException:
        stop_all(running.values())
        raise
    return [r for r in results if r is not None]


def init_store(tracking_uri: str) -> None:
    """Create a SQLite MLflow store's tables now, in this process.

    Two bundle runs started together on a new store would both try to create the tables and
    one would fail (``table runs already exists``); after this they only add rows.
    """
    from wss_monai import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        tracking.store_client(uri)  # creates and upgrades the tables once, under the store's lock


def stop_all(procs: Iterable[RegimeProcess], grace_s: float = STOP_GRACE_S) -> None:
    """SIGINT every run at once (each records itself as KILLED in MLflow), SIGKILL those left after ``grace_s``."""
    procs = [p for p in procs if p.proc.poll() is None]
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.proc.pid, signal.SIGINT)
    deadline = time.time() + grace_s
    for proc in procs:
        try:
            proc.proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.proc.pid, signal.SIGKILL)
            proc.proc.wait()
        proc.poll()


# --------------------------------------------------------------------------------------------
# reading results back from MLflow


def read_results(runs: Sequence[Mapping[str, Any]], tracking_uri: str) -> "pandas.DataFrame":  # noqa: F821
    """One row per run of :func:`run_regime`, with its scores read back from MLflow.

    Scores are those of the best epoch by validation 3D Dice (the checkpoint the bundle keeps):
    ``dice_3d``, ``dice_2d_one`` / ``dice_2d_nan`` (2D Dice with an empty-vs-empty slice scored 1,
    or left out), ``hd95_mm``. ``epochs`` is the number of epochs run; ``train_s`` the training
    time summed over epochs (validation excluded, as the bundle's ``MLflowTracker`` logs it);
    ``ms_per_image`` = ``train_s`` / training images seen; ``wall_s`` the whole process;
    ``fingerprint`` the prepared dataset's (tag ``dataset_fingerprint``, blank for a run without
    it), so that a row is never read as comparable with a run on another preparation. The
    MLflow side is :func:`pipelines.report.collect`, the reader every report uses.
    """
    import pandas as pd

    from pipelines.report import collect

    ids = [(run.get("run_info") or {}).get("run_id") for run in runs]
    found = collect(run_ids=[i for i in ids if i], tracking_uri=tracking_uri).frame if any(ids) else None
    records = {r["run_id"]: r for r in found.to_dict("records")} if found is not None else {}
    rows = []
    for run, run_id in zip(runs, ids):
        row: dict[str, Any] = {"regime": run["regime"], "bundle": run["bundle"], "run_name": run["run_name"],
                               "wall_s": run.get("wall_s"), "status": "FAILED" if run.get("returncode") else "FINISHED",
                               "run_id": run_id, "log": run.get("log")}
        record = records.get(run_id)
        if record is not None:
            row["status"] = record["status"] if not run.get("returncode") else f"FAILED ({run.get('returncode')})"
            for column in ("epochs", "best_epoch", "dice_3d", "dice_2d_one", "dice_2d_nan", "hd95_mm", "train_s", "ms_per_image",
                           "dataset", "fingerprint"):
                row[column] = record[column]
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column, _ in COLUMNS:
        if column not in frame:
            frame[column] = math.nan
    return frame[[c for c, _ in COLUMNS] + [c for c in frame.columns if c not in dict(COLUMNS)]]


def _cell(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in ("dice_3d", "dice_2d_one", "dice_2d_nan"):
        return f"{value:.3f}"
    if column in ("hd95_mm", "ms_per_image"):
        return f"{value:.1f}"
    if column in ("train_s", "wall_s"):
        return f"{value:.0f}"
    if column in ("epochs", "best_epoch"):
        return str(int(value))
    return str(value)


def _fingerprints(frame) -> list[str]:
    """The distinct prepared-dataset fingerprints of a :func:`read_results` table, in row order ("" for none)."""
    if "fingerprint" not in frame:
        return []
    return list(dict.fromkeys("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in frame["fingerprint"]))


def to_markdown(frame) -> str:
    """The comparison table of :func:`read_results` as Markdown (one row per regime).

    All runs of one :func:`run_regimes` share a prepared dataset; should a table ever hold runs
    of several preparations, a ``preparation`` column (short fingerprint) follows the regime so
    that no two rows read as comparable when they are not (:mod:`pipelines.report` does the same)."""
    from pipelines.report import SHORT_FINGERPRINT

    columns = list(COLUMNS)
    if len(_fingerprints(frame)) > 1:
        columns.insert(1, ("fingerprint", "preparation"))
    headers = [h for _, h in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for _, row in frame.iterrows():
        fp = row.get("fingerprint")
        fp = "" if fp is None or (isinstance(fp, float) and math.isnan(fp)) else str(fp)
        cells = [(fp[:SHORT_FINGERPRINT] or "unknown") if c == "fingerprint" else _cell(row.get(c), c) for c, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def order_regimes(regimes: Sequence[str]) -> list[str]:
    """Table 1 order first (partial ... full), then ``full_<n>`` / ``hybrid_<n>`` pairs, then the rest as given."""
    rank = {name: i for i, name in enumerate(TABLE1_ORDER)}

    def key(item):
        index, name = item
        if name in rank:
            return (0, rank[name], index)
        base = name.split("+")[0]
        if base.startswith(("full_", "hybrid_")):
            n = int(base.split("_")[1]) if base.split("_")[1].isdigit() else 0
            return (1, n, 0 if base.startswith("full_") else 1, index)
        return (2, index)

    return [name for _, name in sorted(enumerate(regimes), key=key)]


# --------------------------------------------------------------------------------------------
# the whole job


def run_regimes(
    prepared_dir: str | os.PathLike,
    regimes: Sequence[str] = DEFAULT_REGIMES,
    *,
    out_dir: str | os.PathLike,
    minutes_per_regime: float | None = 5.0,
    epochs: int | None = None,
    tracking_uri: str | None = None,
    batch_size: int = 8,
    augment: bool = False,
    seed: int = 0,
    learning_rate: float | None = CPU_LEARNING_RATE,
    threads: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    tag: str | None = None,
    progress: Callable[[str], None] | None = print,
    parallel: int = 1,
    experiment: str | None = None,
    tags: Mapping[str, Any] | None = None,
    deadline: float | None = None,
    min_seconds: float = 20.0,
) -> "pandas.DataFrame":  # noqa: F821
    """Train each regime on a prepared dataset through its bundle and return the comparison table.

    Every regime is a real ``python -m monai.bundle run`` of the bundle that runs it
    (``wss_segmentation``, see :func:`bundle_config`), each in
    its own process, up to ``parallel`` at a time; the results are read back from MLflow.

    Args:
        prepared_dir: a dataset prepared by ``python -m data_prep`` (e.g. :func:`prepare_phantom`).
        regimes: regime names (:mod:`wss_monai.regimes`); started in the order given, reported in
            Table 1 order (:func:`order_regimes`).
        out_dir: where the runs' folders (``runs/<run name>``), logs and the overlay config go.
        minutes_per_regime: wall-clock budget of each run, start-up included (None or 0: no
            budget; then ``epochs`` is required).
        epochs: epoch cap (default: as many as fit in the budget).
        tracking_uri: MLflow store (default: ``sqlite:///<out_dir>/mlruns.db``).
        batch_size, augment, seed: the bundles' keys of the same names.
        learning_rate: the bundles' ``learning_rate`` (default :data:`CPU_LEARNING_RATE`; None: the
            bundle's own, the papers' 5e-4).
        threads: torch threads of each run (``OMP_NUM_THREADS``); None leaves torch's default,
            except with ``parallel`` > 1, where it is 1 (see :func:`run_many`).
        overrides: further bundle keys (``{"val_interval": 2, "learning_rate": 1e-3}``).
        tag: suffix of the run names (``<regime>-s<seed>-<tag>``; default: the start time).
        progress: called with one line per regime when it starts and ends (None: quiet).
        parallel: bundle processes at once (one per core on a CPU).
        experiment: MLflow experiment (default: the dataset's name, the bundles' default).
        tags: MLflow tags set on every run (the demo marks its runs with them).
        deadline: a Unix time by which all runs should be done, instead of
            ``minutes_per_regime``: each run's budget, when it starts, is the time left split
            evenly over the rounds of ``parallel`` runs left (at least ``min_seconds``), so a
            round that overran shortens the next ones instead of the whole job running late.
        min_seconds: the least budget a run gets with ``deadline``.

    Returns:
        A pandas DataFrame, one row per regime (columns: :data:`COLUMNS`, then ``run_name``,
        ``run_id`` and ``log``); the same table goes to ``out_dir/regimes.csv``.
    """
    if not minutes_per_regime and not epochs and deadline is None:
        raise ValueError("give minutes_per_regime, deadline or epochs")
    from wss_monai.regimes import get_regime

    for name in regimes:
        get_regime(name)  # unknown names fail here, before anything runs
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or f"sqlite:///{out / 'mlruns.db'}"
    tag = tag or time.strftime("%Y%m%d-%H%M%S")
    def share_of_deadline(unfinished: int) -> float:
        return max(float(min_seconds), (float(deadline) - time.time()) / math.ceil(unfinished / max(1, parallel)))

    seconds: Any = 60.0 * float(minutes_per_regime) if minutes_per_regime else None
    if deadline is not None:
        seconds = share_of_deadline
    if threads is None and parallel > 1:
        threads = 1
    keys = {"batch_size": batch_size, "augment": bool(augment), "seed": seed, **dict(overrides or {})}
    if learning_rate is not None:
        keys.setdefault("learning_rate", float(learning_rate))
    jobs = [dict(prepared_dir=prepared_dir, regime=regime, out_dir=out, tracking_uri=uri, run_name=f"{regime}-s{seed}-{tag}",
                 seconds=seconds, epochs=epochs, overrides=keys, threads=threads, experiment=experiment,
                 tags={**dict(tags or {}), "wss.row": regime} if tags else None)
            for regime in regimes]
    n = len(jobs)

    def started(i: int, job: Mapping[str, Any]) -> None:
        if progress:
            budget = f"{job['seconds']:.0f} s" if job["seconds"] else f"{epochs} epochs"
            progress(f"[{i + 1}/{n}] {job['regime']}: training ({bundle_config(job['regime']).parent.parent.name}, {budget}) ...")

    def done(i: int, result: dict[str, Any]) -> None:
        if progress:
            progress(f"[{i + 1}/{n}] {result['regime']}: {describe_result(result)}")

    results = run_many(jobs, parallel=parallel, on_start=started, on_done=done)
    order = order_regimes([r["regime"] for r in results])
    results.sort(key=lambda r: order.index(r["regime"]))
    frame = read_results(results, uri)
    frame.to_csv(out / "regimes.csv", index=False)
    return frame


def describe_result(result: Mapping[str, Any]) -> str:
    """One line on how a run of :func:`run_regime` ended (best score, or the failure and its log)."""
    info = result.get("run_info") or {}
    best = info.get("best_metric")
    if result.get("returncode") == 0 and isinstance(best, float):
        what = f"best val 3D Dice {best:.3f} at epoch {info.get('best_epoch')} of {info.get('last_epoch')}"
    else:
        what = f"FAILED (exit {result.get('returncode')}; see {result.get('log')})"
    return f"{what}, {result.get('wall_s', 0):.0f} s"


def _settings_line(args: argparse.Namespace, prepared: Path) -> str:
    data = json.loads((prepared / "dataset.json").read_text())
    counts = {s: len(data.get(s, [])) for s in ("training", "validation")}
    patients = {s: len({e["patient"] for e in data.get(s, [])}) for s in ("training", "validation")}
    try:
        options = json.loads((prepared / "prep.json").read_text())["options"]
        size = " x ".join(str(s) for s in options["size"]) if isinstance(options["size"], list) else f"{options['size']} x {options['size']}"
        size += f" ({options.get('resize', 'stretch')})"
    except (OSError, KeyError, ValueError, TypeError):
        size = "?"
    budget = f"{args.minutes_per_regime:g} min per regime" if args.minutes_per_regime else "no time budget"
    cap = f", at most {args.epochs} epochs" if args.epochs else ""
    return (f"Dataset {prepared} ({data.get('name')}): {patients['training']} training patients "
            f"({counts['training']} slices), {patients['validation']} validation patients ({counts['validation']} slices), "
            f"slices {size}; ENet, batch {args.batch_size}, learning rate {args.learning_rate:g}, augment {args.augment}, seed {args.seed}, {budget}{cap}, "
            f"torch threads {args.threads or (1 if args.parallel > 1 else 'default')}, {args.parallel} run(s) at once.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.regimes",
        description="Train training regimes through their MONAI bundles on a prepared dataset (by default a "
        "generated ACDC-layout phantom), each within a wall-clock budget, and compare them: a Markdown table "
        "(DIR/regimes.md) and a CSV (DIR/regimes.csv) read back from MLflow.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (phantom, runs, logs, MLflow store, tables)")
    parser.add_argument("--regimes", default=",".join(DEFAULT_REGIMES), help=f"comma-separated regimes (default {','.join(DEFAULT_REGIMES)})")
    parser.add_argument("--prepared", type=Path, default=None, help="use this prepared dataset instead of generating a phantom")
    parser.add_argument("--minutes-per-regime", type=float, default=5.0, help="wall-clock budget per regime, start-up included (default 5; 0: none)")
    parser.add_argument("--epochs", type=int, default=None, help="epoch cap (default: as many as fit in the budget)")
    parser.add_argument("--cases", type=int, default=48, help="phantom patients (default 48)")
    parser.add_argument("--size", type=int, default=48, help="prepared slice size (default 48)")
    parser.add_argument("--inplane", type=int, default=None, help="phantom raw in-plane size (default: real ACDC sizes)")
    parser.add_argument("--fov-mm", type=float, default=DEFAULT_FOV_MM,
                        help=f"field of view kept around the heart, in mm (default {DEFAULT_FOV_MM:g}; 0: the whole image, stretched)")
    parser.add_argument("--prepare-args", default="", help="extra 'python -m data_prep acdc' options, space-separated")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantom, the split and the runs (default 0)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=CPU_LEARNING_RATE,
                        help=f"Adam learning rate (default {CPU_LEARNING_RATE:g}, for batch 8 and minutes of training; the papers' 5e-4 is for batch 1)")
    parser.add_argument("--augment", action="store_true", help="the bundles' flips/rotation/zoom augmentation")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's own; 1 with --parallel > 1)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="bundle runs at once (default 1; on a CPU use the number of cores, each run then gets 1 torch thread)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite:///DIR/mlruns.db)")
    parser.add_argument("--weak", default=None,
                        help="weak-label strategy of every run, e.g. 'user' for your own annotations (default: each regime's)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: the prepared dataset's name)")
    args = parser.parse_args(argv)
    regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    if not regimes:
        parser.error("--regimes is empty")
    if not args.minutes_per_regime and not args.epochs:
        parser.error("give --minutes-per-regime or --epochs")
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    from wss_monai.regimes import UnknownRegimeError, get_regime

    for name in regimes:
        try:
            get_regime(name)
        except UnknownRegimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    out = args.out.resolve()
    problem = output_problem(out, inputs={"--prepared": args.prepared} if args.prepared is not None else None)
    if problem is None and args.tracking_uri is not None:
        from wss_monai import tracking

        try:
            tracking.resolve_tracking_uri(args.tracking_uri, out)
        except ValueError as err:
            problem = f"--tracking-uri: {err}"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.prepared is not None:
        prepared = args.prepared.resolve()
        if not (prepared / "dataset.json").is_file():
            print(f"error: {prepared}: not a prepared dataset (no dataset.json)", file=sys.stderr)
            return 2
    else:
        prepared = prepare_phantom(out, cases=args.cases, size=args.size, seed=args.seed, inplane=args.inplane,
                                   fov_mm=args.fov_mm or None, prepare_args=args.prepare_args.split())
    start = time.perf_counter()
    frame = run_regimes(prepared, regimes, out_dir=out, minutes_per_regime=args.minutes_per_regime or None,
                        epochs=args.epochs, tracking_uri=args.tracking_uri, batch_size=args.batch_size,
                        augment=args.augment, seed=args.seed, learning_rate=args.learning_rate, threads=args.threads,
                        parallel=args.parallel, experiment=args.experiment,
                        overrides={"weak": args.weak} if args.weak else None)
    known = [fp for fp in _fingerprints(frame) if fp]
    fingerprint = f" Prepared dataset fingerprint: {', '.join(f'`{fp}`' for fp in known)}." if known else ""
    text = f"{_settings_line(args, prepared)}{fingerprint}\n\n{to_markdown(frame)}\n\n{LEGEND}\n"
    (out / "regimes.md").write_text(text, encoding="utf-8")
    print(f"\n{text}\nTable in {out / 'regimes.md'} and {out / 'regimes.csv'}; {len(frame)} regimes in "
          f"{(time.perf_counter() - start) / 60:.1f} min.")
    return 0 if (frame["status"] == "FINISHED").all() else 1


if __name__ == "__main__":
    sys.exit(main())
