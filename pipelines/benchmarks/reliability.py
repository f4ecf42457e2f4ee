"""Reliability: bad inputs and killed runs through the real command line; cases tried, handled, data lost.

Data preparation: the bad-input corpus and SIGKILLed ``python -m data_prep`` runs. Every other
command (training, evaluation and inference bundles, export, the pipelines, ``data_prep verify``):
the corpus of ``pipelines/testkit/command_corpus/``, each case a real command line. Training (a tiny
phantom, 32 x 32, 3 epochs of ``bundles/wss_segmentation`` on the CPU, determinism on): runs SIGKILLed
mid-epoch and resumed with ``--resume true`` (same metrics as an uninterrupted run, one MLflow run),
a tracking server unreachable from the start or killed mid-run (training completes, the fallback
journal is synced to a real server on 127.0.0.1), and a loss that turns NaN or infinite.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from pipelines.benchmarks.common import print_rows


@dataclasses.dataclass
class Row:
    """One case of a section: ``handled`` when it did what it must; ``lost`` counts files lost or changed."""

    case: str
    expected: str
    result: str
    handled: bool
    lost: int = 0
    skipped: str | None = None


#: A section writes its cases under the folder it is given and returns one row per case.
Check = Callable[[Path, argparse.Namespace], list[Row]]
SECTIONS: list[tuple[str, Check]] = []


def section(name: str):
    """Register a check as a section of the summary (training-side checks add theirs the same way)."""

    def register(check: Check) -> Check:
        SECTIONS.append((name, check))
        return check

    return register


@section("bad inputs (python -m data_prep)")
def bad_inputs(work: Path, args: argparse.Namespace) -> list[Row]:
    from pipelines.testkit.bad_inputs import CASES, make_removable, run_case

    rows = []
    for bad in CASES:
        if args.cases and bad.name not in args.cases:
            continue
        try:
            outcome = run_case(bad, work)
        finally:
            make_removable(work)
        if outcome.skipped:
            rows.append(Row(bad.name, "", "skipped", False, skipped=outcome.skipped))
            continue
        said = outcome.message.replace(f"{work / bad.name}/", "")
        result = f"exit {outcome.code}" + (f": {_short(said.removeprefix('error: '))}" if said else "")
        if outcome.problems:
            result += f" [{'; '.join(outcome.problems)}]"
        rows.append(Row(bad.name, _short(outcome.expected, 44), result, outcome.handled, len(outcome.lost)))
    return rows


@section("bad inputs (bundles, pipelines, export, verify)")
def bad_commands(work: Path, args: argparse.Namespace) -> list[Row]:
    from pipelines.testkit.command_corpus import CASES, run_corpus

    names = [c.name for c in CASES if not args.cases or c.name in args.cases]
    if not names:
        return []
    rows = []
    for outcome in run_corpus(work, names, jobs=args.jobs):
        said = outcome.message.replace(f"{work}/", "")
        result = f"exit {outcome.code}" + (f": {_short(said.removeprefix('error: '))}" if said else "")
        if outcome.problems:
            result += f" [{'; '.join(outcome.problems)}]"
        rows.append(Row(f"{outcome.entry}: {outcome.name}", _short(outcome.expected, 44), result, outcome.handled,
                        len(outcome.lost)))
    return rows


@section("interrupted runs (SIGKILL, then run again)")
def interrupted(work: Path, args: argparse.Namespace) -> list[Row]:
    from pipelines.testkit.interrupted import killed_phantom, killed_prepare

    if args.cases:
        return []
    rows = []
    for check in (killed_prepare, killed_phantom):
        report = check(work / check.__name__, seed=args.seed)
        kills = ", ".join(f"{k.phase} at {k.delay:.2f} s" + (" (2 workers)" if k.workers == 2 else "") for k in report.kills)
        result = f"killed {kills}; {report.files - len(report.lost)}/{report.files} files identical"
        if report.problems:
            result += f" [{'; '.join(report.problems)}]"
        expected = f"{len(report.kills)} kills, then byte-identical"
        rows.append(Row(report.name, expected, result, report.handled, len(report.lost)))
    return rows


# --------------------------------------------------------------------------------------------
# training: killed runs, tracking server faults, NaN loss

REPO = Path(__file__).resolve().parents[2]
TRAIN = "bundles/wss_segmentation/configs/train.json"
EPOCHS = 3
FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
_PREPARED: dict[str, Path] = {}


def _prepared() -> Path:
    """A tiny prepared ACDC phantom (5 patients, 32 x 32), made once per process."""
    if "acdc" not in _PREPARED:
        import contextlib
        import io

        from data_prep.cli import main as data_prep
        from pipelines.testkit.phantoms import generate

        root = Path(tempfile.mkdtemp(prefix="wss-reliability-"))
        atexit.register(shutil.rmtree, root, True)
        raw = generate("acdc", root / "raw", cases=5, seed=0, small=True)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = data_prep(["acdc", "--src", str(raw), "--out", str(root / "prepared"), "--size", "32", "--val", "1",
                              "--test", "1", "--weak", "erosion"])
        if code != 0:
            raise RuntimeError("could not prepare the tiny phantom for the training checks")
        _PREPARED["acdc"] = root / "prepared"
    return _PREPARED["acdc"]


def _train(out: Path, *extra: Any, env: dict | None = None, config: list[str] | None = None) -> subprocess.Popen:
    """``python -m monai.bundle run`` of wss_segmentation on the tiny phantom, in its own process group."""
    files = json.dumps([TRAIN, *(config or [])]) if config else TRAIN
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--dataset_dir", str(_prepared()),
               "--regime", "individual", "--epochs", str(EPOCHS), "--hd95", "false", "--progress", "false",
               "--output_dir", str(out), *map(str, extra)]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", **(env or {})}
    log = open(f"{out}.log", "a")
    try:
        return subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    finally:
        log.close()


def _finish(process: subprocess.Popen, timeout: float = 600) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


def _log(out: Path) -> str:
    try:
        return Path(f"{out}.log").read_text(errors="replace")
    except OSError:
        return ""


def _history(out: Path) -> dict[int, dict[str, float]]:
    try:
        return {int(k): v for k, v in json.loads((out / "history.json").read_text()).items()}
    except (OSError, ValueError):
        return {}


def _info(out: Path) -> dict:
    try:
        return json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def _kill_during_epoch(process: subprocess.Popen, out: Path, epoch: int, delay: float) -> str:
    """SIGKILL the run ``delay`` s after the checkpoint of ``epoch - 1`` appears (``epoch`` 1: after its start)."""
    target = out / "checkpoints" / f"checkpoint_epoch={epoch - 1}.pt" if epoch > 1 else out / "run.json"
    deadline = time.monotonic() + 300
    while not target.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    if process.poll() is not None:
        return f"ended before the kill (exit {process.returncode})"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    from wss_monai.engine import latest_checkpoint

    found = latest_checkpoint(out)
    return f"killed in epoch {(found[1] if found else 0) + 1}"


def _compare(reference: Path, out: Path) -> tuple[int, float]:
    """(epochs missing or different, largest difference of a metric) of ``out`` against ``reference``."""
    from wss_monai.engine.recording import is_timing_metric

    want, got = _history(reference), _history(out)
    lost, worst = 0, 0.0
    for epoch, metrics in want.items():
        if epoch not in got or set(got[epoch]) != set(metrics):
            lost += 1
            continue
        diffs = [abs(got[epoch][k] - v) for k, v in metrics.items() if v == v and not is_timing_metric(k)]
        worst = max([worst, *diffs])
        lost += any(d > 1e-6 for d in diffs)
    return lost, worst


def _mlflow_check(uri: str, name: str, epochs: int) -> tuple[int, int, str]:
    """(runs with that name, epochs missing from its val_dice_3d_mean history, status)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("acdc-lv")
    if experiment is None:
        return 0, epochs, "no experiment"
    runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    if len(runs) != 1:
        return len(runs), epochs, "?"
    steps = {m.step for m in client.get_metric_history(runs[0].info.run_id, "val_dice_3d_mean")}
    return 1, len(set(range(1, epochs + 1)) - steps), runs[0].info.status


