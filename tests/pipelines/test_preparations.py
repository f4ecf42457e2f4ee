"""One experiment, several preparations of its data: reports never average two preparations as seeds.

An experiment is named after its dataset (``acdc-lv``), so the same phantom prepared at 256 and
at 64 pixels lands in one experiment. What a user relies on: each run's prepared dataset is
known by its fingerprint (tag ``dataset_fingerprint``); the report, the regimes table and
``pipelines.reproduce`` group by it, so two preparations are two rows of one seed each, a seed
that finished twice counts once, runs logged before fingerprints still report, the papers'
numbers sit only beside the dataset they were measured on, and a reproduction never takes a run
of another preparation for one of its own.

No training here: runs are written straight into a temporary MLflow store.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipelines import regimes, report, reproduce
from pipelines.reporting import results
from pipelines.store import RUN_COLUMNS

FP_256, FP_64 = "a1b2c3d4e5f6", "0f9e8d7c6b5a"
T0 = 1_700_000_000_000  # a start time (ms); runs of a test start one second apart


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite MLflow store shared by this module's tests (each test uses its own experiment)."""
    from wss_monai import tracking

    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlruns.db'}"
    return uri, tracking.store_client(uri)


def _experiment(store, name: str) -> str:
    return store[1].create_experiment(name)


def _run(store, experiment_id: str, name: str, *, regime: str = "individual", seed: int | None = 0, dataset: str = "acdc-lv",
         fingerprint: str | None = None, status: str = "FINISHED", dice: float = 0.5, start: int = 0,
         tags: dict | None = None, params: dict | None = None):
    """A run as the bundles log it: tags, per-epoch validation Dice, params, its end status."""
    client = store[1]
    all_tags = {"regime": regime, "dataset": dataset, **(tags or {})}
    if seed is not None:
        all_tags["seed"] = str(seed)
    if fingerprint is not None:
        all_tags["dataset_fingerprint"] = fingerprint
    run = client.create_run(experiment_id, start_time=T0 + 1000 * start, tags=all_tags, run_name=name)
    run_id = run.info.run_id
    client.log_metric(run_id, "val_dice_3d_mean", dice / 2, step=1)
    client.log_metric(run_id, "val_dice_3d_mean", dice, step=2)
    for key, value in (params or {}).items():
        client.log_param(run_id, key, value)
    if status != "RUNNING":
        client.set_terminated(run_id, status=status, end_time=T0 + 1000 * start + 500)
    return run_id


def _report(store, experiment: str, out):
    """``python -m pipelines.report`` on the store: (summary.csv, report.md)."""
    assert report.main(["--experiment", experiment, "--tracking-uri", store[0], "--out", str(out), "--no-overlays"]) == 0
    summary = pd.read_csv(out / "summary.csv", dtype={"table": str, "fingerprint": str}, keep_default_na=False)
    return summary, (out / "report.md").read_text(encoding="utf-8")


def test_two_preparations_of_one_dataset_are_two_rows_of_one_seed_each(store, tmp_path, capsys):
    """The tester's case: seed 0 at 256 px and seed 0 at 64 px once printed as 'individual | 2 | 0.074 ± 0.041'."""
    exp = _experiment(store, "two-preparations")
    _run(store, exp, "big", fingerprint=FP_256, dice=0.9, start=0, params={"resolved.image_size": "[256, 256]"})
    _run(store, exp, "small", fingerprint=FP_64, dice=0.3, start=1, params={"resolved.image_size": "[64, 64]"})

    summary, text = _report(store, "two-preparations", tmp_path / "r")

    rows = summary[summary["row"] == "individual"].set_index("fingerprint")
    assert sorted(rows.index) == sorted([FP_256, FP_64])  # two rows, one per preparation
    assert list(rows["seeds"]) == [1, 1]  # never "2 seeds"
    assert rows.loc[FP_256, "dice_3d_mean"] == pytest.approx(0.9) and rows.loc[FP_64, "dice_3d_mean"] == pytest.approx(0.3)
    assert rows.loc[FP_256, "image_size"] == "256x256" and rows.loc[FP_64, "image_size"] == "64x64"
    assert rows.loc[FP_256, "dice_3d_std"] == "" and rows.loc[FP_64, "dice_3d_std"] == ""  # one seed: no spread

    # near the top: how many preparations, their fingerprints and dataset names
    top = text.split("## ")[0]
    assert "2 different preparations" in top and f"`{FP_256}` (acdc-lv, 256x256, 1 run)" in top
    assert f"`{FP_64}` (acdc-lv, 64x64, 1 run)" in top
    # the table tells the rows apart by a short fingerprint
    assert "| row | preparation | seeds |" in text
    assert "| individual | a1b2c3 | 1 | 0.900 |" in text and "| individual | 0f9e8d | 1 | 0.300 |" in text
    table = text.split("## Regimes")[1].split("## ")[0]
    assert "| individual | 2 |" not in table and "±" not in table
    printed = capsys.readouterr().out
    assert "2 different preparations" in printed  # the console says so too


