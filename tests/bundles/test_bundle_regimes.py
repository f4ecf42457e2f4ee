"""Every regime trains for one epoch through its bundle's train.json (in this process) and leaves an MLflow run.

The config is the real bundle file run by ``monai.bundle.scripts.run``, the function behind
``python -m monai.bundle run`` (one real subprocess per bundle is in test_bundle_cli.py).
"""

from __future__ import annotations

import json

import math

import pytest

from wss_monai.regimes import get_regime

REGIMES = [
    "full",
    "partial",
    "tags",
    "upper",
    "common",
    "individual",
    "lagrangian_tags",
    "lagrangian_common",
    "lagrangian_individual",
    "logbarrier_individual",
    "individual+gated_crf",
    "partial+dense_crf",
    "partial+kernel_cut",
    "partial+normalized_cut",
    "partial+entropy",
    "volume3d",
    "volume3d+entropy",
    "hybrid_1",
    "full_1",
]

DICE_KEYS = [
    "val_dice_3d_mean",
    "val_dice_3d_left_ventricle",
    "val_dice_2d_one_mean",
    "val_dice_2d_nan_mean",
    "val_dice_2d_one_left_ventricle",
    "val_dice_2d_nan_left_ventricle",
    "val_hd95_mean",
    "val_hd95_left_ventricle",
]


@pytest.mark.slow
@pytest.mark.parametrize("regime", REGIMES)
def test_every_regime_trains_one_epoch_and_is_tracked(regime, prepared_acdc, mlflow_db, tmp_path, run_bundle, helpers):
    out = tmp_path / "out"
    bundle = helpers.bundle_of(regime)
    run_bundle(bundle, dataset_dir=str(prepared_acdc), regime=regime, epochs=1, tracking_uri=mlflow_db,
               run_name=f"regimes-{regime}", output_dir=str(out))

    info = helpers.run_info(out)
    assert info["status"] == "FINISHED" and info["regime"] == regime and info["bundle"] == bundle
    assert info["run_name"] == f"regimes-{regime}" and info["best_epoch"] == 1
    assert (out / "models" / "model.pt").is_file() and (out / "checkpoints" / "checkpoint_epoch=1.pt").is_file()

    run = helpers.mlflow_run(mlflow_db, info["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == f"regimes-{regime}"
    assert run.data.tags["regime"] == regime and run.data.tags["bundle"] == bundle
    metrics = run.data.metrics
    for key in DICE_KEYS + ["train_loss", "lr", "best_val_dice_3d_mean"]:
        assert key in metrics, key
        assert math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["val_dice_3d_mean"] <= 1.0
    spec = get_regime(regime)
    for term in spec.terms:  # every loss term's epoch mean is logged
        assert f"train_{term['name']}" in metrics
    if spec.routing:
        assert "train_full_ce" in metrics
    if regime == "logbarrier_individual":
        assert metrics["train_log_barrier_t"] == pytest.approx(5.0)  # t0 during the first epoch
    params = run.data.params
    assert params["bounds"] == (spec.bounds or "none") and params["sampling"] == spec.sampling
    assert params["regime"] == regime and params["epochs"] == "1" and params["full_patients"] == str(spec.full_patients)
    assert params["loss_terms"].split("=")[0] == spec.terms[0]["name"]


@pytest.mark.slow
def test_run_artifacts_and_params(prepared_acdc, mlflow_db, tmp_path, run_bundle, helpers):
    """One run in detail: artifact names, the curated params, the config artifact with top-level references substituted."""
    from mlflow import MlflowClient

    out = tmp_path / "out"
    run_bundle("wss_segmentation", dataset_dir=str(prepared_acdc), regime="tags", epochs=2, tracking_uri=mlflow_db,
               run_name="artifacts-tags", output_dir=str(out), val_interval=1)
    info = helpers.run_info(out)
    client = MlflowClient(tracking_uri=mlflow_db)
    top = {a.path for a in client.list_artifacts(info["run_id"])}
    assert {"config.json", "plots", "models"} <= top
    assert {a.path for a in client.list_artifacts(info["run_id"], "plots")} == {"plots/dice_curves.png", "plots/overlay.png"}
    assert {a.path for a in client.list_artifacts(info["run_id"], "models")} == {"models/model.pt"}
    for png in ("dice_curves.png", "overlay.png"):
        assert (out / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = client.get_metric_history(info["run_id"], "val_dice_3d_mean")
    assert [m.step for m in history] == [1, 2]
    params = client.get_run(info["run_id"]).data.params
    assert params["learning_rate"] == "0.0005" and params["network"] == "ENet" and len(params) <= 25
    assert params["dataset_dir"] == str(prepared_acdc.resolve())
    config = json.loads((out / "config.json").read_text())
    assert config["optimizer"]["lr"] == 0.0005 and config["optimizer"]["betas"] == [0.9, 0.99]
    assert config["lr_scheduler"]["patience"] == 20 and config["network_def"]["_target_"] == "wss_monai.networks.ENet"
    assert "_meta_" not in config and config["resolved"]["dataset_dir"] == str(prepared_acdc.resolve())
