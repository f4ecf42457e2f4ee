"""Command corpus cases: the pipelines, ``data_prep verify``, the phantom command, and runs that meet
(two at once, Ctrl+C)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


from pipelines.testkit.command_corpus.corpus import (
    PAYLOAD,
    QUIET,
    REPO,
    TRAIN,
    Command,
    Shared,
    case,
    first_entry,
    manifest_of,
    rewrite_slice,
    run_module,
    train,
)
from wss_monai.processes import preexec_supervised_child


# the pipelines


@case("regimes_tracking_uri_is_not_run", "regimes", "evaluated")
def _regimes_payload(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.regimes", "--prepared", shared.prepared, "--regimes", "partial", "--epochs", "1",
                    "--out", work / "out", "--tracking-uri", PAYLOAD], names="tracking", problem="",
                   absent=[work / "cwd" / "PWNED"])


@case("regimes_experiment_is_data", "regimes", "evaluated")
def _regimes_experiment(work: Path, shared: Shared) -> Command:
    marker = work / "cwd" / "PWNED"

    def check(done: subprocess.CompletedProcess) -> list[str]:
        found = list((work / "out").glob("runs/partial*/run.json"))
        if not found:
            return ["no run.json written"]
        experiment = json.loads(found[0].read_text()).get("experiment")
        return [] if experiment == PAYLOAD else [f"experiment recorded as {experiment!r}, not the text given"]

    return Command(["pipelines.regimes", "--prepared", shared.prepared, "--regimes", "partial", "--epochs", "1",
                    "--out", work / "out", "--experiment", PAYLOAD], code=0, out=work / "out", absent=[marker],
                   check=check, timeout=600)


@case("regimes_prepared_is_not_a_dataset", "regimes", "traceback")
def _regimes_not_prepared(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.regimes", "--prepared", shared.raw, "--out", work / "out"], names="raw", problem="")


@case("regimes_unknown_regime", "regimes", "traceback")
def _regimes_unknown(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.regimes", "--prepared", shared.prepared, "--regimes", "partial,individul",
                    "--out", work / "out"], names="individul", problem="")


@case("regimes_out_is_a_file", "regimes", "lost")
def _regimes_out_file(work: Path, shared: Shared) -> Command:
    (work / "out").write_text("my notes\n")
    return Command(["pipelines.regimes", "--prepared", shared.prepared, "--out", work / "out"], names="out", problem="")


@case("demo_epochs_zero", "demo", "traceback")
def _demo_epochs(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.demo", "--epochs", "0", "--out", work / "demo"], names="--epochs", problem="")


@case("demo_out_is_a_file", "demo", "lost")
def _demo_out_file(work: Path, shared: Shared) -> Command:
    (work / "demo").write_text("my notes\n")
    return Command(["pipelines.demo", "--quick", "--out", work / "demo"], names="demo", problem="")


@case("report_server_unreachable", "report", "traceback")
def _report_unreachable(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.report", "--experiment", "acdc-lv", "--tracking-uri", "http://127.0.0.1:9",
                    "--out", work / "report"], names="127.0.0.1:9", problem="")


@case("report_out_is_a_file", "report", "traceback")
def _report_out_file(work: Path, shared: Shared) -> Command:
    (work / "report").write_text("my notes\n")
    return Command(["pipelines.report", "--experiment", "acdc-lv", "--tracking-uri", f"sqlite:///{work / 'none.db'}",
                    "--out", work / "report"], names="report", problem="")


@case("report_unknown_experiment", "report", "traceback")
def _report_unknown(work: Path, shared: Shared) -> Command:
    from wss_monai import tracking

    store = f"sqlite:///{work / 'mlruns.db'}"
    tracking.store_client(store)  # an empty store: the experiment is not in it
    return Command(["pipelines.report", "--experiment", "nothing-here", "--tracking-uri", store,
                    "--out", work / "report"], names="nothing-here", problem="")


@case("reproduce_src_missing", "reproduce", "traceback")
def _reproduce_src(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.reproduce", "--dataset", "acdc", "--src", work / "nothing", "--out", work / "out"],
                   names="nothing", problem="")


@case("reproduce_unknown_table", "reproduce", "traceback")
def _reproduce_table(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.reproduce", "--dataset", "acdc", "--src", shared.raw, "--out", work / "out",
                    "--tables", "9"], names="--tables", problem="")


@case("reproduce_out_is_the_raw_data", "reproduce", "lost")
def _reproduce_out_src(work: Path, shared: Shared) -> Command:
    raw = work / "raw"
    shutil.copytree(shared.raw, raw)
    return Command(["pipelines.reproduce", "--dataset", "acdc", "--src", raw, "--out", raw, "--epochs", "1"],
                   names="raw", problem="")


@case("reproduce_experiment_is_not_run", "reproduce", "evaluated")
def _reproduce_payload(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.reproduce", "--dataset", "acdc", "--src", shared.raw, "--out", work / "out",
                    "--tables", "9", "--experiment", PAYLOAD], names="--tables", problem="",
                   absent=[work / "cwd" / "PWNED"])


@case("benchmarks_unknown_name", "benchmarks", "traceback")
def _benchmarks_unknown(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.benchmarks", "trainingg"], names="trainingg", problem="")


# data_prep verify, and the test kit's phantom command (the converters have their own corpus)


@case("verify_not_a_dataset", "verify", "traceback")
def _verify_not(work: Path, shared: Shared) -> Command:
    return Command(["data_prep", "verify", shared.raw], names="raw", problem="dataset.json")


@case("verify_slice_changed_since_preparation", "verify", "silent")
def _verify_changed(work: Path, shared: Shared) -> Command:
    data = shared.copy_prepared(work / "prepared")
    entry = first_entry(manifest_of(data))
    rewrite_slice(data, entry["image"], lambda a: (a * 0.5).astype(a.dtype))

    def check(done: subprocess.CompletedProcess) -> list[str]:  # the problems are listed on stdout
        listed = [line for line in done.stdout.splitlines() if Path(entry["image"]).name in line]
        return [] if listed and "changed since preparation" in listed[0] else ["the changed slice is not listed"]

    return Command(["data_prep", "verify", data], names="prepared", problem="1 problem found", check=check)


@case("phantom_cases_zero", "phantom", "traceback")
def _phantom_zero(work: Path, shared: Shared) -> Command:
    return Command(["pipelines.testkit.phantoms", "acdc", "--out", work / "raw", "--cases", "0"], names="--cases", problem="")


# concurrency and interruption


def _popen_train(dataset: Path, out: Path, *extra, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, **QUIET}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    argv = ["monai.bundle", "run", "--config_file", TRAIN, "--dataset_dir", dataset, "--regime", "partial",
            "--hd95", "false", "--progress", "false", "--output_dir", out, *extra]
    return subprocess.Popen([sys.executable, "-m", *map(str, argv)], cwd=cwd, env=env, text=True, encoding="utf-8", errors="replace",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=preexec_supervised_child())  # it must hear the Ctrl+C case's SIGINT


def wait_for_a_checkpoint(out: Path, process: subprocess.Popen, seconds: float = 300.0) -> None:
    """Until the run ``process`` writes into ``out`` has written an epoch checkpoint: any, since each
    replaces the one before. Raises RuntimeError (with the run's last output) if it ends first or
    takes longer than ``seconds``."""
    from wss_monai.tracking.record import latest_checkpoint

    deadline = time.monotonic() + seconds
    while latest_checkpoint(out) is None:
        if process.poll() is not None:
            output = "".join(part or "" for part in process.communicate())[-3000:]
            raise RuntimeError(f"the run ended (exit {process.returncode}) before any checkpoint in {out}:\n{output}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no checkpoint in {out} within {seconds:.0f} s")
        time.sleep(0.05)


@case("train_second_run_into_a_busy_folder", "train", "concurrency")
def _busy_folder(work: Path, shared: Shared) -> Command:
    out = work / "busy"

    def start() -> subprocess.CompletedProcess:
        first = _popen_train(shared.prepared, out, "--epochs", "200", "--log_mlflow", "false", cwd=work / "cwd")
        try:
            wait_for_a_checkpoint(out, first)
            return run_module(train(shared.prepared, work, "--output_dir", out), cwd=work / "cwd")
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.communicate()

    return Command([], names="busy", problem="another training is writing there", out=out, start=start)


@case("train_ctrl_c", "train", "concurrency")
def _ctrl_c(work: Path, shared: Shared) -> Command:
    out = work / "interrupted"

    def start() -> subprocess.CompletedProcess:
        process = _popen_train(shared.prepared, out, "--epochs", "200", "--log_mlflow", "false", cwd=work / "cwd")
        try:
            wait_for_a_checkpoint(out, process)
            os.killpg(process.pid, signal.SIGINT)
            stdout, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def check(done: subprocess.CompletedProcess) -> list[str]:
        problems = [] if "--resume true" in done.stderr else ["does not say how to resume"]
        if not list((out / "checkpoints").glob("checkpoint_epoch=*.pt")):
            problems.append("no checkpoint left to resume from")
        return problems

    return Command([], code=130, out=out, start=start, check=check)


@case("train_two_runs_create_one_store", "train", "concurrency")
def _two_runs_one_store(work: Path, shared: Shared) -> Command:
    store = f"sqlite:///{work / 'out' / 'mlruns.db'}"
    (work / "out").mkdir()

    def start() -> subprocess.CompletedProcess:
        runs = [_popen_train(shared.prepared, work / "out" / name, "--epochs", "1", "--tracking_uri", store,
                             "--run_name", name, cwd=work / "cwd") for name in ("a", "b")]
        results = [(p.returncode, *p.communicate(timeout=600)) for p in runs]
        results = [(p.returncode, out, err) for p, (_, out, err) in zip(runs, results)]
        code = max(r[0] for r in results)
        return subprocess.CompletedProcess([], code, "".join(r[1] for r in results), "".join(r[2] for r in results))

    return Command([], code=0, out=work / "out", start=start)