def test_a_seed_finished_twice_on_one_preparation_counts_once_by_its_latest_run(store, tmp_path):
    exp = _experiment(store, "duplicates")
    _run(store, exp, "s0-first", seed=0, fingerprint=FP_64, dice=0.4, start=0)
    _run(store, exp, "s0-again", seed=0, fingerprint=FP_64, dice=0.6, start=1)
    _run(store, exp, "s1", seed=1, fingerprint=FP_64, dice=0.8, start=2)
    _run(store, exp, "s2-killed", seed=2, fingerprint=FP_64, dice=0.1, start=3, status="KILLED")

    summary, text = _report(store, "duplicates", tmp_path / "r")

    row = summary[summary["row"] == "individual"].iloc[0]
    assert row["seeds"] == 2 and row["duplicates"] == 1 and row["unfinished"] == 1
    assert row["dice_3d_mean"] == pytest.approx(0.7)  # seed 0 by its latest run (0.6), seed 1 (0.8)
    assert "Duplicate runs: 1 FINISHED run(s) repeat a seed" in text and "its latest run is the one averaged" in text
    assert "different preparations of their data" not in text  # one preparation: no such line
    assert "| row | seeds |" in text and "| individual | 2 | 0.700 ± 0.141 |" in text  # no preparation column


def test_runs_without_a_fingerprint_report_as_one_unknown_preparation(store, tmp_path):
    """Runs logged before the fingerprint tag existed: still reported, as one preparation with an empty fingerprint."""
    exp = _experiment(store, "old-runs")
    _run(store, exp, "old-s0", seed=0, dice=0.5, start=0)
    _run(store, exp, "old-s1", seed=1, dice=0.7, start=1)

    summary, text = _report(store, "old-runs", tmp_path / "old")
    row = summary[summary["row"] == "individual"].iloc[0]
    assert row["fingerprint"] == "" and row["seeds"] == 2 and row["dice_3d_mean"] == pytest.approx(0.6)
    runs = pd.read_csv(tmp_path / "old" / "runs.csv", keep_default_na=False)
    assert list(runs["fingerprint"]) == ["", ""]
    assert "different preparations of their data" not in text and "| preparation |" not in text  # the common case: no line, no column

    # a new run beside them is another preparation: the old ones are not averaged with it
    _run(store, exp, "new-s0", seed=0, fingerprint=FP_256, dice=0.9, start=2)
    summary, text = _report(store, "old-runs", tmp_path / "mixed")
    rows = summary[summary["row"] == "individual"].set_index("fingerprint")
    assert rows.loc["", "seeds"] == 2 and rows.loc[FP_256, "seeds"] == 1
    assert "no fingerprint (runs logged before fingerprints) (acdc-lv, 2 runs)" in text
    assert "| individual | unknown | 2 | 0.600 ± 0.141 |" in text and "| individual | a1b2c3 | 1 | 0.900 |" in text


