"""MONAI's bundle tools on every bundle: metadata against the schema kept in the repository,
``verify_net_in_out``, ``ckpt_export``; and the three bundles' configs kept in step."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest
import torch

BUNDLES = ("wss_segmentation",)


def _json(helpers, bundle, name):
    return json.loads((helpers.BUNDLES / bundle / "configs" / name).read_text())


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_layout(bundle, helpers):
    root = helpers.BUNDLES / bundle
    for name in ("metadata.json", "train.json", "evaluate.json", "inference.json", "multi_gpu_train.json", "logging.conf"):
        assert (root / "configs" / name).is_file(), name
    assert (root / "LICENSE").read_text().strip() and (root / "docs" / "README.md").is_file()
    for name in ("train.json", "evaluate.json", "inference.json", "multi_gpu_train.json"):
        text = (root / "configs" / name).read_text()
        for target in re.findall(r'"_target_":\s*"([^"]+)"', text):  # JSON only: targets in wss_monai, MONAI or torch
            assert target.startswith(("wss_monai.", "torch.")) or "." not in target, target


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_validates_against_the_schema_in_the_repository(bundle, helpers, tmp_path):
    from monai.bundle.scripts import verify_metadata

    schema_path = helpers.BUNDLES / "schema" / "metadata.schema.json"
    schema = json.loads(schema_path.read_text())
    meta = _json(helpers, bundle, "metadata.json")
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(meta, schema)
    assert meta["name"] == bundle and meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 2
    # MONAI's own command, offline: an existing --filepath is used instead of downloading the schema
    verify_metadata(meta_file=str(helpers.BUNDLES / bundle / "configs" / "metadata.json"), filepath=str(schema_path))
    broken = copy.deepcopy(meta)
    del broken["network_data_format"]["inputs"]["image"]["num_channels"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("network", [None, "wss_monai.networks.ResUNet"])
def test_verify_net_in_out(bundle, network, helpers):
    from monai.bundle.scripts import verify_net_in_out

    override = {"network_def#_target_": network} if network else {}
    verify_net_in_out(net_id="network_def", meta_file=helpers.config(bundle, "metadata.json"),
                      config_file=helpers.config(bundle, "train.json"), device="cpu", n=2, **override)


def _export(helpers, bundle, tmp_path, network=None):
    from monai.bundle.scripts import ckpt_export
    from monai.data import load_net_with_metadata

    from wss_monai.networks import ENet, ResUNet

    net = (ResUNet if network else ENet)(1, 2).eval()
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)
    override = {"network_def#_target_": network} if network else {}
    ckpt_export(net_id="network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(ckpt),
                meta_file=helpers.config(bundle, "metadata.json"), config_file=helpers.config(bundle, "train.json"),
                use_trace=True, input_shape=[1, 1, 64, 64], **override)
    exported, meta, _ = load_net_with_metadata(str(tmp_path / "model.ts"))
    x = torch.rand(1, 1, 64, 64)
    assert meta["name"] == bundle
    assert torch.allclose(exported(x), net(x), atol=1e-4)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_ckpt_export_resunet(bundle, helpers, tmp_path):
    _export(helpers, bundle, tmp_path, "wss_monai.networks.ResUNet")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_ckpt_export_enet(bundle, helpers, tmp_path):
    _export(helpers, bundle, tmp_path)


def test_evaluate_and_multi_gpu_are_overlays_of_train(helpers):
    """As in the model zoo: evaluate.json and multi_gpu_train.json only override keys of train.json;
    inference.json stands alone (it runs on a model without the training config) but builds the same network."""
    train = _json(helpers, "wss_segmentation", "train.json")
    for name in ("evaluate.json", "multi_gpu_train.json"):
        overlay = _json(helpers, "wss_segmentation", name)
        assert "imports" not in overlay and "network_def" not in overlay
        for key in overlay:
            assert key.split("#")[0] in train or key in ("split", "ckpt_path", "results_dir", "log_to_run", "evaluation"), (name, key)
    inference = _json(helpers, "wss_segmentation", "inference.json")
    assert inference["network_def"]["_target_"] == train["network_def"]["_target_"]
    assert inference["bundle"] == train["bundle"] == "wss_segmentation"


def test_train_config_carries_the_paper_defaults_and_contract_keys(helpers):
    train = _json(helpers, "wss_segmentation", "train.json")
    for key in ("dataset_dir", "epochs", "tracking_uri", "experiment_name", "run_name", "output_dir", "regime"):
        assert key in train
    assert train["learning_rate"] == 5e-4 and train["betas"] == [0.9, 0.99]
    assert train["lr_scheduler"]["_target_"] == "torch.optim.lr_scheduler.ReduceLROnPlateau"
    assert train["lr_factor"] == 0.5 and train["lr_patience"] == 20 and train["lr_scheduler"]["mode"] == "max"
    assert train["validate"]["evaluator"]["key_val_metric"] == {"val_dice_3d_mean": "@validate#metric"}
    assert train["network_def"]["_target_"] == "wss_monai.networks.ENet"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_docs_give_every_command(bundle, helpers):
    text = (helpers.BUNDLES / bundle / "docs" / "README.md").read_text()
    for needle in (f"bundles/{bundle}/configs/train.json", "evaluate.json", "inference.json", "multi_gpu_train.json",
                   "torchrun", "verify_net_in_out", "ckpt_export", "verify_metadata", "--regime", "--tracking_uri"):
        assert needle in text, needle