@section("interrupted training (SIGKILL mid-epoch, then --resume true)")
def interrupted_training(work: Path, args: argparse.Namespace) -> list[Row]:
    if args.cases:
        return []
    rng = random.Random(args.seed)
    db = f"sqlite:///{work}/mlruns.db"
    reference = work / "reference"
    if _finish(_train(reference, "--tracking_uri", db, "--run_name", "reference")) != 0:
        return [Row("uninterrupted reference run", "exit 0", f"failed: {_log(reference)[-200:]}", False)]
    rows = []
    for case, kills in (("killed once, mid-epoch 2", [2]), ("killed twice (epochs 2 and 3)", [2, 3])):
        name = f"killed-{len(kills)}"
        out = work / name
        said = []
        process = _train(out, "--tracking_uri", db, "--run_name", name)
        said.append(_kill_during_epoch(process, out, kills[0], rng.uniform(0.05, 0.3)))
        for epoch in kills[1:]:  # the resumed run is killed again
            process = _train(out, "--resume", "true")
            said.append(_kill_during_epoch(process, out, epoch, rng.uniform(0.05, 0.3)))
        code = _finish(_train(out, "--resume", "true"))
        lost, worst = _compare(reference, out)
        runs, missing, status = _mlflow_check(db, name, EPOCHS)
        handled = code == 0 and lost == 0 and runs == 1 and missing == 0 and status == "FINISHED"
        result = (f"{', '.join(said)}; resumed: exit {code}, metrics max diff {worst:.1e}, "
                  f"MLflow {runs} run {status} with {EPOCHS - missing}/{EPOCHS} epochs")
        rows.append(Row(case, "same metrics, one FINISHED run", result, handled, lost + missing + max(0, runs - 1)))
    out = work / "early"
    process = _train(out, "--log_mlflow", "false")
    said = _kill_during_epoch(process, out, 1, 0.05)
    code = _finish(_train(out, "--resume", "true", "--log_mlflow", "false"))
    message = next((line for line in _log(out).splitlines() if line.startswith("error:")), "").replace(f"{work}/", "")
    handled = code == 2 and "no checkpoint_epoch=<N>.pt to resume from" in message
    rows.append(Row("killed before its first checkpoint", "--resume: exit 2, one line", f"{said}; exit {code}: {_short(message[7:], 70)}", handled))
    return rows


