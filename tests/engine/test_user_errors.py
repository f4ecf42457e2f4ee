"""A user's mistake ends a bundle run with one ``error:`` line and exit code 2, never a traceback; a bug still traces.

Cases a tester found ending in MONAI's wrapped traceback: a checkpoint that is not a weights file
(evaluate, inference, export), ``--tracking_uri foo://bar``, a NaN voxel in a training slice (the
guard blamed the learning rate), a slice file that fails inside the engine or a DataLoader worker,
an ``--output_dir`` of evaluate that is a file. Most checks run in this process; two real command
lines (training on a slice with a NaN voxel, inference with a checkpoint holding code) confirm
what a user sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Engine

from wss_monai.engine import BundleInputError, EvaluationReport, MLflowTracker, NonFiniteLossError, TrainLossMonitor, load_network
from wss_monai.networks import ENet, ResUNet

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "wss_segmentation" / "configs"


def _fails(capsys, fn, *args, **kwargs) -> str:
    """The message of the BundleInputError ``fn`` raises, checking it was printed as the one ``error:`` line."""
    with pytest.raises(BundleInputError) as caught:
        fn(*args, **kwargs)
    assert caught.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {caught.value.message}"]
    return caught.value.message


class _RunsCode:
    """Pickled as a call of os.system: what a hostile 'checkpoint' carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_checkpoints(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the error line must say)."""
    good = tmp_path / "good.pt"
    torch.save(ENet(1, 2).state_dict(), good)
    files = {
        "text": (b"not weights at all\n", "is not a PyTorch weights file"),
        "truncated": (good.read_bytes()[: good.stat().st_size // 2], "is truncated or damaged"),
        "empty": (b"", "is empty"),
    }
    out = {}
    for name, (data, reason) in files.items():
        (tmp_path / f"{name}.pt").write_bytes(data)
        out[name] = (tmp_path / f"{name}.pt", reason)
    torch.save({"model": _RunsCode(tmp_path / "code_ran")}, tmp_path / "code.pt")
    out["code"] = (tmp_path / "code.pt", "holds Python objects besides tensors")
    torch.save(ResUNet(1, 2).state_dict(), tmp_path / "other.pt")
    out["other"] = (tmp_path / "other.pt", "the weights do not fit network_def (ENet)")
    torch.save({"epoch": 3, "note": "hello"}, tmp_path / "notstate.pt")
    out["notstate"] = (tmp_path / "notstate.pt", "not network weights")
    return out


@pytest.mark.parametrize("name", ["text", "truncated", "empty", "code", "other", "notstate"])
def test_a_checkpoint_that_is_not_weights_is_one_line_in_evaluate_and_inference(name, tmp_path, capsys):
    from wss_monai.inference import load_model

    path, reason = _bad_checkpoints(tmp_path)[name]
    card = {"num_classes": 2, "in_channels": 1, "preprocessing": {"size": [32, 32], "slice_axis": 2}}
    for load in (lambda: load_network(ENet(1, 2), path), lambda: load_model(ENet(1, 2), path, card)):
        message = _fails(capsys, load)
        assert message.startswith(f"{path}: ") and reason in message
        assert "weights_only" not in message  # never the advice to load it unsafely
    assert not (tmp_path / "code_ran").exists()


def test_other_networks_weights_are_summed_up_in_one_line(tmp_path, capsys):
    path = tmp_path / "resunet.pt"
    torch.save(ResUNet(1, 2).state_dict(), path)
    message = _fails(capsys, load_network, ENet(1, 2), path)
    assert "tensors are missing (" in message and "tensors it does not have (" in message
    three = tmp_path / "three_classes.pt"
    torch.save(ENet(1, 3).state_dict(), three)
    assert "of another shape (e.g." in _fails(capsys, load_network, ENet(1, 2), three)


def _toy_dataset(tmp_path: Path, test_split: bool = True) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    entry = {"image": "slices/a.nii", "patient": "p1", "volume": "p1_v", "slice": 0, "weak": {"erosion": "w.nii.gz"}}
    manifest = {"name": "Toy LV", "labels": {"0": "background", "1": "lv"}, "weak_strategies": ["erosion"],
                "weak_primary": "erosion", "training": [entry, dict(entry, patient="p2")],
                "validation": [dict(entry, patient="p3")], "test": [dict(entry, patient="p4")] if test_split else []}
    (root / "dataset.json").write_text(json.dumps(manifest))
    return root


def test_unknown_tracking_uri_scheme_and_evaluate_folders_that_are_files(tmp_path, capsys):
    from wss_monai.engine import EvaluationSession, TrainingSession

    data = _toy_dataset(tmp_path)
    message = _fails(capsys, TrainingSession, str(data), "partial", tracking_uri="foo://bar", log_mlflow=False,
                     output_dir=str(tmp_path / "out"))
    assert message.startswith("--tracking_uri: ") and "unknown scheme 'foo'" in message and "http://host:port" in message
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "--output_dir" in _fails(capsys, EvaluationSession, str(data), output_dir=str(afile))
    ckpt = tmp_path / "model.pt"
    torch.save(ENet(1, 2).state_dict(), ckpt)
    assert "--results_dir" in _fails(capsys, EvaluationSession, str(data), ckpt_path=str(ckpt), results_dir=str(afile))


# --------------------------------------------------------------------------------------------
# inside the engine


def test_the_rule_between_user_data_errors_and_bugs(tmp_path):
    from monai.transforms import Compose, Lambda
    from torch._utils import ExceptionWrapper

    from wss_monai.data import DatasetError
    from wss_monai.engine.errors import user_data_error

    slice_file = tmp_path / "a.nii"
    slice_file.write_text("x")
    assert user_data_error(FileNotFoundError(2, "No such file or directory", str(slice_file))).startswith(str(slice_file))
    assert user_data_error(ValueError(f"{slice_file}: expected a 2D slice, got shape (3, 4, 5)")) == \
        f"{slice_file}: expected a 2D slice, got shape (3, 4, 5)"
    assert user_data_error(DatasetError("dataset.json: bad")) == "dataset.json: bad"
    # bugs: no file named, or not a data error type
    assert user_data_error(ValueError("operands could not be broadcast together with shapes (2,) (3,)")) is None
    assert user_data_error(ValueError(f"{tmp_path / 'gone.nii'}: refused")) is None  # names no existing file
    assert user_data_error(TypeError(f"{slice_file}: unsupported operand")) is None
    assert user_data_error(RuntimeError("CUDA error")) is None and user_data_error(KeyError("image")) is None
    # re-raised from a DataLoader worker: judged and reported on the worker's own message
    try:
        raise ValueError(f"{slice_file}: shape (20, 20) differs from the shape (32, 32) of b.nii")
    except ValueError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(ValueError) as caught:
        wrapped.reraise()
    assert "Original Traceback" in str(caught.value)
    assert user_data_error(caught.value) == f"{slice_file}: shape (20, 20) differs from the shape (32, 32) of b.nii"
    # MONAI's "applying transform" wrapper
    with pytest.raises(RuntimeError) as caught:
        Compose([Lambda(lambda d: (_ for _ in ()).throw(OSError(f"{slice_file}: cannot read the NIfTI slice")))])({})
    assert user_data_error(caught.value) == f"{slice_file}: cannot read the NIfTI slice"


def _session(output_dir: Path) -> SimpleNamespace:
    return SimpleNamespace(output_dir=str(output_dir), run_name="r", experiment="e", tracking_uri=None, log_mlflow=False,
                           spec=SimpleNamespace(name="partial"), bundle="wss_segmentation", seed=0, dataset_name="d",
                           dataset_dir="d", resume_checkpoint=None, resume_epoch=0, params=lambda: {}, full_config=lambda: {},
                           num_classes=2)


class _Slices(torch.utils.data.Dataset):
    """Sample 2 fails: its file "became unreadable" (``error``) or the code reading it has a bug."""

    def __init__(self, folder: Path, error: str) -> None:
        self.folder, self.error = folder, error

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        path = self.folder / f"slice_{i}.nii"
        if i == 2 and self.error == "unreadable":
            raise OSError(f"{path}: cannot read the NIfTI slice (file truncated)")
        if i == 2 and self.error == "bug":
            return {"image": torch.zeros(1, 4, 4) + "x", "image_path": str(path)}  # TypeError: a bug of ours
        return {"image": torch.zeros(1, 4, 4), "image_path": str(path)}


@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_slice_during_the_run_is_one_line_and_the_run_is_failed(workers, tmp_path, capsys):
    loader = torch.utils.data.DataLoader(_Slices(tmp_path, "unreadable"), batch_size=1, num_workers=workers)
    trainer = Engine(lambda engine, batch: {"loss": torch.tensor(0.0)})
    MLflowTracker(_session(tmp_path / "out")).attach(trainer)
    message = _fails(capsys, trainer.run, loader, max_epochs=1)
    assert message == f"{tmp_path / 'slice_2.nii'}: cannot read the NIfTI slice (file truncated)"
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["status"] == "FAILED" and info["error"] == message


def test_a_bug_inside_the_engine_keeps_its_traceback(tmp_path, capsys):
    loader = torch.utils.data.DataLoader(_Slices(tmp_path, "bug"), batch_size=1)
    trainer = Engine(lambda engine, batch: {"loss": torch.tensor(0.0)})
    MLflowTracker(_session(tmp_path / "out")).attach(trainer)
    with pytest.raises(TypeError):
        trainer.run(loader, max_epochs=1)
    assert "error:" not in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "FAILED"
    for error in ("bug", "unreadable"):  # evaluate.json's evaluator: the same rule
        evaluator = Engine(lambda engine, batch: None)
        EvaluationReport(session=None, metric=None).attach(evaluator)
        loader = torch.utils.data.DataLoader(_Slices(tmp_path, error), batch_size=1)
        if error == "bug":
            with pytest.raises(TypeError):
                evaluator.run(loader)
        else:
            assert "slice_2.nii: cannot read" in _fails(capsys, evaluator.run, loader)


def _nan_trainer(tmp_path: Path, nan_image: bool) -> Engine:
    """A trainer whose 2nd batch has a NaN loss, from a NaN voxel of its 2nd slice or (nan_image False) from nowhere."""

    def step(engine, batch):
        image = batch["image"]
        loss = image.mean() if nan_image else image.mean() + (float("nan") if engine.state.iteration == 2 else 0.0)
        return {"image": image, "label": {"bounds": batch["bounds"]}, "loss": loss}

    images = torch.zeros(6, 1, 4, 4)
    if nan_image:
        images[3, 0, 1, 1] = float("nan")
    bounds = torch.tensor([[0.0, float("inf")], [1.0, 5.0]]).expand(6, 2, 2)  # background (0, inf) is no NaN
    data = [{"image": images[i], "bounds": bounds[i], "image_path": str(tmp_path / f"s{i}.nii")} for i in range(6)]
    trainer = Engine(step)
    TrainLossMonitor(check_interval=None).attach(trainer)
    MLflowTracker(_session(tmp_path / "out")).attach(trainer)
    trainer._data = torch.utils.data.DataLoader(data, batch_size=2)
    return trainer


def test_a_nan_voxel_names_the_slice_file_instead_of_the_learning_rate(tmp_path, capsys):
    trainer = _nan_trainer(tmp_path, nan_image=True)
    message = _fails(capsys, trainer.run, trainer._data, max_epochs=1)
    assert f"{tmp_path / 's3.nii'}: NaN or infinite voxels" in message and "s2.nii" not in message
    assert "prepared again" in message and "learning rate" not in message and "iteration 2 of 3" in message
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "FAILED"
    # finite inputs: still the divergence message (and its exception) as before
    trainer = _nan_trainer(tmp_path / "finite", nan_image=False)
    with pytest.raises(NonFiniteLossError, match="Lower the learning rate"):
        trainer.run(trainer._data, max_epochs=1)


# --------------------------------------------------------------------------------------------
# python -m wss_monai.export


def test_export_of_a_run_whose_checkpoint_is_not_weights_or_an_out_that_cannot_be_written(tmp_path, capsys, monkeypatch):
    from wss_monai import export

    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    (run / "models" / "model.pt").write_text("not weights")
    (run / "models" / "preprocessing.json").write_text(json.dumps({"bundle": "wss_segmentation", "num_classes": 2}))
    (run / "run.json").write_text(json.dumps({"run_name": "r"}))
    assert export.main(["--run", str(run), "--out", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {run / 'models' / 'model.pt'}: is not a PyTorch weights file")
    assert not (tmp_path / "bundle").exists()
    torch.save(ENet(1, 2).state_dict(), run / "models" / "model.pt")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(export.tempfile, "mkdtemp", refuse)
    assert export.main(["--run", str(run), "--out", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --out {tmp_path / 'bundle'}: cannot write the bundle")


# --------------------------------------------------------------------------------------------
# the real command lines


def _bundle(args: list, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "monai.bundle", "run", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, encoding="utf-8", errors="replace", timeout=300, env=env)


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    return errors[0]


@pytest.mark.slow
def test_training_on_a_slice_with_a_nan_voxel_through_the_command_line(tiny_prepared, tmp_path, engine_mlflow_db):
    import shutil

    import nibabel as nib
    import numpy as np

    data = tmp_path / "prepared"
    shutil.copytree(tiny_prepared, data)
    entry = json.loads((data / "dataset.json").read_text())["training"][0]
    image = nib.load(str(data / entry["image"]), mmap=False)  # a memory map of the file it overwrites would crash
    array = np.array(image.dataobj, dtype=np.float32)
    array[2, 2] = np.nan
    nib.save(nib.Nifti1Image(array, image.affine), str(data / entry["image"]))
    out = tmp_path / "out"
    # --verify_slices false: the up-front check would stop this before training (tests/data/test_verify.py);
    # this is the safety net for a slice that goes bad during a run, or a run that skips the check
    done = _bundle(["--config_file", CONFIGS / "train.json", "--dataset_dir", data, "--regime", "partial", "--epochs", 1,
                    "--progress", "false", "--tracking_uri", engine_mlflow_db, "--output_dir", out,
                    "--logging_file", CONFIGS / "logging.conf", "--verify_slices", "false"])
    line = _one_error_line(done)
    assert f"{data / entry['image']}: NaN or infinite voxels" in line and "prepared again" in line
    assert json.loads((out / "run.json").read_text())["status"] == "FAILED"


@pytest.mark.slow
def test_inference_with_a_checkpoint_that_holds_code_through_the_command_line(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    torch.save({"model": _RunsCode(tmp_path / "code_ran")}, models / "model.pt")
    card = {"bundle": "wss_segmentation", "num_classes": 2, "preprocessing": {"size": [32, 32], "slice_axis": 2}}
    (models / "preprocessing.json").write_text(json.dumps(card))
    scans = tmp_path / "scans"
    scans.mkdir()
    done = _bundle(["--config_file", CONFIGS / "inference.json", "--ckpt_path", models / "model.pt", "--input_dir", scans,
                    "--output_dir", tmp_path / "seg"])
    line = _one_error_line(done)
    assert line.startswith(f"error: {models / 'model.pt'}: holds Python objects besides tensors")
    assert not (tmp_path / "code_ran").exists() and not (tmp_path / "seg").exists()
