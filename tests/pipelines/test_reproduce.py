"""``python -m pipelines.reproduce``: the papers' tables as keyed bundle runs that survive a kill.

The contract: every (table, row, seed) has a key stored with its MLflow run; a rerun after a
SIGKILL completes only what is missing (the finished runs stay as they are, the interrupted one
is marked and started again under a new name), never two finished runs for one key; bad input is
one line and exit code 2.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pipelines import reproduce

REPO = Path(__file__).resolve().parents[2]


def _keyed_runs(db: Path) -> list:
    """The runs of the store that carry a pipeline key (MLflow's client, once the store exists)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiments = client.search_experiments()
    return [r for r in client.search_runs([e.experiment_id for e in experiments], max_results=1000) if "wss.key" in r.data.tags]


def _statuses(db: Path) -> dict[str, tuple[str, str]]:
    """Run id -> (status, key) of the keyed runs, read without touching the store's schema.

    Polling with MLflow's client would create or migrate the store while the process under test
    does the same; a read-only SQLite connection does neither.
    """
    import sqlite3

    if not db.is_file():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            rows = con.execute("SELECT runs.run_uuid, runs.status, tags.value FROM runs JOIN tags "
                               "ON runs.run_uuid = tags.run_uuid WHERE tags.key = 'wss.key'").fetchall()
    except sqlite3.Error:  # not created yet, or locked for a moment
        return {}
    return {run_id: (status, key) for run_id, status, key in rows}


def _bundle_processes(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and "monai.bundle" in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_killed_reproduction_resumes_with_only_the_missing_runs(tiny_vertebral_raw, tmp_path):
    out = tmp_path / "repro"
    db = out / "mlruns.db"
    argv = [sys.executable, "-m", "pipelines.reproduce", "--dataset", "vertebral", "--src", str(tiny_vertebral_raw), "--out", str(out),
            "--tables", "4", "--regimes", "individual,bounds_80_1100", "--seeds", "1", "--epochs", "2",
            "--prepare-args", "--size 32", "--no-overlays"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
    # kill it once one run has FINISHED in MLflow and the next one is training
    deadline = time.time() + 240
    finished = running = []
    while time.time() < deadline and first.poll() is None:
        statuses = _statuses(db)
        finished = [i for i, (status, _) in statuses.items() if status == "FINISHED"]
        running = [i for i, (status, _) in statuses.items() if status == "RUNNING"]
        if finished and running:
            break
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    log.close()
    assert len(finished) == 1 and len(running) == 1, (tmp_path / "first.log").read_text()[-3000:]
    before = {r.info.run_id: r for r in _keyed_runs(db)}
    done_before, killed = before[finished[0]], before[running[0]]
    assert killed.info.status == "RUNNING"  # a SIGKILL leaves it so: the rerun must notice
    # its bundle run died with it (nothing left to finish later under the same key)
    for _ in range(50):
        if not _bundle_processes(str(out)):
            break
        time.sleep(0.1)
    assert not _bundle_processes(str(out))

    second = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace", env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert ("2 runs planned" in second.stdout and "1 already finished, 1 to run" in second.stdout
            and f"1 interrupted run(s) marked and restarted: {killed.info.run_name}" in second.stdout), second.stdout[-3000:]

    runs = {r.info.run_id: r for r in _keyed_runs(db)}
    # the finished run is untouched
    again = runs[done_before.info.run_id]
    assert again.info.status == "FINISHED" and again.info.end_time == done_before.info.end_time
    # the interrupted run is marked, KILLED, and its key was run again under a fresh name
    dead = runs[killed.info.run_id]
    assert dead.info.status == "KILLED" and "wss.interrupted" in dead.data.tags
    retry = [r for r in runs.values() if r.data.tags["wss.key"] == killed.data.tags["wss.key"] and r.info.run_id != dead.info.run_id]
    assert [r.info.run_name for r in retry] == [f"{killed.info.run_name}-a2"]
    # every key ends FINISHED exactly once
    keys = Counter(r.data.tags["wss.key"] for r in runs.values() if r.info.status == "FINISHED")
    assert keys == Counter({"vertebral/t4/individual/s0": 1, "vertebral/t4/bounds_80_1100/s0": 1})

    # Table 4's fixed bounds: the paper's (80, 1100) px on 256 x 256, scaled to the 32 x 32 slices,
    # as the common bounds of a variant of the dataset, trained with the common regime
    bounded = next(r for r in runs.values() if r.data.tags["wss.key"] == "vertebral/t4/bounds_80_1100/s0")
    assert bounded.data.tags["regime"] == "common" and bounded.data.tags["wss.bounds"] == "1.2,17.2"
    with open(out / "prepared" / "vertebral-bounds_80_1100" / "bounds.csv", newline="") as handle:
        present = [row for row in csv.DictReader(handle) if row["tag"] == "1"]
    assert present and {(float(r["common_lo"]), float(r["common_hi"])) for r in present} == {(1.2, 17.2)}

    # the report: Table 4 with each row and its seed, the paper's value beside ours
    text = (out / "report" / "report.md").read_text(encoding="utf-8")
    assert "## Table 4" in text
    assert re.search(r"\| individual \| 1 \| [0-9.]+ \| 0\.8604 \|", text)
    assert re.search(r"\| bounds_80_1100 \| 1 \| [0-9.]+ \| 0\.7900 \|", text)
    assert "KILLED" in text  # the interrupted attempt is listed among the runs, not averaged


def test_plan_covers_the_papers_tables_with_unique_keys(tmp_path):
    variants = {row: (tmp_path / row, reproduce.variant_bounds(pair, 256 * 256)) for row, pair in reproduce.bounds_pairs()}
    plan, notes = reproduce.plan_runs(["1", "2", "3", "4", "5"], dataset="acdc", seeds=[0, 1], prepared=tmp_path / "p",
                                      variants=variants, training_patients=20)
    keys = [p.key for p in plan]
    assert len(keys) == len(set(keys))
    rows = {t: [p.row for p in plan if p.table == t and p.seed == 0] for t in "12345"}
    assert rows["1"] == list(reproduce.TABLE1_ROWS)
    assert rows["2"] == ["common", "full_5", "hybrid_5", "full_10", "hybrid_10", "full"]  # 25 >= 20 patients: left out
    assert notes == ["Table 2: n = 25 left out (the dataset has 20 training patients)"]
    assert rows["3"] == ["partial", "tags", "common", "individual", "full"]
    assert rows["4"] == ["individual", "bounds_80_1100", "bounds_80_5000", "bounds_80_10000", "bounds_0_1100",
                         "bounds_0_5000", "bounds_0_10000", "bounds_0_65536"]
    assert all(p.regime == "common" and p.prepared == tmp_path / p.row for p in plan if p.row.startswith("bounds_"))
    assert all(p.overrides == {"batch_size": 1} and p.epochs == reproduce.TABLE5_EPOCHS for p in plan if p.table == "5")
    assert {p.seed for p in plan} == {0, 1} and len(plan) == 2 * sum(len(r) for r in rows.values())
    assert plan[0].key == "acdc/t1/partial/s0" and plan[0].base_name == "t1-partial-s0"
    from wss_monai.regimes import get_regime

    for item in plan:
        get_regime(item.regime)  # every row trains a regime the bundles know


def test_fixed_bounds_keep_their_share_of_the_image():
    assert reproduce.variant_bounds((80, 1100), 256 * 256) == (80, 1100)
    assert reproduce.variant_bounds((80, 1100), 128 * 128) == (20, 275)
    assert reproduce.variant_bounds((0, 65536), 64 * 64) == (0, 4096)


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "acdc"], "the following arguments are required: --src"),
    (["--dataset", "mnist", "--src", "."], "argument --dataset: invalid choice: 'mnist'"),
    (["--dataset", "acdc", "--src", ".", "--tables", "1,7"], "--tables '1,7': unknown table '7'"),
    (["--dataset", "acdc", "--src", ".", "--seeds", "0"], "--seeds 0: at least 1"),
    (["--dataset", "acdc", "--src", ".", "--regimes", "individual,nonsense"], "unknown regime 'nonsense'"),
    (["--dataset", "acdc", "--src", "/no/such/folder"], "--src /no/such/folder: no such folder"),
    (["--dataset", "acdc", "--src", ".", "--hybrid-n", "5,x"], "--hybrid-n '5,x': expected comma-separated whole numbers"),
])
def test_bad_input_is_one_line_and_exit_2_before_anything_is_written(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    try:
        code = reproduce.main([*argv, "--out", str(out)])
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_bad_raw_data_stops_with_data_preps_one_line(tmp_path, capsys):
    src = tmp_path / "raw"
    src.mkdir()
    assert reproduce.main(["--dataset", "acdc", "--src", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(src.name) in err[0]