def _quiet(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn`` with MLflow's own "View run at ..." lines kept off the summary."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _synced_check(url: str, name: str, out: Path) -> tuple[bool, int, str]:
    """After a sync: (all there, items lost, summary) comparing the server's run with history.json."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("acdc-lv")
    runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'") if experiment else []
    if len(runs) != 1:
        return False, EPOCHS, f"{len(runs)} runs named {name!r} on the server"
    run = runs[0]
    history = _history(out)
    lost = 0
    for key in ("val_dice_3d_mean", "train_loss"):
        got = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        lost += sum(1 for e, m in history.items() if abs(got.get(e, float("inf")) - m[key]) > 1e-9)
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    lost += len({"plots/dice_curves.png", "plots/overlay.png"} - plots)
    lost += 0 if run.data.params.get("regime") == "individual" else 1
    lost += 0 if run.data.tags.get("best_epoch") else 1
    ok = lost == 0 and run.info.status == "FINISHED" and len(history) == EPOCHS
    return ok, lost, f"server: 1 run {run.info.status}, {len(history)} epochs, {len(run.data.params)} params, {len(plots)} plots"


@section("tracking server unreachable at start")
def server_unreachable(work: Path, args: argparse.Namespace) -> list[Row]:
    from wss_monai.tracking import FALLBACK_NAME, FallbackJournal, start_local_server, sync_fallback

    if args.cases:
        return []
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    out = work / "out"
    started = time.monotonic()
    code = _finish(_train(out, "--tracking_uri", url, "--run_name", "offline", env=FAST_FAIL))
    took = time.monotonic() - started
    log = _log(out)
    warned = "cannot be used" in log and "python -m wss_monai.tracking sync --from" in log
    kept = [e["step"] for e in FallbackJournal(out / FALLBACK_NAME).pending() if e["op"] == "metrics"]
    rows = [Row("nobody listens on the tracking URL", "exit 0, warning, kept locally",
                f"exit {code} in {took:.0f} s; warning {'names' if warned else 'MISSING'} the sync command; journal holds epochs {kept}",
                code == 0 and warned and kept == list(range(1, EPOCHS + 1)), EPOCHS - len(kept))]
    server = start_local_server(port=port, backend_store_uri=f"sqlite:///{work}/server.db", artifacts_dir=work / "art",
                                log_path=work / "server.log")
    try:
        result = _quiet(sync_fallback, out)
        ok, lost, said = _synced_check(server.url, "offline", out)
        again = _quiet(sync_fallback, out)
        rows.append(Row("server started, then sync", "everything on the server",
                        f"{result.operations} operations sent; {said}; second sync sent {again.operations}",
                        ok and again.operations == 0, lost))
    finally:
        server.stop()
    return rows


@section("tracking server killed mid-run")
def server_killed(work: Path, args: argparse.Namespace) -> list[Row]:
    from wss_monai.tracking import FALLBACK_NAME, FallbackJournal, start_local_server, sync_fallback

    if args.cases:
        return []
    db = f"sqlite:///{work}/server.db"
    server = start_local_server(backend_store_uri=db, artifacts_dir=work / "art", log_path=work / "server.log")
    out = work / "out"
    rows = []
    try:
        process = _train(out, "--tracking_uri", server.url, "--run_name", "server-killed", env=FAST_FAIL)
        deadline = time.monotonic() + 300
        while _info(out).get("last_epoch") != 1 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(server.pid, signal.SIGKILL)  # the server crashes after epoch 1
        server.process.wait()
        code = _finish(process)
        log = _log(out)
        warned = "cannot be used" in log and "python -m wss_monai.tracking sync --from" in log
        kept = [e["step"] for e in FallbackJournal(out / FALLBACK_NAME).pending() if e["op"] == "metrics"]
        rows.append(Row("server SIGKILLed after epoch 1", "exit 0, later epochs kept locally",
                        f"exit {code}; warning {'names' if warned else 'MISSING'} the sync command; journal holds epochs {kept}",
                        code == 0 and warned and kept == list(range(2, EPOCHS + 1)), EPOCHS - 1 - len(kept)))
        server = start_local_server(backend_store_uri=db, artifacts_dir=work / "art", log_path=work / "server2.log")
        result = _quiet(sync_fallback, out, to=server.url)
        ok, lost, said = _synced_check(server.url, "server-killed", out)
        rows.append(Row("server back (new port, same store), then sync --to", "the same run completed",
                        f"{result.operations} operations sent to {'a new' if result.created else 'the same'} run; {said}",
                        ok and not result.created, lost))
    finally:
        server.stop()
    return rows


class NonFiniteAt(torch.nn.Module):
    """A bundle loss that returns ``value`` (NaN, inf) at one iteration of one epoch, else the real loss.

    Used by the "NaN loss" section through an overlay config (``"loss": {"_target_":
    "pipelines.benchmarks.reliability.NonFiniteAt", ...}``): the divergence the guard must stop.
    """

    def __init__(self, loss: Any, epoch: int, iteration: int, value: str = "nan") -> None:
        super().__init__()
        self.inner, self.epoch, self.iteration, self.value = loss, int(epoch), int(iteration), float(value)
        self._epoch, self._calls = 0, 0

    @property
    def last_values(self):
        return getattr(self.inner, "last_values", None)

    @property
    def term_modules(self):
        return getattr(self.inner, "term_modules", {})

    def set_epoch(self, epoch: int) -> None:
        self._epoch, self._calls = epoch + 1, 0
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def forward(self, *args: Any, **kwargs: Any):
        self._calls += 1
        loss = self.inner(*args, **kwargs)
        return loss * self.value if (self._epoch, self._calls) == (self.epoch, self.iteration) else loss


@section("NaN or infinite loss")
def nan_loss(work: Path, args: argparse.Namespace) -> list[Row]:
    if args.cases:
        return []
    rows = []
    for epoch, iteration, value in ((2, 3, "nan"), (1, 1, "inf")):
        out = work / f"{value}-{epoch}"
        overlay = work / f"{value}.json"
        overlay.write_text(json.dumps({"loss": {"_target_": "pipelines.benchmarks.reliability.NonFiniteAt",
                                                "loss": "$@session.spec.build_loss(softmax=True)", "epoch": epoch,
                                                "iteration": iteration, "value": value}}))
        code = _finish(_train(out, "--log_mlflow", "false", config=[str(overlay)]))
        log = _log(out)
        said = f"at epoch {epoch}, iteration {iteration} of"
        kept = sorted(p.name for p in (out / "checkpoints").glob("*.pt"))
        want_kept = [f"checkpoint_epoch={epoch - 1}.pt"] if epoch > 1 else []
        finite = True
        for name in kept:
            state = torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)["model"]
            finite &= all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())
        info = _info(out)
        handled = code != 0 and said in log and kept == want_kept and finite and info.get("status") == "FAILED"
        result = (f"exit {code}; message {'names' if said in log else 'does NOT name'} epoch {epoch}, iteration {iteration}; "
                  f"kept {kept or 'no checkpoint (none yet)'}{'' if finite else ' NOT finite'}; run.json {info.get('status')}")
        rows.append(Row(f"{value} at epoch {epoch}, iteration {iteration}", "stop, name it, keep last good", result, handled,
                        0 if kept == want_kept else 1))
    return rows


def _short(text: str, width: int = 96) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.benchmarks reliability", description=__doc__)
    parser.add_argument("--section", action="append", default=None, help="run only sections whose name starts with this")
    parser.add_argument("--cases", nargs="+", default=None, help="bad-input case names only (skips the kill checks)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill moments (default 0)")
    parser.add_argument("--jobs", type=int, default=2, help="bad commands run at once (default 2)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the generated inputs (default: a temporary one)")
    args = parser.parse_args(argv)

    tried = handled = lost = 0
    skipped: list[str] = []
    for name, check in SECTIONS:
        if args.section and not any(name.startswith(s) for s in args.section):
            continue
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=args.workdir) as work:
            rows = check(Path(work), args)
        if not rows:
            continue
        print(f"\n{name}: {len(rows)} cases in {time.perf_counter() - started:.0f} s", flush=True)
        print_rows(
            ["case", "expected", "result", "handled", "lost"],
            [[r.case, r.expected, r.result, "skipped" if r.skipped else ("yes" if r.handled else "NO"), r.lost] for r in rows],
        )
        for row in rows:
            if row.skipped:
                skipped.append(f"{row.case} ({row.skipped})")
                continue
            tried += 1
            handled += row.handled
            lost += row.lost
    print(f"\ncases tried {tried}, handled {handled}, data lost {lost}" + (f"; skipped {len(skipped)}" if skipped else ""))
    for line in skipped:
        print(f"skipped: {line}")
    return 0 if handled == tried and lost == 0 else 1
