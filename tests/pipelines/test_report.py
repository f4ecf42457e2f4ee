"""``python -m pipelines.report``: any MLflow experiment, including runs made by hand, becomes tables and figures.

What a user relies on: a run made with a plain ``python -m monai.bundle run`` (timed like any bundle run)
and a run whose output folder is not on this machine (no timing) are both reported, with what they
lack left blank; seeds are averaged with their standard deviation; the papers' numbers sit
beside ours; bad input is one line and exit code 2.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines import report, store
from pipelines.reporting import paper

REPO = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["run_name"]: row for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_report_of_a_hand_made_bundle_run_and_a_run_without_folder(tiny_prepared, tmp_path, capsys):
    from wss_monai import tracking

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    config = REPO / "bundles" / "wss_segmentation" / "configs" / "train.json"
    run_dir = tmp_path / "runs" / "by-hand"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), "--dataset_dir", str(tiny_prepared),
           "--regime", "partial", "--epochs", "1", "--tracking_uri", uri, "--run_name", "by-hand", "--output_dir", str(run_dir),
           "--progress", "False"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace", env={"OMP_NUM_THREADS": "1", **__import__("os").environ})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    # a run logged by some other tool on the same prepared data: two epochs of validation Dice, no timing,
    # an output folder that is not here
    from wss_monai.data.prepared import PreparedDataset

    same_data = {"dataset": "acdc-lv", "dataset_fingerprint": PreparedDataset(tiny_prepared).fingerprint}
    with tracking.tracked_run("acdc-lv", "tags", 3, tracking_uri=uri, run_name="elsewhere",
                              tags={"output_dir": "/nowhere/elsewhere", **same_data}) as run:
        run.log_metrics({"val_dice_3d_mean": 0.40}, epoch=1)
        run.log_metrics({"val_dice_3d_mean": 0.55}, epoch=2)

    out = tmp_path / "report"
    assert report.main(["--experiment", "acdc-lv", "--tracking-uri", uri, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Report: {out / 'report.md'}" in printed and "mlflow ui --backend-store-uri" in printed

    rows = _rows(out / "runs.csv")
    assert set(rows) == {"by-hand", "elsewhere"}
    hand, bare = rows["by-hand"], rows["elsewhere"]
    assert hand["status"] == bare["status"] == "FINISHED"
    # the hand-made run: scores, its folder and its timing (every bundle run logs time_train_s)
    assert 0.0 <= float(hand["dice_3d"]) <= 1.0 and hand["best_epoch"] in ("1", "1.0") and math.isfinite(float(hand["hd95_mm"]))
    assert float(hand["ms_per_image"]) > 0 and float(hand["train_s"]) > 0
    assert hand["output_dir"] == str(run_dir) and hand["checkpoint"].endswith("models/model.pt")
    assert hand["row"] == "partial" and hand["bundle"] == "wss_segmentation"
    # the bare run: its best epoch's Dice, the rest blank
    assert float(bare["dice_3d"]) == pytest.approx(0.55) and bare["best_epoch"] in ("2", "2.0") and bare["epochs"] == "2"
    assert bare["output_dir"] == "" and bare["checkpoint"] == "" and bare["hd95_mm"] == "" and bare["seed"] in ("3", "3.0")

    summary = pd.read_csv(out / "summary.csv")
    by_row = summary.set_index("row")
    assert by_row.loc["partial", "paper"] == pytest.approx(0.1497)  # MedIA Table 1, looked up by dataset acdc-lv
    assert by_row.loc["tags", "paper"] == pytest.approx(0.7924)
    assert by_row.loc["tags", "dice_3d_mean"] == pytest.approx(0.55)

    text = (out / "report.md").read_text(encoding="utf-8")
    assert "| partial | 1 |" in text and "| tags | 1 | 0.550 | 0.7924" in text
    for figure in ("dice.png", "curves.png", "overlays.png"):
        assert f"]({figure})" in text, figure
        assert (out / figure).stat().st_size > 1000, figure
    assert (out / "time.png").exists() and "time.png" in text  # the bundle run was timed
    # the overlay figure could only use the run whose checkpoint is here, and says so
    assert "overlays leave out 1 finished run(s) without a local checkpoint" in text


def _frame(rows):
    base = {c: math.nan for c in store.RUN_COLUMNS}
    base.update(table="", key="", bundle="", output_dir="", checkpoint="", dataset_dir="", experiment="e", run_id="")
    return pd.DataFrame([{**base, **r} for r in rows], columns=store.RUN_COLUMNS)


def test_summary_averages_finished_seeds_and_counts_the_rest():
    frame = _frame([
        {"run_name": "a", "table": "1", "row": "individual", "regime": "individual", "dataset": "acdc-lv", "seed": 0,
         "status": "FINISHED", "dice_3d": 0.80, "ms_per_image": 10.0, "epochs": 5},
        {"run_name": "b", "table": "1", "row": "individual", "regime": "individual", "dataset": "acdc-lv", "seed": 1,
         "status": "FINISHED", "dice_3d": 0.90, "ms_per_image": 12.0, "epochs": 5},
        {"run_name": "c", "table": "1", "row": "individual", "regime": "individual", "dataset": "acdc-lv", "seed": 2,
         "status": "KILLED", "dice_3d": 0.10, "epochs": 1},
        {"run_name": "d", "table": "1", "row": "partial", "regime": "partial", "dataset": "acdc-lv", "seed": 0,
         "status": "FINISHED", "dice_3d": 0.20, "epochs": 5},
        {"run_name": "e", "table": "4", "row": "bounds_80_1100", "regime": "common", "dataset": "vertebral", "seed": 0,
         "status": "FINISHED", "dice_3d": 0.70, "epochs": 5},
    ])
    summary = report.summarize(frame)
    # Table 1 rows in the paper's order, then Table 4
    assert list(zip(summary["table"], summary["row"])) == [("1", "partial"), ("1", "individual"), ("4", "bounds_80_1100")]
    ind = summary[summary["row"] == "individual"].iloc[0]
    assert ind["seeds"] == 2 and ind["unfinished"] == 1  # the killed run is counted, not averaged
    assert ind["dice_3d_mean"] == pytest.approx(0.85) and ind["dice_3d_std"] == pytest.approx(0.0707107, rel=1e-5)
    assert ind["ms_per_image_mean"] == pytest.approx(11.0)
    assert ind["paper"] == pytest.approx(0.8708) and ind["paper_table"] == "1"
    assert summary[summary["row"] == "bounds_80_1100"].iloc[0]["paper"] == pytest.approx(0.79)
    partial = summary[summary["row"] == "partial"].iloc[0]
    assert math.isnan(partial["dice_3d_std"])  # one seed: no spread, shown blank
    text = report.summary_markdown(summary, "1")
    assert "| individual | 2 | 0.850 ± 0.071 | 0.8708 |" in text and "| 1 |" in text.splitlines()[-1]


def test_paper_numbers_are_kept_as_data_under_our_regime_names():
    from wss_monai.regimes import UnknownRegimeError, get_regime

    data = paper.load()
    assert set(data["tables"]) >= {"1", "2", "3", "4", "5", "midl-1"}
    assert paper.paper_value("1", "acdc", "individual")["value"] == 0.8708
    assert paper.paper_value("2", "acdc", "hybrid_10")["value"] == 0.8475
    assert paper.paper_value("3", "promise12", "common")["value"] == 0.7214
    assert paper.paper_value("4", "vertebral", "bounds_0_65536")["value"] == 0.5597
    assert paper.paper_value("5", "anything", "lagrangian_common")["value"] == 220
    for name, table in data["tables"].items():
        for dataset, rows in table["rows"].items():
            assert len({r["row"] for r in rows}) == len(rows), (name, dataset)
            for r in rows:
                if r["row"].startswith("bounds_"):
                    lo, hi = r["bounds"]
                    assert r["row"] == f"bounds_{lo}_{hi}"
                elif r["row"] != "lagrangian_upper":  # MIDL's Lagrangian upper bound has no regime of ours (label says so)
                    try:
                        get_regime(r["row"])
                    except UnknownRegimeError:
                        pytest.fail(f"table {name}: {r['row']!r} is not a wss-monai regime")
    assert paper.dataset_key("acdc-lv") == "acdc" and paper.dataset_key("promise12-prostate") == "promise12"
    assert paper.dataset_key("my-data") is None


def test_unknown_experiment_is_one_line_listing_those_that_exist(tmp_path, capsys):
    from wss_monai import tracking

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    with tracking.tracked_run("acdc-lv", "partial", 0, tracking_uri=uri):
        pass
    capsys.readouterr()  # MLflow's own lines when it created the store
    assert report.main(["--experiment", "nope", "--tracking-uri", uri, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no experiment 'nope'") and "acdc-lv" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_missing_store_and_missing_option_are_one_line(tmp_path, capsys):
    assert report.main(["--experiment", "x", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"]) == 2
    err = capsys.readouterr().err
    assert "no MLflow store there" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "none.db").exists()
    with pytest.raises(SystemExit) as exit_info:
        report.main([])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--experiment" in err


def test_unreachable_server_and_out_a_file_are_one_line(tmp_path, capsys):
    """Before: five chained tracebacks for a server that does not answer, and a traceback for --out a file."""
    import socket

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert report.main(["--experiment", "x", "--tracking-uri", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "does not answer" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()

    from wss_monai import tracking

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    with tracking.tracked_run("acdc-lv", "partial", 0, tracking_uri=uri):
        pass
    capsys.readouterr()
    afile = tmp_path / "afile"
    afile.write_text("precious\n")
    assert report.main(["--experiment", "acdc-lv", "--tracking-uri", uri, "--out", str(afile)]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and len(err.strip().splitlines()) == 1 and afile.read_text() == "precious\n"