def test_paper_values_sit_only_beside_the_dataset_they_were_measured_on():
    """MedIA Table 1 is the left ventricle of ACDC (dataset acdc-lv): not acdc-rv's, not a custom dataset's."""
    base = {c: math.nan for c in RUN_COLUMNS}
    base.update(table="", key="", bundle="", output_dir="", checkpoint="", dataset_dir="", experiment="e", run_id="",
                status="FINISHED", regime="individual", row="individual", seed=0, dice_3d=0.8, epochs=2)
    frame = pd.DataFrame([{**base, "run_name": "lv", "dataset": "acdc-lv", "fingerprint": FP_256},
                          {**base, "run_name": "rv", "dataset": "acdc-rv", "fingerprint": FP_64},
                          {**base, "run_name": "mine", "dataset": "my-data", "fingerprint": "123456789abc"},
                          {**base, "run_name": "t1-rv", "table": "1", "dataset": "acdc-rv", "fingerprint": FP_64}],
                         columns=RUN_COLUMNS)
    summary = report.summarize(frame)
    paper = {(t, d): v for t, d, v in zip(summary["table"], summary["dataset"], summary["paper"])}
    assert paper[("", "acdc-lv")] == pytest.approx(0.8708)
    assert math.isnan(paper[("", "acdc-rv")]) and math.isnan(paper[("", "my-data")])
    assert math.isnan(paper[("1", "acdc-rv")])  # even in a run tagged as Table 1
    text = report.summary_markdown(summary, "")
    assert "| individual | a1b2c3 | 1 | 0.800 | 0.8708 (T1) |" in text and "| individual | 0f9e8d | 1 | 0.800 |  |" in text


def test_reproduce_takes_no_run_of_another_preparation_for_its_own(store, tmp_path, monkeypatch):
    """A store shared with a reproduction prepared otherwise holds the same keys: those runs are neither done nor restarted."""
    prepared = tmp_path / "prepared" / "acdc"
    # the fingerprint of the prepared dataset comes from PreparedDataset (another change); here it is given
    monkeypatch.setattr(reproduce, "_fingerprint", lambda folder: FP_64)
    plan, _ = reproduce.plan_runs(["1"], dataset="acdc", seeds=[0], prepared=prepared, only=["partial", "individual", "full"])
    exp = _experiment(store, "shared-store")
    key = {p.row: p.key for p in plan}
    tagged = lambda row: {"wss.key": key[row], "wss.table": "1", "wss.row": row}  # noqa: E731
    other = _run(store, exp, "t1-individual-s0", fingerprint=FP_256, tags=tagged("individual"))
    other_running = _run(store, exp, "t1-partial-s0", regime="partial", fingerprint=FP_256, status="RUNNING", tags=tagged("partial"))
    old_elsewhere = _run(store, exp, "t1-full-s0", regime="full", tags=tagged("full"),  # no fingerprint, another folder
                         params={"resolved.dataset_dir": str(tmp_path / "elsewhere" / "acdc")})
    mine = _run(store, exp, "t1-full-s0-a2", regime="full", fingerprint=FP_64, tags=tagged("full"))

    state = reproduce.reconcile(plan, store[0], "shared-store", tmp_path / "out")

    assert state.done == {key["full"]: mine}  # only the run on our preparation is done
    assert sorted(item.row for item, _ in state.todo) == ["individual", "partial"]
    assert all(name not in {"t1-individual-s0", "t1-partial-s0"} for _, name in state.todo)  # fresh names
    assert sorted(state.foreign) == ["t1-full-s0", "t1-individual-s0", "t1-partial-s0"] and state.marked == []
    running = store[1].get_run(other_running)
    assert running.info.status == "RUNNING" and "wss.interrupted" not in running.data.tags  # another's run is left alone
    assert not state.belongs(store[1].get_run(other), plan) and not state.belongs(store[1].get_run(old_elsewhere), plan)
    assert state.belongs(store[1].get_run(mine), plan)

    # a run logged before fingerprints, on our own prepared folder, still counts as ours
    old_mine = _run(store, exp, "t1-individual-s0-a2", params={"resolved.dataset_dir": str(prepared)}, tags=tagged("individual"))
    assert reproduce.reconcile(plan, store[0], "shared-store", tmp_path / "out").done[key["individual"]] == old_mine


def test_the_regimes_table_names_the_preparation_when_it_holds_several():
    frame = pd.DataFrame([{"regime": "individual", "bundle": "wss_segmentation", "status": "FINISHED", "dice_3d": 0.9,
                           "fingerprint": FP_256},
                          {"regime": "individual", "bundle": "wss_segmentation", "status": "FINISHED", "dice_3d": 0.3,
                           "fingerprint": FP_64}])
    for column, _ in results.COLUMNS:
        if column not in frame:
            frame[column] = math.nan
    text = regimes.to_markdown(frame)
    assert text.splitlines()[0].startswith("| regime | preparation | bundle |")
    assert "| individual | a1b2c3 | wss_segmentation |" in text and "| individual | 0f9e8d | wss_segmentation |" in text
    assert "preparation" not in regimes.to_markdown(frame.iloc[:1])  # one preparation: the usual table
