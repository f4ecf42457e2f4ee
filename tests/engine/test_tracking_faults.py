"""A tracking server that is unreachable at the start, or killed mid-run, never stops training: what it
could not take is kept in ``<output_dir>/mlflow_fallback.jsonl`` with a warning naming the sync
command, and ``python -m wss_monai.tracking sync`` later puts everything on a real server (loopback)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from wss_monai import tracking
from wss_monai.tracking import FALLBACK_NAME, FallbackJournal, ResilientRun, start_local_server, sync_fallback

# MLflow's client would retry a dead server for minutes; the health check makes that moot, these bound the rest
FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_run(server, name: str) -> dict:
    """The one run called ``name`` in experiment acdc-lv, read over the REST API."""
    experiment = server.api("/api/2.0/mlflow/experiments/get-by-name?experiment_name=acdc-lv")["experiment"]
    found = server.api("/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    named = [r for r in found if r["info"]["run_name"] == name]
    assert len(named) == 1, [r["info"]["run_name"] for r in found]
    return named[0]


def _metric_history(server, run_id: str, key: str) -> list[tuple[int, float]]:
    got = server.api(f"/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={key}")["metrics"]
    return sorted((int(m["step"]), m["value"]) for m in got)


def _check_everything_arrived(server, name: str, out: Path, epochs: int) -> dict:
    run = _server_run(server, name)
    assert run["info"]["status"] == "FINISHED"
    history = {int(k): v for k, v in json.loads((out / "history.json").read_text()).items()}
    assert sorted(history) == list(range(1, epochs + 1))
    for key in ("val_dice_3d_mean", "train_loss", "train_size", "lr", "best_val_dice_3d_mean"):
        assert _metric_history(server, run["info"]["run_id"], key) == [(e, pytest.approx(history[e][key])) for e in history], key
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["regime"] == "individual" and params["learning_rate"] == "0.0005" and len(params) <= 25
    assert params["dataset_fingerprint"] == {t["key"]: t["value"] for t in run["data"]["tags"]}["dataset_fingerprint"]
    inputs = run.get("inputs", {}).get("dataset_inputs", [])  # journalled offline, sent by the sync
    assert [d["dataset"]["digest"] for d in inputs] == [params["dataset_fingerprint"]]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    info = json.loads((out / "run.json").read_text())
    assert tags["regime"] == "individual" and tags["seed"] == "0" and tags["best_epoch"] == str(info["best_epoch"])
    listed = server.api(f"/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}")["files"]
    assert {"config.json", "models", "plots"} <= {f["path"] for f in listed}
    plots = server.api(f"/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}&path=plots")["files"]
    assert {f["path"] for f in plots} == {"plots/dice_curves.png", "plots/overlay.png"}
    assert info["run_id"] == run["info"]["run_id"]  # run.json now names the synced run
    return run


@pytest.mark.slow
def test_server_unreachable_at_start_then_sync(tiny_prepared, tmp_path, bundle_in_process, monkeypatch, caplog):
    for key, value in FAST_FAIL.items():
        monkeypatch.setenv(key, value)
    port = _free_port()  # nobody listens there
    url = f"http://127.0.0.1:{port}"
    out = tmp_path / "out"
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="wss_monai"):  # the whole run; it must not raise
        bundle_in_process(dataset_dir=str(tiny_prepared), regime="individual", epochs=2, hd95=False, tracking_uri=url,
                          run_name="offline-start", output_dir=str(out))
    assert time.monotonic() - started < 120
    warning = next(r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage())
    assert url in warning and str(out / FALLBACK_NAME) in warning and "python -m wss_monai.tracking sync --from" in warning
    journal = FallbackJournal(out / FALLBACK_NAME)
    kept = journal.pending()
    assert [e["step"] for e in kept if e["op"] == "metrics"] == [1, 2]
    assert [e["op"] for e in kept][0] == "config" and kept[-1] == {**kept[-1], "op": "status", "status": "FINISHED"}
    assert json.loads((out / "run.json").read_text())["tracking_fallback"] == str(out / FALLBACK_NAME)

    server = start_local_server(port=port, backend_store_uri=f"sqlite:///{tmp_path}/server.db", artifacts_dir=tmp_path / "art",
                                log_path=tmp_path / "server.log", timeout=90)
    try:
        assert tracking.main(["sync", "--from", str(out)]) == 0  # --to: the URL the run was meant for
        _check_everything_arrived(server, "offline-start", out, epochs=2)
        again = sync_fallback(out)  # nothing is sent twice
        assert again.operations == 0 and "nothing to sync" in again.summary()
        _server_run(server, "offline-start")
    finally:
        server.stop(timeout=20)


@pytest.mark.slow
def test_server_killed_mid_run_then_sync(tiny_prepared, tmp_path, bundle_in_process, monkeypatch, caplog):
    for key, value in FAST_FAIL.items():
        monkeypatch.setenv(key, value)
    db = f"sqlite:///{tmp_path}/server.db"
    server = start_local_server(backend_store_uri=db, artifacts_dir=tmp_path / "art", log_path=tmp_path / "server.log", timeout=90)
    out = tmp_path / "out"
    killed_at: list[int] = []

    def kill_after_epoch_1() -> None:  # like a crash of the server: SIGKILL to its process group
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if json.loads((out / "run.json").read_text()).get("last_epoch") == 1:
                    os.killpg(server.pid, signal.SIGKILL)
                    killed_at.append(1)
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.005)

    killer = threading.Thread(target=kill_after_epoch_1, daemon=True)
    killer.start()
    try:
        with caplog.at_level(logging.WARNING, logger="wss_monai"):
            bundle_in_process(dataset_dir=str(tiny_prepared), regime="individual", epochs=3, hd95=False,
                              tracking_uri=server.url, run_name="server-killed", output_dir=str(out))
        killer.join(timeout=5)
        assert killed_at == [1]
        server.process.wait(timeout=10)
        warnings = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
        assert len(warnings) == 1 and f"sync --from {out / FALLBACK_NAME}" in warnings[0]
        kept = FallbackJournal(out / FALLBACK_NAME)
        header = kept.identity()
        assert header["run_id"] == json.loads((out / "run.json").read_text())["run_id"]  # the run the server has
        assert [e["step"] for e in kept.pending() if e["op"] == "metrics"] == [2, 3]  # epoch 1 reached the server

        # the server comes back elsewhere, on the same store: sync continues the same run
        server = start_local_server(backend_store_uri=db, artifacts_dir=tmp_path / "art", log_path=tmp_path / "server2.log", timeout=90)
        result = sync_fallback(out, to=server.url)
        assert not result.created and result.run_id == header["run_id"] and result.metrics > 0
        _check_everything_arrived(server, "server-killed", out, epochs=3)
    finally:
        server.stop(timeout=20)


def test_resilient_run_on_a_store_that_fails_keeps_everything(tmp_path, caplog, engine_mlflow_db):
    """Offline from the start (nobody listens), then sync to a SQLite store: same content as logged."""
    url = f"http://127.0.0.1:{_free_port()}"
    journal = tmp_path / "run" / FALLBACK_NAME
    with caplog.at_level(logging.WARNING, logger="wss_monai.tracking"):
        run = ResilientRun.start("exp", "tags", 1, tracking_uri=url, run_name="r", config={"a": {"b": 1}, "c": 2},
                                 params={"a": {"b": 1}}, tags={"t": "x"}, fallback=journal)
        run.log_dataset("acdc-lv", "0123456789ab", tmp_path / "prepared", context="training")
        assert run.log_model(object(), None, fallback_note="the best checkpoint is ckpt.pt") is None  # no model in a journal
        run.log_metrics({"m": 0.5, "n/a": float("nan")}, epoch=1)
        run.log_metrics({"m": 0.7}, epoch=2)
        (tmp_path / "run" / "f.txt").write_text("hi")
        run.log_artifacts(tmp_path / "run" / "f.txt", artifact_path="files")
        run.set_tags({"done": 1})
        run.finish("FINISHED")
    assert run.offline and run.run_id is None
    assert sum("cannot be used" in r.getMessage() for r in caplog.records) == 1  # warned once
    store = engine_mlflow_db
    result = sync_fallback(journal, to=store)
    assert (result.created, result.metrics, result.params, result.artifacts, result.datasets) == (True, 3, 1, 1, 1)
    assert result.skipped == ["model 'model' (the fallback journal holds no models): the best checkpoint is ckpt.pt"]
    assert "not in the journal, so not synced: model 'model'" in result.summary()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store)
    got = client.get_run(result.run_id)
    assert got.info.run_name == "r" and got.info.status == "FINISHED"
    assert got.data.params == {"a.b": "1"} and got.data.tags["done"] == "1" and got.data.tags["t"] == "x"
    dataset = got.inputs.dataset_inputs[0].dataset  # journalled offline, sent as a dataset input
    assert (dataset.name, dataset.digest, json.loads(dataset.source)["uri"]) == ("acdc-lv", "0123456789ab", str(tmp_path / "prepared"))
    assert [(m.step, m.value) for m in client.get_metric_history(result.run_id, "m")] == [(1, 0.5), (2, 0.7)]
    assert {a.path for a in client.list_artifacts(result.run_id, "files")} == {"files/f.txt"}
    assert sync_fallback(journal, to=store).operations == 0

    # a resumed run whose journal is not synced yet stays offline and appends to it
    run = tmp_path / "run2" / FALLBACK_NAME
    first = ResilientRun.start("exp", "tags", 1, tracking_uri=url, run_name="r2", fallback=run)
    first.log_metrics({"m": 1.0}, epoch=1)
    again = ResilientRun.start("exp", "tags", 1, tracking_uri=store, run_name="r2", fallback=run, resume=True)
    assert again.offline and again.local_id == first.local_id
    again.log_metrics({"m": 2.0}, epoch=2)
    again.finish("FINISHED")
    result = sync_fallback(run, to=store)
    assert [(m.step, m.value) for m in client.get_metric_history(result.run_id, "m")] == [(1, 1.0), (2, 2.0)]
    assert client.get_run(result.run_id).info.status == "FINISHED"


def test_sync_command_errors(tmp_path, capsys):
    assert tracking.main(["sync", "--from", str(tmp_path)]) == 2
    assert "no such fallback journal" in capsys.readouterr().err
    journal = tmp_path / FALLBACK_NAME
    ResilientRun.start("exp", "tags", tracking_uri=f"http://127.0.0.1:{_free_port()}", run_name="r", fallback=journal)
    assert tracking.main(["sync", "--from", str(journal), "--to", f"http://127.0.0.1:{_free_port()}"]) == 1
    assert "does not answer" in capsys.readouterr().err and "nothing was synced" not in FallbackJournal(journal).path.read_text()
