"""wss_monai.tracking: URIs, run names, config flattening, logging to SQLite, a real local server."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wss_monai import tracking
from wss_monai.tracking import (
    MAX_KEY_LENGTH,
    MAX_PARAM_VALUE_LENGTH,
    flatten_config,
    resolve_tracking_uri,
    runs_dataframe,
    start_local_server,
    tracked_run,
    unique_run_name,
)

# --------------------------------------------------------------------------------------------
# where runs go


def test_default_uri_is_sqlite_in_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = f"sqlite:///{tmp_path.resolve()}/mlruns.db"
    assert resolve_tracking_uri() == expected == tracking.default_tracking_uri()
    assert resolve_tracking_uri("") == expected
    assert expected.startswith("sqlite:////")  # absolute path: sqlite:/// + /abs/path


def test_other_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("http://127.0.0.1:5000/") == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("https://mlflow.example.org") == "https://mlflow.example.org"
    assert resolve_tracking_uri("sqlite:////data/runs.db") == "sqlite:////data/runs.db"
    # relative SQLite paths are pinned to the folder they were given in
    assert resolve_tracking_uri("sqlite:///sub/runs.db") == f"sqlite:///{tmp_path.resolve()}/sub/runs.db"
    assert resolve_tracking_uri("runs.db") == f"sqlite:///{tmp_path.resolve()}/runs.db"
    assert resolve_tracking_uri("postgresql://u@db/mlflow") == "postgresql://u@db/mlflow"
    for file_store in ("file:///tmp/mlruns", "./mlruns", str(tmp_path)):
        with pytest.raises(ValueError, match="file store"):
            resolve_tracking_uri(file_store)


def test_experiment_names():
    assert tracking.experiment_name("ACDC", "LV") == "acdc-lv"
    assert tracking.experiment_name("promise12", "prostate") == "promise12-prostate"
    assert tracking.experiment_name("vertebral") == "vertebral"
    with pytest.raises(ValueError):
        tracking.experiment_name("")


def test_run_names_are_unique_and_readable():
    import datetime as dt

    frozen = dt.datetime(2025, 1, 2, 3, 4, 5)
    names = {unique_run_name("individual+gated_crf", 3, now=frozen) for _ in range(500)}
    assert len(names) == 500  # same second, same regime and seed: still distinct
    name = next(iter(names))
    assert re.fullmatch(r"individual\+gated_crf-s3-20250102-030405-[0-9a-f]{6}", name)
    assert re.fullmatch(r"full-\d{8}-\d{6}-[0-9a-f]{6}", unique_run_name("full"))
    with pytest.raises(ValueError, match="regime"):
        unique_run_name(" ")


# --------------------------------------------------------------------------------------------
# params from a config


def test_flatten_config_nesting_lists_and_scalars():
    config = {
        "optimizer": {"name": "Adam", "lr": 5e-4, "betas": (0.9, 0.99), "amsgrad": False},
        "transforms": [{"_target_": "LoadImaged", "keys": ["image", "label"]}, {"_target_": "EnsureTyped"}],
        "bounds": None,
        "empty": {},
        "epochs": 200,
        "inf": float("inf"),
    }
    flat = flatten_config(config)
    assert flat == {
        "optimizer.name": "Adam",
        "optimizer.lr": "0.0005",
        "optimizer.betas": "[0.9, 0.99]",
        "optimizer.amsgrad": "false",
        "transforms.0._target_": "LoadImaged",
        "transforms.0.keys": '["image", "label"]',
        "transforms.1._target_": "EnsureTyped",
        "bounds": "null",
        "empty": "{}",
        "epochs": "200",
        "inf": "inf",
    }


def test_flatten_config_respects_mlflow_limits():
    from mlflow.utils import validation

    assert MAX_PARAM_VALUE_LENGTH == validation.MAX_PARAM_VAL_LENGTH
    assert MAX_KEY_LENGTH == validation.MAX_ENTITY_KEY_LENGTH

    long_key = "k" * 400
    config = {
        "loss/size": {"weight": 0.01},  # '/' is allowed by MLflow and kept
        "network_def#channels": 32,  # MONAI bundle ids use '#': not allowed by MLflow
        "a//b": 1,
        "../up": 2,
        long_key: {"x": 1, "y": 2},
        "text": "x" * 10_000,
        "a b#": 1,
        "a b_": 2,  # collides with the previous key once made safe
    }
    flat = flatten_config(config)
    assert flat["loss/size.weight"] == "0.01"
    assert flat["network_def_channels"] == "32"
    assert flat["a/b"] == "1" and flat["_/up"] == "2"
    assert len(flat) == 9  # nothing overwritten
    for key, value in flat.items():
        validation._validate_param_name(key)  # raises if MLflow would refuse it
        assert len(key) <= MAX_KEY_LENGTH and len(value) <= MAX_PARAM_VALUE_LENGTH
    long_keys = [k for k in flat if k.startswith("kkkk")]
    assert len(long_keys) == 2 and long_keys[0] != long_keys[1]
    assert flat["text"].startswith("xxxx") and "truncated 10000 chars" in flat["text"]
    assert len(flat["text"]) == MAX_PARAM_VALUE_LENGTH
    assert flatten_config({"v": "y" * 80}, max_value_length=60)["v"].endswith("]")


# --------------------------------------------------------------------------------------------
# logging to SQLite and reading back


def test_log_a_run_to_sqlite_and_read_it_back(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlruns.db"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "best.pt").write_bytes(b"weights")
    curve = tmp_path / "dice.png"
    curve.write_bytes(b"png")
    config = {"regime": "individual", "optimizer": {"lr": 5e-4}, "loss/size": {"weight": 0.01}, "long": "z" * 7000}

    params = {"optimizer": config["optimizer"], "loss/size": config["loss/size"], "long": config["long"]}  # what runs are compared on
    with tracked_run("acdc-lv", regime="individual", seed=0, tracking_uri=uri, config=config, params=params) as run:
        for epoch, (loss, dice) in enumerate([(0.9, 0.2), (0.5, 0.7), (0.4, 0.6)]):
            run.log_metrics({"train_loss": loss, "val_dice_3d_mean": dice, "hd95_lv": math.nan}, epoch=epoch)
        run.log_artifacts(curve, ckpt, artifact_path="outputs")
    with pytest.raises(RuntimeError):
        with tracked_run("acdc-lv", regime="individual", seed=0, tracking_uri=uri):
            raise RuntimeError("boom")

    frame = runs_dataframe("acdc-lv", uri, best_of=["val_dice_3d_mean", "hd95_lv"])
    assert len(frame) == 2 and frame["run_name"].nunique() == 2
    first = frame.iloc[0]
    assert first["run_id"] == run.run_id and first["status"] == "FINISHED"
    assert frame.iloc[1]["status"] == "FAILED"
    assert first["regime"] == "individual" and first["seed"] == "0"
    assert first["run_name"].startswith("individual-s0-")
    assert first["params.optimizer.lr"] == "0.0005" and first["params.loss/size.weight"] == "0.01"
    assert "params.regime" not in first  # the config itself is an artifact, not params
    assert "truncated 7000 chars" in first["params.long"]
    assert first["metrics.train_loss"] == pytest.approx(0.4)  # latest epoch
    assert first["best.val_dice_3d_mean"] == pytest.approx(0.7) and first["best_epoch.val_dice_3d_mean"] == 1
    assert math.isnan(first["metrics.hd95_lv"]) and math.isnan(first["best.hd95_lv"])

    artifacts = {a.path for a in run.client.list_artifacts(run.run_id)}
    assert artifacts == {"config.json", "outputs"}
    nested = {a.path for a in run.client.list_artifacts(run.run_id, "outputs/ckpt")}
    assert nested == {"outputs/ckpt/best.pt"}
    config_back = json.loads(Path(run.client.download_artifacts(run.run_id, "config.json", str(tmp_path))).read_text())
    assert config_back == config  # the full config, untruncated
    # artifacts live beside the database, not in ./mlruns of the current folder
    assert (tmp_path / "mlartifacts" / "acdc-lv").is_dir()

    with pytest.raises(ValueError, match="no experiment 'prostate'.*acdc-lv"):
        runs_dataframe("prostate", uri)


def test_cli_help_and_uri(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-m", "wss_monai.tracking", "serve", "--help"],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0 and "127.0.0.1" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "wss_monai.tracking", "uri"],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert out.stdout.splitlines() == [
        f"sqlite:///{tmp_path.resolve()}/mlruns.db",
        f"mlflow ui --backend-store-uri sqlite:///{tmp_path.resolve()}/mlruns.db",
    ]


# --------------------------------------------------------------------------------------------
# a real server


@pytest.mark.slow
def test_local_server_logs_serves_rest_and_stops(tmp_path):
    started = time.monotonic()
    server = start_local_server(
        backend_store_uri=f"sqlite:///{tmp_path}/server.db", artifacts_dir=tmp_path / "art",
        log_path=tmp_path / "server.log", timeout=60,
    )
    try:
        startup = time.monotonic() - started
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[cmdline.index(b"--host") + 1] == b"127.0.0.1"  # never 0.0.0.0 unless asked

        with tracked_run("promise12-prostate", regime="common", seed=1, tracking_uri=server.url) as run:
            run.log_config({"optimizer": {"lr": 5e-4}}, params={"learning_rate": 5e-4})
            run.log_metrics({"val_dice_3d_mean": 0.8}, epoch=0)
            run.log_metrics({"val_dice_3d_mean": 0.85}, epoch=1)

        experiment = server.api("/api/2.0/mlflow/experiments/get-by-name?experiment_name=promise12-prostate")
        found = server.api(
            "/api/2.0/mlflow/runs/search",
            {"experiment_ids": [experiment["experiment"]["experiment_id"]]},
        )["runs"]
        assert [r["info"]["run_id"] for r in found] == [run.run_id]
        got = server.api(f"/api/2.0/mlflow/runs/get?run_id={run.run_id}")["run"]
        assert got["info"]["run_name"] == run.run_name and got["info"]["status"] == "FINISHED"
        assert {p["key"]: p["value"] for p in got["data"]["params"]} == {"learning_rate": "0.0005"}  # the config is not flattened
        assert {m["key"]: m["value"] for m in got["data"]["metrics"]} == {"val_dice_3d_mean": 0.85}
        assert runs_dataframe("promise12-prostate", server.url)["run_id"].tolist() == [run.run_id]
        assert any((tmp_path / "art").rglob("config.json"))  # artifacts went through the server
    finally:
        stop_started = time.monotonic()
        server.stop(timeout=20)
        stop_time = time.monotonic() - stop_started

    assert server.process.poll() is not None
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)
    assert not tracking._group_alive(server.pid)  # the uvicorn worker is gone too
    assert stop_time < 25
    print(f"mlflow server: answered after {startup:.1f} s, stopped in {stop_time:.1f} s")


def test_runs_started_together_on_a_new_sqlite_store_create_it_once(tmp_path):
    """Three processes open one new SQLite store at the same moment: MLflow's table creation runs once
    (under the store's lock) and every process gets a working store (before: 'duplicate column name')."""
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'new.db'}"
    code = ("import sys, time; from wss_monai.tracking import store_client; time.sleep(max(0.0, float(sys.argv[2]) - time.time())); "
            "c = store_client(sys.argv[1]); print(len(c.search_experiments()))")
    import time as _time

    start = _time.time() + 6.0  # every process waits for the same instant after its imports
    procs = [subprocess.Popen([sys.executable, "-c", code, uri, str(start)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, encoding="utf-8", errors="replace") for _ in range(3)]
    results = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == "1"  # the Default experiment
    assert (tmp_path / "new.db.lock").exists()
