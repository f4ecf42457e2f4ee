"""Editing JSON alone changes training: an overlay file changes the resolved transforms and loss;
a bad regime entry stops with one line; the prepared-dataset contract of user annotations (issue 13)."""

from __future__ import annotations

import json
import shutil

import pytest

from wss_monai.engine import BundleInputError


def _workflow(helpers, prepared, tmp_path, overlay=None, **overrides):
    from monai.bundle import ConfigWorkflow

    files = [helpers.config("wss_segmentation", "train.json")]
    if overlay is not None:
        path = tmp_path / f"overlay{len(list(tmp_path.glob('overlay*')))}.json"
        path.write_text(json.dumps(overlay))
        files.append(str(path))
    workflow = ConfigWorkflow(config_file=files, meta_file=helpers.config("wss_segmentation", "metadata.json"), logging_file=False,
                              workflow_type=None, dataset_dir=str(prepared), log_mlflow=False, output_dir=str(tmp_path / "o"),
                              **overrides)
    workflow.parser.parse(reset=True)
    return workflow.parser


def test_overlays_change_transforms_and_loss(prepared_acdc, tmp_path, helpers):
    from wss_monai.data import RandWeakAffined
    from wss_monai.losses import GatedCRFLoss

    plain = _workflow(helpers, prepared_acdc, tmp_path, regime="individual")
    assert plain.get_parsed_content("train#dataloader").dataset.augment is None
    assert list(plain.get_parsed_content("loss").keys) == ["partial_ce", "size"]

    augmented = _workflow(helpers, prepared_acdc, tmp_path, {"augment": True, "train#augmentation#max_angle": 5.0}, regime="individual")
    augment = augmented.get_parsed_content("train#dataloader").dataset.augment
    assert isinstance(augment, RandWeakAffined) and augment.max_angle == 5.0
    off = _workflow(helpers, prepared_acdc, tmp_path, {"augment": True, "train#augmentation": None}, regime="individual")
    assert off.get_parsed_content("train#dataloader").dataset.augment is None

    # a new regime in an overlay: individual plus a Gated CRF term, no Python
    regime = {"regimes#individual_gcrf": {
        "bounds": "individual",
        "loss_terms": {
            "partial_ce": {"weight": 1.0, "term": {"_target_": "wss_monai.losses.PartialCrossEntropy", "_mode_": "callable"}},
            "size": {"weight": "$wss_monai.regimes.size_weight(@image_size)", "term": {"_target_": "wss_monai.losses.SizePenalty", "_mode_": "callable"}},
            "gated_crf": {"weight": 0.2, "term": {"_target_": "wss_monai.losses.GatedCRFLoss", "_mode_": "callable", "radius": 3}},
        }}}
    parser = _workflow(helpers, prepared_acdc, tmp_path, regime, regime="individual_gcrf")
    loss = parser.get_parsed_content("loss")
    assert loss.keys == ["partial_ce", "size", "gated_crf"] and loss.weights["gated_crf"] == 0.2
    assert isinstance(loss["gated_crf"], GatedCRFLoss) and loss["gated_crf"].radius == 3
    assert parser.get_parsed_content("session").spec.bounds == "individual"


@pytest.mark.parametrize("entry, fragment", [
    ({"loss_terms": {"size": {"weight": "heavy", "term": {"_target_": "wss_monai.losses.SizePenalty", "_mode_": "callable"}}}}, "weight 'heavy'"),
    ({"loss_terms": {"size": {"weight": -1, "term": {"_target_": "wss_monai.losses.SizePenalty", "_mode_": "callable"}}}}, "weight -1"),
    ({"bounds": "made_up", "loss_terms": {"partial_ce": {"weight": 1.0, "term": {"_target_": "wss_monai.losses.PartialCrossEntropy", "_mode_": "callable"}}}},
     "size bounds 'made_up'"),
])
def test_bad_regime_entries_one_line(entry, fragment, prepared_acdc, tmp_path, helpers, capsys):
    parser = _workflow(helpers, prepared_acdc, tmp_path, {"regimes#bad": entry}, regime="bad")
    with pytest.raises(BundleInputError) as caught:
        parser.get_parsed_content("session")
    assert fragment in caught.value.message and caught.value.code == 2


def _user_dataset(prepared, tmp_path, edit):
    data = tmp_path / "user"
    shutil.copytree(prepared, data)
    manifest = json.loads((data / "dataset.json").read_text())
    edit(manifest)
    (data / "dataset.json").write_text(json.dumps(manifest))
    return data


def test_user_annotations_contract(prepared_acdc, tmp_path):
    """Training slices without 'label' (and size_px), a missing bound rule, a user weak strategy, provenance, 4 classes."""
    from wss_monai.data import PreparedDataset
    from wss_monai.data.prepared import DatasetError
    from wss_monai.engine import TrainingSession

    first = sorted({e["patient"] for e in json.loads((prepared_acdc / "dataset.json").read_text())["training"]})[0]

    def edit(manifest):
        manifest["provenance"] = {"weak": {"user": "user file"}, "bounds": {"common": "typed"}}
        for entry in manifest["training"]:
            entry["weak"]["user"] = entry["weak"]["erosion"]
            if entry["patient"] == first:
                for key in ("label", "size_px", "volume_size_px"):
                    entry.pop(key, None)
                entry["bounds"].pop("individual")

    data = _user_dataset(prepared_acdc, tmp_path, edit)
    prepared = PreparedDataset(data)
    assert prepared.provenance["bounds"] == {"common": "typed"} and "user" in prepared.weak_strategies
    assert first not in prepared.labelled_patients()
    assert prepared.check_training(weak="user", bounds="common", full=False, full_patients=0) == []
    assert first not in prepared.check_training(weak="user", bounds="common", full=False, full_patients=2)
    with pytest.raises(DatasetError, match=rf"size bounds 'individual' missing on \d+ training slices \({first}"):
        prepared.check_training(weak="user", bounds="individual", full=False, full_patients=0)
    with pytest.raises(DatasetError, match="needs full masks"):
        prepared.check_training(weak=None, bounds=None, full=True, full_patients=0)
    with pytest.raises(DatasetError, match="2 have full masks"):
        prepared.full_patient_names(3)

    session = TrainingSession(prepared, "common", weak="user", log_mlflow=False, check_keys=False, output_dir=str(tmp_path / "o"))
    assert session.spec.weak == "user" and session.resolved()["provenance"]["weak"] == {"user": "user file"}
    samples = prepared.datalist("training", weak="user", bounds="common")
    assert all(s["label"] is None for s in samples)
    for regime, fragment in (("full", "needs full masks"), ("individual", "size bounds 'individual' missing")):
        with pytest.raises(BundleInputError, match=fragment):
            TrainingSession(prepared, regime, weak="user", log_mlflow=False, check_keys=False, output_dir=str(tmp_path / "o"))

    four = _user_dataset(prepared_acdc, tmp_path / "x", lambda m: m.update(labels={"0": "background", "1": "rv", "2": "myo", "3": "lv"}))
    assert PreparedDataset(four).num_classes == 4
