"""``python -m pipelines.demo``: phantom, preparation, regimes as parallel bundle runs, a report, and where it all is.

The demo's own settings (the 9 regimes, 15 and 3 minutes) are checked as data; the end-to-end
test runs the same code with the tuning options at their smallest: 4 patients at 32 x 32, two
regimes (one of them the hybrid), 1 epoch, 2 runs at once.
"""

from __future__ import annotations

import csv

import pytest

from pipelines import demo


@pytest.mark.slow
def test_demo_trains_regimes_in_parallel_and_ends_with_the_report_and_the_ui_command(tmp_path, capsys):
    from mlflow import MlflowClient

    out = tmp_path / "demo"
    code = demo.main(["--out", str(out), "--cases", "4", "--size", "32", "--inplane", "48", "--regimes", "partial,hybrid_{n}",
                      "--hybrid-n", "1", "--epochs", "1", "--minutes", "3", "--parallel", "2"])
    printed = capsys.readouterr().out
    assert code == 0, printed

    # it ends by saying where the report is and how to open the runs
    last = printed.strip().splitlines()[-2:]
    assert last[0].strip() == f"report:       {out / 'report' / 'report.md'}"
    assert last[1].strip() == f"MLflow runs:  mlflow ui --backend-store-uri sqlite:///{out / 'mlruns.db'}"
    # the comparison table is printed, in Table 1 order, the paper's value beside ours
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    assert [line.split("|")[1].strip() for line in table[1:]] == ["partial", "hybrid_1"]
    assert "| 0.1497" in table[1]

    # each regime is a bundle run in MLflow, marked as the demo's; the two ran at the same time
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name("acdc-lv").experiment_id])
    assert sorted(r.data.tags["regime"] for r in runs) == ["hybrid_1", "partial"]
    assert {r.data.tags["bundle"] for r in runs} == {"wss_segmentation"}
    assert all(r.info.status == "FINISHED" and r.data.tags["wss.pipeline"] == "demo" for r in runs)
    first, second = sorted(runs, key=lambda r: r.info.start_time)
    # Started together, the two runs open their MLflow runs within their start-up jitter; run one
    # after the other, the second would open its run at least one whole start-up (7-15 s) after
    # the first ended. One-epoch runs last about a second, so their MLflow intervals may miss each
    # other by a fraction of a second even when the processes overlapped.
    together = second.info.start_time < first.info.end_time or second.info.start_time - first.info.start_time < 5000
    assert together, "--parallel 2 should run the two at once"
    assert all("time_train_s" in r.data.metrics for r in runs)  # each run was timed by the TimeBudget handler

    # the report: Markdown with the figures beside it, and the CSV tables
    report_dir = out / "report"
    text = (report_dir / "report.md").read_text(encoding="utf-8")
    for figure in ("dice.png", "curves.png", "overlays.png", "time.png"):
        assert f"]({figure})" in text and (report_dir / figure).stat().st_size > 1000, figure
    with open(report_dir / "runs.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["row"] for r in rows) == ["hybrid_1", "partial"]
    assert all(0 <= float(r["dice_3d"]) <= 1 and float(r["ms_per_image"]) > 0 for r in rows)
    assert (out / "prepared_acdc" / "dataset.json").is_file() and (out / "raw_acdc").is_dir()


def test_the_settings_are_one_constant_each_and_fit_the_promised_time():
    for settings, minutes in ((demo.FULL, 15), (demo.QUICK, 3)):
        assert isinstance(settings, demo.DemoSettings) and settings.minutes <= minutes
        assert demo.check(settings) is None
        regimes = demo.regimes_of(settings)
        n = settings.hybrid_n
        assert regimes == ["partial", "tags", "common", "individual", "volume3d", "full", f"full_{n}", f"hybrid_{n}",
                           "lagrangian_individual"]
    assert demo.FULL.parallel == demo.QUICK.parallel == 2  # the 2 cores of the target machine, one run each
    assert demo.QUICK.cases < demo.FULL.cases and demo.QUICK.hybrid_n < demo.FULL.hybrid_n
    # what the phantom leaves is split evenly over the rounds of parallel runs: 9 regimes, 2 at a time = 5 rounds
    per_run = demo.seconds_per_run(demo.FULL, elapsed_s=30.0, n_runs=9)
    assert per_run == pytest.approx((15 * 60 - 30 - demo.REPORT_RESERVE_S) / 5)
    assert 5 * per_run + 30 + demo.REPORT_RESERVE_S == pytest.approx(15 * 60)
    assert demo.seconds_per_run(demo.QUICK, elapsed_s=500.0, n_runs=9) == demo.MIN_SECONDS_PER_RUN


def test_options_override_one_setting_each():
    args = demo.parse_args(["--quick", "--cases", "6", "--regimes", "individual, full_{n}", "--hybrid-n", "3"])
    settings = demo.settings_from(args)
    assert settings.cases == 6 and settings.size == demo.QUICK.size and settings.minutes == demo.QUICK.minutes
    assert demo.regimes_of(settings) == ["individual", "full_3"]


@pytest.mark.parametrize("argv, message", [
    (["--regimes", "individual,nonsense"], "unknown regime 'nonsense'"),
    (["--cases", "8", "--hybrid-n", "7"], "full_7 needs 7 fully annotated patients"),
    (["--cases", "3"], "at least 4 patients"),
    (["--minutes", "0"], "--minutes must be positive"),
])
def test_bad_settings_are_one_line_and_exit_2_before_anything_is_written(tmp_path, capsys, argv, message):
    assert demo.main(["--out", str(tmp_path / "d"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_a_phantom_prepared_with_other_settings_is_not_reused_silently(tmp_path, capsys):
    prepared = tmp_path / "d" / "prepared_acdc"
    prepared.mkdir(parents=True)
    (prepared / "dataset.json").write_text('{"training": [{"patient": "p1"}], "validation": [{"patient": "p2"}]}')
    (prepared / "prep.json").write_text('{"options": {"size": [64, 64]}}')
    assert demo.main(["--out", str(tmp_path / "d"), "--quick"]) == 2
    err = capsys.readouterr().err
    assert "prepared with 2 patients at 64 px" in err and len(err.strip().splitlines()) == 1


def test_help_documents_the_tuning_options(capsys):
    with pytest.raises(SystemExit) as info:
        demo.parse_args(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--quick" in text and "tuning and tests" in text
    for option in ("--cases", "--size", "--epochs", "--minutes", "--parallel", "--regimes", "--hybrid-n"):
        assert option in text, option
