"""Train one epoch, export the run, and segment raw scans (NIfTI and a DICOM series, no label near them)
with the exported bundle from a folder outside the repository; the results have the scans' shape and
affine and equal the in-repository inference voxel for voxel. Then the bad inputs of inference and export."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _dicom_series(volume: Path, folder: Path) -> None:
    """Write a NIfTI volume as a DICOM series (one file per slice) with SimpleITK."""
    import SimpleITK as sitk

    from pipelines.testkit.dicom import write_dicom_series

    write_dicom_series(folder, sitk.Cast(sitk.ReadImage(str(volume)), sitk.sitkInt16), "1.2.826.0.1.3680043.2.1125.1")


def _site_without_repo(tmp_path: Path) -> Path:
    """A folder holding only the wss_monai package: what `pip install` puts on the path, without the repository."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copytree(REPO / "wss_monai", site / "wss_monai", ignore=shutil.ignore_patterns("__pycache__"))
    return site


@pytest.mark.slow
def test_export_runs_outside_the_repository(prepared_acdc, acdc_raw, mlflow_db, tmp_path, cli, helpers):
    run = tmp_path / "run"
    done = cli(["run", "--config_file", "bundles/wss_segmentation/configs/train.json", "--dataset_dir", prepared_acdc,
                "--regime", "individual", "--epochs", "1", "--tracking_uri", mlflow_db, "--output_dir", run])
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads((run / "models" / "preprocessing.json").read_text())
    assert card["bundle"] == "wss_segmentation" and card["preprocessing"]["size"] == [32, 32]

    # raw scans with no label anywhere near them: two NIfTI frames and one DICOM series
    scans = tmp_path / "scans"
    scans.mkdir()
    manifest = json.loads((prepared_acdc / "dataset.json").read_text())
    raw = [acdc_raw / v["raw_image"] for v in manifest["volumes"] if v["split"] == "test"]
    for path in raw:
        shutil.copy(path, scans / path.name)
    _dicom_series(raw[0], scans / "series_a")
    assert not any("gt" in p.name for p in scans.rglob("*"))

    bundle = tmp_path / "exported"
    done = subprocess.run([sys.executable, "-m", "wss_monai.export", "--run", str(run), "--out", str(bundle)], cwd=REPO,
                          capture_output=True, text=True, encoding="utf-8", errors="replace", env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("configs/inference.json", "configs/metadata.json", "configs/train.json", "models/model.pt",
                 "models/preprocessing.json", "docs/README.md", "LICENSE"):
        assert (bundle / name).is_file(), name
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert isinstance(meta["eval_metrics"]["val_dice_3d_mean"], float)
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32]
    from monai.bundle.scripts import verify_metadata

    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(REPO / "bundles" / "schema" / "metadata.schema.json"))

    # in the repository
    done = cli(["run", "--config_file", "bundles/wss_segmentation/configs/inference.json", "--ckpt_path", run / "models" / "model.pt",
                "--input_dir", scans, "--output_dir", tmp_path / "in_repo"])
    assert done.returncode == 0, done.stderr[-3000:]
    # outside it: a copy of the exported bundle, wss_monai alone on the path
    outside = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(bundle, outside)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(_site_without_repo(tmp_path))
    done = cli(["run", "--config_file", "configs/inference.json", "--input_dir", scans, "--output_dir", tmp_path / "out"],
               cwd=outside, env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    for scan, name in [*[(p, p.name.replace(".nii.gz", "")) for p in raw], (raw[0], "series_a")]:
        ours = nib.load(str(tmp_path / "out" / f"{name}_seg.nii.gz"))
        repo = nib.load(str(tmp_path / "in_repo" / f"{name}_seg.nii.gz"))
        source = nib.load(str(scan))
        assert ours.shape == source.shape, name
        if name != "series_a":  # a NIfTI scan lends its header
            assert np.allclose(ours.affine, source.affine)
        else:  # DICOM: the grid ITK read from the NIfTI (its qform; ACDC's sform is a unit matrix) in RAS
            assert np.allclose(ours.affine, source.get_qform(), atol=1e-3)
        assert np.array_equal(np.asarray(ours.dataobj), np.asarray(repo.dataobj)), name


def test_inference_bad_inputs_one_line(prepared_acdc, tmp_path, run_bundle, capsys):
    """A scan that cannot be read or is 2D is reported and skipped, the others are written (exit 2 at the end);
    a model of another bundle or class count, an output folder that is a file: one line, exit 2."""
    import torch

    from wss_monai.engine import BundleInputError
    from wss_monai.networks import ENet

    models = tmp_path / "models"
    models.mkdir()
    torch.save(ENet(1, 2).state_dict(), models / "model.pt")
    card = {"bundle": "wss_segmentation", "format": 1, "num_classes": 2, "class_names": ["background", "lv"], "in_channels": 1,
            "preprocessing": {"slice_axis": 2, "size": [32, 32], "resize": "stretch", "inplane_spacing": None, "percentiles": [0.5, 99.5]}}
    (models / "preprocessing.json").write_text(json.dumps(card))
    scans = tmp_path / "scans"
    scans.mkdir()
    good = nib.Nifti1Image(np.random.default_rng(0).random((20, 18, 4)).astype(np.float32), np.diag([1.5, 1.5, 8.0, 1.0]))
    nib.save(good, scans / "good.nii.gz")
    (scans / "broken.nii.gz").write_bytes(b"not a nifti")
    nib.save(nib.Nifti1Image(np.zeros((20, 18), np.float32), np.eye(4)), scans / "flat.nii.gz")

    def infer(**kwargs):
        return run_bundle("wss_segmentation", "inference.json", ckpt_path=str(models / "model.pt"), input_dir=str(scans), **kwargs)

    with pytest.raises(BundleInputError) as caught:
        infer(output_dir=str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert "broken.nii.gz: cannot read the scan" in err and "flat.nii.gz: is 2D" in err and caught.value.code == 2
    assert (tmp_path / "out" / "good_seg.nii.gz").is_file() and not (tmp_path / "out" / "broken_seg.nii.gz").exists()
    assert nib.load(str(tmp_path / "out" / "good_seg.nii.gz")).shape == (20, 18, 4)

    (scans / "broken.nii.gz").unlink()
    (scans / "flat.nii.gz").unlink()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BundleInputError, match="output_dir is a file"):
        infer(output_dir=str(tmp_path / "afile"))
    (models / "preprocessing.json").write_text(json.dumps({**card, "num_classes": 4, "class_names": ["a", "b", "c", "d"]}))
    with pytest.raises(BundleInputError, match="4 classes"):
        infer(output_dir=str(tmp_path / "out2"))
    (models / "preprocessing.json").write_text(json.dumps({**card, "bundle": "wss_size_2d"}))
    with pytest.raises(BundleInputError, match="bundle 'wss_size_2d'"):
        infer(output_dir=str(tmp_path / "out2"))


def _fake_run(folder: Path) -> Path:
    """A finished run's output folder without training: random ENet weights, model card, run.json with a score."""
    import torch

    from wss_monai.networks import ENet

    (folder / "models").mkdir(parents=True)
    torch.save(ENet(1, 2).state_dict(), folder / "models" / "model.pt")
    card = {"bundle": "wss_segmentation", "format": 1, "num_classes": 2, "class_names": ["background", "lv"], "in_channels": 1,
            "regime": "individual", "dataset": "phantom",
            "preprocessing": {"slice_axis": 2, "size": [32, 32], "resize": "stretch", "inplane_spacing": None, "percentiles": [0.5, 99.5]}}
    (folder / "models" / "preprocessing.json").write_text(json.dumps(card))
    (folder / "run.json").write_text(json.dumps({"run_name": "fake", "best_metric": 0.5, "best_epoch": 1, "epochs": 1}))
    return folder


def _readme_commands(readme: str) -> list[str]:
    """The commands of the README's bash blocks, continuation lines joined."""
    import re

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", readme, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            if command.strip() and not command.lstrip().startswith("#"):
                commands.append(command.strip())
    return commands


@pytest.mark.slow
def test_every_command_of_the_exported_readme_runs_as_written_inside_the_bundle_offline(tmp_path):
    """verify_metadata with the schema shipped in the export, verify_net_in_out, and inference on a raw
    NIfTI, run from inside a copy of the exported bundle outside the repository, with downloads made to fail."""
    import shlex

    from wss_monai.export import export_run

    export_run(_fake_run(tmp_path / "run"), tmp_path / "exported")
    bundle = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(tmp_path / "exported", bundle)
    assert (bundle / "docs" / "metadata.schema.json").read_bytes() == (REPO / "bundles" / "schema" / "metadata.schema.json").read_bytes()
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["eval_metrics"] == {"val_dice_3d_mean": 0.5}  # the run's measured score, nothing else
    assert "eval_metrics" not in json.loads((REPO / "bundles" / "wss_segmentation" / "configs" / "metadata.json").read_text())

    scans = tmp_path / "scans"
    scans.mkdir()
    affine = np.array([[0.0, -1.4, 0.0, 10.0], [1.4, 0.0, 0.0, -5.0], [0.0, 0.0, 8.0, 2.0], [0.0, 0.0, 0.0, 1.0]])
    nib.save(nib.Nifti1Image(np.random.default_rng(1).random((20, 18, 4)).astype(np.float32), affine), scans / "scan.nii.gz")

    commands = _readme_commands((bundle / "docs" / "README.md").read_text())
    assert [c.split()[3] for c in commands] == ["run", "verify_metadata", "verify_net_in_out"], commands
    assert "--filepath docs/metadata.schema.json" in commands[1]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "https_proxy", "http_proxy", "no_proxy", "NO_PROXY")}
    env.update(PYTHONPATH=str(_site_without_repo(tmp_path)), HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    for command in commands:
        argv = [a.replace("SCANS", str(scans)).replace("OUT", str(tmp_path / "out")) if a in ("SCANS", "OUT") else a for a in shlex.split(command)]
        assert argv[0] == "python"
        done = subprocess.run([sys.executable, *argv[1:]], cwd=bundle, env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-3000:])
        assert "Downloading" not in done.stdout + done.stderr, command
    seg = nib.load(str(tmp_path / "out" / "scan_seg.nii.gz"))
    assert seg.shape == (20, 18, 4) and np.allclose(seg.affine, affine)


def test_export_bad_inputs(tmp_path):
    from wss_monai.export import main

    assert main(["--run", str(tmp_path / "none"), "--out", str(tmp_path / "b")]) == 2
    (tmp_path / "run" / "models").mkdir(parents=True)
    assert main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "b")]) == 2
    assert not (tmp_path / "b").exists()
