"""Multi-process training under torchrun (gloo on CPU), and a bundle logging to a real MLflow server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from wss_monai.tracking import start_local_server


@pytest.mark.slow
def test_multi_gpu_config_runs_ddp_under_torchrun(prepared_acdc, mlflow_db, tmp_path, helpers):
    out = tmp_path / "ddp"
    files = "['bundles/wss_segmentation/configs/train.json','bundles/wss_segmentation/configs/multi_gpu_train.json']"
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(port),
               "-m", "monai.bundle", "run", "--config_file", files, "--dataset_dir", str(prepared_acdc),
               "--regime", "individual", "--epochs", "1", "--tracking_uri", mlflow_db, "--output_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # its own process group: on a timeout the launcher and both workers are stopped together
    process = subprocess.Popen(command, cwd=helpers.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    assert process.returncode == 0, stderr[-4000:]
    info = helpers.run_info(out)
    assert info["status"] == "FINISHED" and info["run_name"].startswith("individual-s0-")  # one name for both ranks
    assert sorted(p.name for p in out.parent.iterdir()) == ["ddp"]
    run = helpers.mlflow_run(mlflow_db, info["run_id"])
    assert run.info.status == "FINISHED" and "val_dice_3d_mean" in run.data.metrics
    import torch

    state = torch.load(out / "models" / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)  # saved without the DDP wrapper
    assert stdout.count("wss_monai.train - INFO - epoch 1/1") == 1  # rank 0 reports


def _rest(url: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_bundle_logs_to_a_local_mlflow_server(prepared_acdc, tmp_path, run_bundle):
    server = start_local_server(backend_store_uri=f"sqlite:///{tmp_path}/server.db", artifacts_dir=tmp_path / "art",
                                log_path=tmp_path / "server.log", timeout=90)
    try:
        run_bundle("wss_segmentation", dataset_dir=str(prepared_acdc), regime="tags", epochs=1, tracking_uri=server.url,
                   run_name="served-tags", output_dir=str(tmp_path / "out"))
        experiment = _rest(f"{server.url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=acdc-lv")["experiment"]
        (found,) = _rest(f"{server.url}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        assert found["info"]["run_name"] == "served-tags" and found["info"]["status"] == "FINISHED"
        metrics = {m["key"]: m["value"] for m in found["data"]["metrics"]}
        assert {"val_dice_3d_mean", "val_dice_2d_one_mean", "val_dice_2d_nan_mean", "val_hd95_mean", "train_loss",
                "train_partial_ce", "train_size"} <= set(metrics)
        params = {p["key"]: p["value"] for p in found["data"]["params"]}
        assert params["regime"] == "tags" and params["learning_rate"] == "0.0005"
        listed = _rest(f"{server.url}/api/2.0/mlflow/artifacts/list?run_id={found['info']['run_id']}&path=plots")
        assert {f["path"] for f in listed["files"]} == {"plots/dice_curves.png", "plots/overlay.png"}
        assert any((tmp_path / "art").rglob("model.pt"))  # the checkpoint went through the server
    finally:
        server.stop(timeout=20)
    assert server.process.poll() is not None
