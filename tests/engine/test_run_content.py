"""What one plain bundle run puts in MLflow, as a user sees it in the UI.

- about 20 params that fit one screen (the config is the artifact ``config.json``, not params);
- the tag ``dataset_fingerprint`` and the prepared dataset as the run's dataset input, whose
  digest is that fingerprint: two preparations of one dataset are told apart;
- time per epoch and per image, without the pipelines' ``TimeBudget`` handler;
- the best network as an MLflow model that loads back (``runs:/``, and ``models:/<name>/1`` when
  the bundle key ``register_model`` names it) and computes what the checkpoint computes;
- an experiment that opens on the training view of the MLflow 3 UI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from wss_monai import tracking
from wss_monai.data import PreparedDataset

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "bundles" / "wss_segmentation" / "configs" / "train.json"
META = REPO / "bundles" / "wss_segmentation" / "configs" / "metadata.json"

CURATED = {
    "regime", "loss_terms", "weak", "bounds", "sampling", "full_patients", "epochs", "seed", "learning_rate",
    "batch_size", "augment", "amp", "image_size", "train_slices", "dataset", "dataset_fingerprint", "dataset_dir",
    "network", "network_parameters",
}


@pytest.fixture(scope="module")
def one_run(tiny_prepared, tmp_path_factory):
    """One epoch of ``individual`` on the tiny phantom, model registered as ``wss-test-model``; (run, output folder, store)."""
    from monai.bundle.scripts import run

    root = tmp_path_factory.mktemp("run_content")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    out = root / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(config_file=str(TRAIN), meta_file=str(META), logging_file=False, dataset_dir=str(tiny_prepared),
            regime="individual", epochs=1, tracking_uri=uri, output_dir=str(out), progress=False,
            register_model="wss-test-model")
    finally:
        torch.set_num_threads(before)
    info = json.loads((out / "run.json").read_text())
    client = tracking.store_client(uri)
    return client.get_run(info["run_id"]), out, uri


def test_params_fit_one_screen_and_the_config_is_an_artifact(one_run):
    run, out, uri = one_run
    params = run.data.params
    assert set(params) == CURATED and len(params) <= 25
    assert params["regime"] == "individual" and params["bounds"] == "individual" and params["weak"] == "erosion"
    assert params["loss_terms"].startswith("partial_ce=1, size=") and params["learning_rate"] == "0.0005"
    assert params["batch_size"] == "8" and params["epochs"] == "1" and params["image_size"] == "32x32"
    assert params["network"] == "ENet" and int(params["network_parameters"]) > 1000
    config = json.loads((out / "config.json").read_text())
    assert config["imports"] and config["resolved"]["regime"] == "individual"  # the whole config, in the artifact
    logged = tracking.store_client(uri).list_artifacts(run.info.run_id)
    assert "config.json" in {f.path for f in logged}


def test_fingerprint_is_a_tag_a_param_and_the_dataset_input(one_run, tiny_prepared):
    run, _, _ = one_run
    fingerprint = PreparedDataset(tiny_prepared).fingerprint
    assert run.data.tags["dataset_fingerprint"] == run.data.params["dataset_fingerprint"] == fingerprint
    for tag in ("regime", "seed", "dataset", "bundle", "output_dir"):  # what the reports read stays
        assert run.data.tags[tag]
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert (dataset.name, dataset.digest, dataset.source_type) == ("acdc-lv", fingerprint, "local")
    assert json.loads(dataset.source)["uri"] == str(Path(tiny_prepared).resolve())
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"


def test_two_preparations_have_two_fingerprints(tiny_prepared, tmp_path):
    first = PreparedDataset(tiny_prepared).fingerprint
    assert len(first) == 12 and int(first, 16) >= 0
    copy = Path(shutil.copytree(tiny_prepared, tmp_path / "moved"))
    assert PreparedDataset(copy).fingerprint == first  # the folder's place does not count, its content does
    prep = json.loads((copy / "prep.json").read_text())
    name = sorted(prep["checksums"])[0]
    prep["checksums"][name] = "0" * 64  # another preparation wrote another file
    (copy / "prep.json").write_text(json.dumps(prep))
    assert PreparedDataset(copy).fingerprint != first
    (copy / "prep.json").unlink()  # no prep.json: dataset.json's bytes decide
    bare = PreparedDataset(copy).fingerprint
    manifest = (copy / "dataset.json").read_bytes()
    (copy / "dataset.json").write_bytes(manifest.replace(b"}", b" }", 1))
    assert PreparedDataset(copy).fingerprint != bare


def test_a_plain_bundle_run_logs_its_time(one_run):
    run, _, uri = one_run
    metrics = run.data.metrics
    for key in ("time_per_epoch_s", "time_train_s", "time_train_images", "ms_per_image", "images_per_s"):
        assert key in metrics and metrics[key] > 0, key
    assert metrics["time_per_epoch_s"] >= metrics["time_train_s"]
    assert metrics["ms_per_image"] == pytest.approx(1000 * metrics["time_train_s"] / metrics["time_train_images"])
    assert metrics["time_train_images"] == int(run.data.params["train_slices"])  # every training slice, once
    assert all(k.startswith("val_") for k in metrics if "dice" in k and not k.startswith("best_"))  # the headline scores sort together


def test_best_network_is_an_mlflow_model_equal_to_the_checkpoint(one_run, tiny_prepared):
    import mlflow

    from wss_monai.engine import load_network
    from wss_monai.networks import ENet

    run, out, uri = one_run
    mlflow.set_tracking_uri(uri)
    try:
        by_run = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
        by_name = mlflow.pytorch.load_model("models:/wss-test-model/1")
        info = mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model")
        local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model"))
    finally:
        mlflow.set_tracking_uri(None)
    assert (local / "data" / "model.pt2").is_file()  # torch.export's archive, not a pickle
    card = json.loads((local / "extra_files" / "preprocessing.json").read_text())
    assert card == json.loads((out / "models" / "preprocessing.json").read_text())
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"])[1:] == [1, 32, 32]

    reference = load_network(ENet(in_channels=1, num_classes=2), out / "models" / "model.pt")
    entry = PreparedDataset(tiny_prepared).entries("validation")[0]
    image = np.asarray(nib.load(Path(tiny_prepared) / entry["image"]).dataobj, dtype=np.float32)  # a prepared slice
    x = torch.from_numpy(np.ascontiguousarray(image))[None, None]
    with torch.no_grad():
        expected = reference(x)
        for model in (by_run, by_name):
            assert torch.allclose(model(x), expected, atol=1e-5)


def test_experiment_opens_on_the_training_view(one_run):
    run, _, uri = one_run
    experiment = tracking.store_client(uri).get_experiment(run.info.experiment_id)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.TRAINING_EXPERIMENT_KIND == "custom_model_development"


def test_an_experiment_kind_a_user_chose_is_kept(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = tracking.store_client(uri)
    chosen = client.create_experiment("acdc-lv", tags={tracking.EXPERIMENT_KIND_TAG: "genai_development"})
    plain = client.create_experiment("promise12")  # made by hand, no kind yet
    with tracking.tracked_run("acdc-lv", "tags", 0, tracking_uri=uri):
        pass
    with tracking.tracked_run("promise12", "tags", 0, tracking_uri=uri):
        pass
    assert client.get_experiment(chosen).tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"
    assert client.get_experiment(plain).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def test_register_model_is_a_plain_name(tiny_prepared, tmp_path, capsys):
    from wss_monai.engine import TrainingSession
    from wss_monai.engine.errors import BundleInputError

    for bad in ("../x", "a b", "$import os", "", None):
        if bad in ("", None):
            assert TrainingSession(str(tiny_prepared), "partial", log_mlflow=False, output_dir=str(tmp_path),
                                   register_model=bad).register_model is None
            continue
        with pytest.raises(BundleInputError) as caught:
            TrainingSession(str(tiny_prepared), "partial", log_mlflow=False, output_dir=str(tmp_path), register_model=bad)
        assert caught.value.code == 2 and "--register_model must be a plain model name" in caught.value.message
