"""Ctrl+C and a second training into the same folder: one line each, nothing lost.

- Ctrl+C (SIGINT) during training: exit code 130, one line saying how to resume, no traceback,
  ``run.json`` and the MLflow run marked KILLED; the run then resumes to the end.
- A second training started into a folder where one is running: one line, exit 2, and the first
  run's checkpoints are untouched.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest


def _wait_for(path, process, seconds=120.0):
    deadline = time.monotonic() + seconds
    while not path.is_file():
        assert process.poll() is None, process.communicate()[0][-3000:]
        assert time.monotonic() < deadline, f"{path} did not appear within {seconds:.0f} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_is_one_line_and_the_run_resumes(tiny_prepared, tmp_path, bundle_cli, engine_mlflow_db):
    out = tmp_path / "run"
    common = ["--dataset_dir", tiny_prepared, "--regime", "partial", "--epochs", "3", "--hd95", "false",
              "--progress", "false", "--output_dir", out]
    import subprocess

    process = bundle_cli([*common, "--tracking_uri", engine_mlflow_db, "--run_name", "interrupted"], stderr=subprocess.PIPE)
    try:
        _wait_for(out / "checkpoints" / "checkpoint_epoch=1.pt", process)
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

    resumed = bundle_cli([*common, "--resume", "true"])
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output[-3000:]
    assert json.loads((out / "run.json").read_text())["status"] == "FINISHED"


@pytest.mark.slow
def test_a_second_training_into_a_busy_folder_is_refused(tiny_prepared, tmp_path, bundle_cli, engine_mlflow_db):
    import subprocess

    out = tmp_path / "run"
    common = ["--dataset_dir", tiny_prepared, "--regime", "partial", "--hd95", "false", "--progress", "false",
              "--output_dir", out, "--tracking_uri", engine_mlflow_db]
    first = bundle_cli([*common, "--epochs", "3", "--run_name", "first"])
    try:
        _wait_for(out / "checkpoints" / "checkpoint_epoch=1.pt", first)
        before = sorted(p.name for p in (out / "checkpoints").iterdir())
        second = bundle_cli([*common, "--epochs", "1", "--run_name", "second"], stderr=subprocess.PIPE)
        _, stderr = second.communicate(timeout=120)
        assert second.returncode == 2, stderr[-3000:]
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "another training is writing there" in errors[0] and "Traceback" not in stderr
        after = sorted(p.name for p in (out / "checkpoints").iterdir())
        assert set(before) <= set(after) or first.poll() is not None  # the first run's files are still there
        output, _ = first.communicate(timeout=300)
        assert first.returncode == 0, output[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert json.loads((out / "run.json").read_text())["status"] == "FINISHED"
