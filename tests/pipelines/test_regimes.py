"""``python -m pipelines.regimes`` end to end: a tiny phantom, two regimes through their bundles, the table from MLflow."""

from __future__ import annotations

import csv
import math

import pytest

from pipelines import regimes


@pytest.mark.slow
def test_two_regimes_one_epoch_give_a_table_row_each(tmp_path, capsys):
    out = tmp_path / "regimes"
    code = regimes.main(["--out", str(out), "--regimes", "individual,hybrid_1", "--epochs", "1", "--minutes-per-regime", "0",
                         "--cases", "4", "--size", "32", "--inplane", "48", "--threads", "1"])
    printed = capsys.readouterr().out
    assert code == 0, printed

    # one progress line per regime when it starts and when it ends
    assert "[1/2] individual: training (wss_segmentation" in printed and "[2/2] hybrid_1: training (wss_segmentation" in printed
    assert "[1/2] individual: best val 3D Dice" in printed and "[2/2] hybrid_1: best val 3D Dice" in printed

    with open(out / "regimes.csv", newline="", encoding="utf-8") as handle:
        rows = {row["regime"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"individual", "hybrid_1"}
    for regime, row in rows.items():
        assert row["status"] == "FINISHED", row
        assert row["bundle"] == "wss_segmentation"
        assert int(float(row["epochs"])) == 1 and int(float(row["best_epoch"])) == 1
        for key in ("dice_3d", "dice_2d_one", "dice_2d_nan"):
            assert 0.0 <= float(row[key]) <= 1.0, (regime, key, row[key])
        assert float(row["train_s"]) > 0 and float(row["ms_per_image"]) > 0 and math.isfinite(float(row["hd95_mm"]))

    table = (out / "regimes.md").read_text(encoding="utf-8")
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| regime | bundle | epochs")
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["individual", "hybrid_1"]
    assert "3 training patients" in table and "1 validation patients" in table  # the settings line names the data


def test_unknown_regime_is_one_error_line(tmp_path, capsys):
    assert regimes.main(["--out", str(tmp_path / "x"), "--regimes", "individual,nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown regime 'nonsense'") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_table_order_follows_the_papers():
    assert regimes.order_regimes(["full", "hybrid_3", "individual", "full_3", "partial", "volume3d", "tags", "common"]) == [
        "partial", "tags", "common", "individual", "volume3d", "full", "full_3", "hybrid_3"]


def test_each_regime_runs_through_its_bundle():
    for regime in ("individual", "volume3d", "hybrid_3", "full_3"):
        assert regimes.bundle_config(regime).parts[-3] == "wss_segmentation"
    assert regimes.bundle_config("individual").is_file()
