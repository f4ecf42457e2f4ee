"""Bundle runs as child processes, and their supervision: every pipeline starts its trainings here.

A training is a real ``python -m monai.bundle run`` of the bundle that runs its regime (exactly
what a user types, so the pipelines test the bundles as shipped), in a child process of its own:
:class:`RegimeProcess` starts one, :func:`run_regime` waits for one, :func:`run_many` runs a list
up to N at once (``pipelines.regimes``, the demo and ``pipelines.reproduce`` all go through it).

Supervision: each child has its own process group (so it and whatever it starts stop together),
dies with the process that started it (Linux ``PR_SET_PDEATHSIG``, :mod:`wss_monai.processes`),
is killed when it runs far past its budget, and on an error or Ctrl+C every child still running
is asked to stop (SIGINT: it records itself as KILLED in MLflow), then killed.

What a child is given: the bundle's own ``train.json``, the overlay :data:`TIME_BUDGET_CONFIG`
(written to ``DIR/configs/time_budget.json``; it appends the
:class:`wss_monai.engine.time_budget.TimeBudget` handler to the trainer's handlers, which ends
training at the end of the last epoch that fits the wall-clock budget), and the run's own values
in a third config file where every string is inert (:func:`inert`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipelines.store import init_store
from wss_monai.processes import preexec_supervised_child

__all__ = [
    "TIME_BUDGET_CONFIG",
    "RegimeProcess",
    "bundle_config",
    "describe_result",
    "inert",
    "run_many",
    "run_regime",
    "stop_all",
    "write_values_overlay",
]

REPO = Path(__file__).resolve().parents[1]


MAX_EPOCHS = 1000
"""Epoch cap when only a time budget is given (the budget ends training long before)."""


FINALIZE_RESERVE_S = 6.0
"""Seconds kept for what a run does after its last epoch (overlay figure, artifacts, exit): the
handler's own default, :data:`wss_monai.engine.time_budget.DEFAULT_RESERVE_S`, written out here so that
this module imports no torch."""


TIME_BUDGET_CONFIG: dict[str, Any] = {
    "time_budget_deadline": None,
    "time_budget_reserve": FINALIZE_RESERVE_S,
    "time_budget_tags": None,
    "compile_deadline": "@time_budget_deadline",  # compile auto weighs its cost against the budget, not the epoch cap
    "log_model": False,  # the export takes seconds the wall-clock budget keeps for training; the checkpoint is kept
    "+train#handlers": [
        {
            "_target_": "wss_monai.engine.time_budget.TimeBudget",
            "deadline": "@time_budget_deadline",
            "reserve_s": "@time_budget_reserve",
            "output_dir": "$@session.output_dir",
            "tags": "@time_budget_tags",
        }
    ],
}
"""Overlay merged after a bundle's ``train.json`` (MONAI's ``+key`` appends to the handler list)."""


KILL_GRACE_S = 120.0
"""A run still alive this long after its budget is killed (its whole process group)."""


STOP_GRACE_S = 15.0
"""On Ctrl+C, seconds the runs get to record themselves as KILLED in MLflow before SIGKILL."""


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
                                         start_new_session=True, preexec_fn=preexec_supervised_child())
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
        tags: MLflow tags set on the run when training starts (:class:`~wss_monai.engine.time_budget.TimeBudget`).
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
                if callable(job.get("seconds")):  # a budget decided at launch (see pipelines.regimes.run_regimes' deadline)
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



def describe_result(result: Mapping[str, Any]) -> str:
    """One line on how a run of :func:`run_regime` ended (best score, or the failure and its log)."""
    info = result.get("run_info") or {}
    best = info.get("best_metric")
    if result.get("returncode") == 0 and isinstance(best, float):
        what = f"best val 3D Dice {best:.3f} at epoch {info.get('best_epoch')} of {info.get('last_epoch')}"
    else:
        what = f"FAILED (exit {result.get('returncode')}; see {result.get('log')})"
    return f"{what}, {result.get('wall_s', 0):.0f} s"
