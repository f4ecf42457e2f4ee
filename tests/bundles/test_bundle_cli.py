"""The contract command lines, as real subprocesses from the repository root.

``python -m monai.bundle run --config_file bundles/<bundle>/configs/train.json --dataset_dir ...
--regime ... --epochs N --tracking_uri ... --run_name ...``, then ``evaluate.json`` and
``inference.json`` on the run's best checkpoint; bad input ends with one line and exit code 2.
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from wss_monai.engine import BundleInputError


def _train_args(bundle, prepared, regime, uri, name, out, epochs=1):
    return ["run", "--config_file", f"bundles/{bundle}/configs/train.json", "--dataset_dir", prepared, "--regime", regime,
            "--epochs", epochs, "--tracking_uri", uri, "--run_name", name, "--output_dir", out]


@pytest.mark.slow
def test_cli_train_evaluate_infer(prepared_acdc, acdc_raw, mlflow_db, tmp_path, cli, helpers):
    out = tmp_path / "run"
    done = cli(_train_args("wss_segmentation", prepared_acdc, "individual", mlflow_db, "cli-individual", out, epochs=2))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wss_monai.train - INFO - epoch 2/2" in done.stdout  # one summary line per epoch
    info = helpers.run_info(out)
    assert info["status"] == "FINISHED" and info["run_name"] == "cli-individual"
    run = helpers.mlflow_run(mlflow_db, info["run_id"])
    assert run.info.status == "FINISHED" and 0 <= run.data.metrics["val_dice_3d_mean"] <= 1

    # evaluate.json (an overlay of train.json): the best checkpoint on the test split, scores also logged into the training run
    done = cli(["run", "--config_file", "['bundles/wss_segmentation/configs/train.json','bundles/wss_segmentation/configs/evaluate.json']",
                "--dataset_dir", prepared_acdc, "--output_dir", out])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert report["split"] == "test" and report["checkpoint"] == str(out / "models" / "model.pt")
    assert {"test_dice_3d_mean", "test_dice_2d_one_mean", "test_dice_2d_nan_mean", "test_hd95_mean"} <= set(report["metrics"])
    per_volume = (out / "evaluate" / "per_volume.csv").read_text().splitlines()
    assert per_volume[0] == "volume,dice_3d_left_ventricle,hd95_left_ventricle" and len(per_volume) == 3  # 2 test volumes
    run = helpers.mlflow_run(mlflow_db, info["run_id"])
    assert run.data.metrics["test_dice_3d_mean"] == pytest.approx(report["metrics"]["test_dice_3d_mean"])
    assert run.data.tags["evaluate_split"] == "test"

    # inference.json: the raw test volumes (no label near them), written in their own geometry
    manifest = json.loads((prepared_acdc / "dataset.json").read_text())
    scans = tmp_path / "scans"
    scans.mkdir()
    for volume in manifest["volumes"]:
        if volume["split"] == "test":
            shutil.copy(acdc_raw / volume["raw_image"], scans / (acdc_raw / volume["raw_image"]).name)
    done = cli(["run", "--config_file", "bundles/wss_segmentation/configs/inference.json", "--ckpt_path", out / "models" / "model.pt",
                "--input_dir", scans, "--output_dir", tmp_path / "seg"])
    assert done.returncode == 0, done.stderr[-3000:]
    for scan in scans.iterdir():
        raw = nib.load(str(scan))
        pred = nib.load(str(tmp_path / "seg" / scan.name.replace(".nii.gz", "_seg.nii.gz")))
        assert pred.shape == raw.shape and np.allclose(pred.affine, raw.affine)
        assert np.allclose(pred.header.get_qform(), raw.header.get_qform()) and np.allclose(pred.header.get_sform(), raw.header.get_sform())
        assert pred.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}


@pytest.mark.slow
@pytest.mark.parametrize("bundle,regime", [("wss_segmentation", "volume3d"), ("wss_segmentation", "hybrid_1")])
def test_cli_other_bundles(bundle, regime, prepared_acdc, mlflow_db, tmp_path, cli, run_bundle, helpers):
    out = tmp_path / "run"
    done = cli(_train_args(bundle, prepared_acdc, regime, mlflow_db, f"cli-{regime}", out))
    assert done.returncode == 0, done.stderr[-3000:]
    info = helpers.run_info(out)
    run = helpers.mlflow_run(mlflow_db, info["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["regime"] == regime and "val_dice_3d_mean" in run.data.metrics
    # evaluate.json on the run's best checkpoint (in this process)
    run_bundle(bundle, "evaluate.json", dataset_dir=str(prepared_acdc), output_dir=str(out), split="validation")
    assert "val_dice_3d_mean" in json.loads((out / "evaluate" / "metrics.json").read_text())["metrics"]


@pytest.mark.slow
def test_cli_bad_input_one_line_exit_2(tmp_path, cli, helpers):
    done = cli(["run", "--config_file", helpers.config("wss_segmentation", "train.json"), "--regime", "individual"], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: dataset_dir is required: pass --dataset_dir PREPARED (a folder written by `python -m data_prep ...`)."
    )
    assert "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def _input_error(capsys, run, *args, **kwargs) -> str:
    with pytest.raises(BundleInputError) as caught:
        run(*args, **kwargs)
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {caught.value.message}"
    return caught.value.message


def test_bad_inputs_name_the_problem(prepared_acdc, mlflow_db, tmp_path, run_bundle, capsys):
    common = dict(dataset_dir=str(prepared_acdc), epochs=1, tracking_uri=mlflow_db, output_dir=str(tmp_path / "o"))
    message = _input_error(capsys, run_bundle, "wss_segmentation", **{**common, "regime": "individul"})
    assert "unknown regime 'individul'" in message and "individual" in message and "gated_crf" in message
    message = _input_error(capsys, run_bundle, "wss_segmentation", **{**common, "regime": "individual", "weak": "scribble"})
    assert "weak labels 'scribble'" in message and "erosion, random_disc" in message
    message = _input_error(capsys, run_bundle, "wss_segmentation", **{**common, "regime": "hybrid_9"})
    assert "needs 9 fully annotated training patients" in message
    message = _input_error(capsys, run_bundle, "wss_segmentation", **{**common, "regime": "tags", "dataset_dir": str(tmp_path)})
    assert "no dataset.json" in message
    message = _input_error(capsys, run_bundle, "wss_segmentation", **{**common, "regime": "tags", "epochs": 0})
    assert "epochs" in message
    assert not (tmp_path / "o").exists()
    message = _input_error(capsys, run_bundle, "wss_segmentation", "evaluate.json", dataset_dir=str(prepared_acdc))
    assert "--output_dir" in message and "--ckpt_path" in message
    message = _input_error(capsys, run_bundle, "wss_segmentation", "evaluate.json", dataset_dir=str(prepared_acdc),
                           ckpt_path=str(tmp_path / "none.pt"))
    assert "no such checkpoint" in message


@pytest.mark.slow
def test_given_run_name_must_be_free(prepared_acdc, mlflow_db, tmp_path, run_bundle, capsys, helpers, monkeypatch):
    common = dict(dataset_dir=str(prepared_acdc), regime="partial", epochs=1, tracking_uri=mlflow_db)
    run_bundle("wss_segmentation", run_name="taken", output_dir=str(tmp_path / "a"), **common)
    message = _input_error(capsys, run_bundle, "wss_segmentation", run_name="taken", output_dir=str(tmp_path / "b"), **common)
    assert "run name 'taken' already exists in experiment 'acdc-lv'" in message and "--run_name_exists suffix" in message
    run_bundle("wss_segmentation", run_name="taken", run_name_exists="suffix", output_dir=str(tmp_path / "c"), **common)
    assert helpers.run_info(tmp_path / "c")["run_name"] == "taken-2"
    # no name: a unique one (<regime>-s<seed>-<time>-<hex>); no output_dir: runs/<experiment>/<run name> here
    monkeypatch.chdir(tmp_path)
    run_bundle("wss_segmentation", **common)
    (folder,) = (tmp_path / "runs" / "acdc-lv").iterdir()
    assert folder.name.startswith("partial-s0-") and helpers.run_info(folder)["run_name"] == folder.name


def test_evaluate_falls_back_to_validation(prepared_acdc, tmp_path, run_bundle):
    """An empty test split: evaluate.json scores the validation split, with a warning."""
    import torch

    from wss_monai.networks import ENet

    data = tmp_path / "no_test"
    shutil.copytree(prepared_acdc, data)
    manifest = json.loads((data / "dataset.json").read_text())
    manifest["test"] = []
    (data / "dataset.json").write_text(json.dumps(manifest))
    ckpt = tmp_path / "model.pt"
    torch.save(ENet(1, 2).state_dict(), ckpt)
    with pytest.warns(UserWarning, match="test split is empty"):
        run_bundle("wss_segmentation", "evaluate.json", dataset_dir=str(data), ckpt_path=str(ckpt),
                   results_dir=str(tmp_path / "eval"))
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["split"] == "validation" and "val_dice_3d_mean" in report["metrics"]
