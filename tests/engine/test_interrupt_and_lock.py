"""Ctrl+C and a second training into the same folder: one line each, nothing lost.

- Ctrl+C (SIGINT) during training: exit code 130, one line saying how to resume, no traceback,
  ``run.json`` and the MLflow run marked KILLED, its last checkpoint kept for ``--resume true``.
- A second training started into a folder where one is running: one line, exit 2, and the first
  run's files are untouched.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from pipelines.testkit.command_corpus.pipeline_cases import wait_for_a_checkpoint
from wss_monai.engine import latest_checkpoint


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_keeps_the_checkpoint(tiny_prepared, tmp_path, bundle_cli, engine_mlflow_db):
    out = tmp_path / "run"
    # many epochs, so that the interrupt surely lands mid-training, however late the poll sees the checkpoint
    common = ["--dataset_dir", tiny_prepared, "--regime", "partial", "--epochs", "50", "--hd95", "false",
              "--progress", "false", "--log_model", "false", "--output_dir", out]
    import subprocess

    process = bundle_cli([*common, "--tracking_uri", engine_mlflow_db, "--run_name", "interrupted"], stderr=subprocess.PIPE)
    try:
        wait_for_a_checkpoint(out, process, seconds=120.0)
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "Traceback" not in stdout
    lines = [line for line in stderr.splitlines() if line.strip()]
    said = [line for line in lines if "interrupted" in line]
    assert said == lines[-1:] and "--resume true" in said[0] and "KILLED" in said[0], stderr[-3000:]  # one line, last
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "KILLED"
    from mlflow import MlflowClient

    assert MlflowClient(tracking_uri=engine_mlflow_db).get_run(info["run_id"]).info.status == "KILLED"
    assert latest_checkpoint(out) is not None  # what --resume true starts from (test_resume.py)


@pytest.mark.slow
def test_a_second_training_into_a_busy_folder_is_refused(tiny_prepared, tmp_path, bundle_cli, engine_mlflow_db):
    import subprocess

    out = tmp_path / "run"
    common = ["--dataset_dir", tiny_prepared, "--regime", "partial", "--hd95", "false", "--progress", "false",
              "--output_dir", out, "--tracking_uri", engine_mlflow_db]
    first = bundle_cli([*common, "--epochs", "200", "--run_name", "first"])  # still training when the second starts
    try:
        wait_for_a_checkpoint(out, first, seconds=120.0)
        second = bundle_cli([*common, "--epochs", "1", "--run_name", "second"], stderr=subprocess.PIPE)
        _, stderr = second.communicate(timeout=120)
        assert first.poll() is None, "the first run ended before the second was tried"
        assert second.returncode == 2, stderr[-3000:]
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "another training is writing there" in errors[0] and "Traceback" not in stderr
        assert json.loads((out / "run.json").read_text())["run_name"] == "first"  # the second wrote nothing there
        assert latest_checkpoint(out)[1] >= 1  # the first run's checkpoints are still there
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.communicate(timeout=60)
