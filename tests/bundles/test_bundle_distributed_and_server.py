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
    process = subprocess.Popen(command, cwd=helpers.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
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
def test_two_trainings_on_a_local_mlflow_server_show_what_a_user_sees(prepared_acdc, tmp_path, run_bundle):
    """The live check: ``mlflow server`` on 127.0.0.1, two tiny trainings, and through the REST API
    what the UI shows: the experiment kind, the curated params, the Dataset column, metrics per
    epoch, the logged (and registered) model, the plots and the checkpoint."""
    from wss_monai.data.prepared import PreparedDataset

    server = start_local_server(backend_store_uri=f"sqlite:///{tmp_path}/server.db", artifacts_dir=tmp_path / "art",
                                log_path=tmp_path / "server.log", timeout=90)
    api = f"{server.url}/api/2.0/mlflow"
    try:
        common = dict(dataset_dir=str(prepared_acdc), epochs=2, tracking_uri=server.url)
        run_bundle("wss_segmentation", regime="tags", run_name="served-tags", output_dir=str(tmp_path / "a"), **common)
        run_bundle("wss_segmentation", regime="partial", run_name="served-partial", output_dir=str(tmp_path / "b"),
                   log_model=True, register_model="wss-live", **common)
        experiment = _rest(f"{api}/experiments/get-by-name?experiment_name=acdc-lv")["experiment"]
        tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
        assert tags["mlflow.experimentKind"] == "custom_model_development"  # the training view, not GenAI's
        runs = _rest(f"{api}/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        by_name = {r["info"]["run_name"]: r for r in runs}
        assert set(by_name) == {"served-tags", "served-partial"}
        fingerprint = PreparedDataset(prepared_acdc).fingerprint
        for name, run in by_name.items():
            assert run["info"]["status"] == "FINISHED"
            params = {p["key"]: p["value"] for p in run["data"]["params"]}
            assert len(params) <= 25 and params["dataset_fingerprint"] == fingerprint
            assert params["regime"] == name.split("-")[1] and params["learning_rate"] == "0.0005"
            (dataset,) = [d["dataset"] for d in run["inputs"]["dataset_inputs"]]
            assert dataset["digest"] == fingerprint and dataset["name"] == "acdc-lv"
            history = _rest(f"{api}/metrics/get-history?run_id={run['info']['run_id']}&metric_key=val_dice_3d_mean")
            assert sorted(m["step"] for m in history["metrics"]) == [1, 2]
            metrics = {m["key"] for m in run["data"]["metrics"]}
            assert {"val_dice_2d_one_mean", "val_hd95_mean", "train_loss", "time_per_epoch_s", "ms_per_image"} <= metrics
            listed = _rest(f"{api}/artifacts/list?run_id={run['info']['run_id']}&path=plots")
            assert {f["path"] for f in listed["files"]} == {"plots/dice_curves.png", "plots/overlay.png"}
        logged = _rest(f"{api}/logged-models/search", {"experiment_ids": [experiment["experiment_id"]]})["models"]
        (model,) = logged  # only the run that asked for it (the fixture turns model logging off by default)
        assert model["info"]["source_run_id"] == by_name["served-partial"]["info"]["run_id"]
        versions = _rest(f"{api}/registered-models/get-latest-versions", {"name": "wss-live"})["model_versions"]
        assert [v["version"] for v in versions] == ["1"]
        assert any((tmp_path / "art").rglob("model.pt"))  # the checkpoint went through the server
    finally:
        server.stop(timeout=20)
    assert server.process.poll() is not None
