"""Bad input: one line naming the file and the problem, exit code 2, nothing left under --out."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SMALL = ["--size", "32"]


def assert_clean_failure(result, out: Path, names: str, problem: str) -> None:
    code, stdout, stderr = result
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1, stderr
    assert names in lines[0] and problem in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no temporary left


def frame(raw: Path, patient: int = 2, frame: int = 1, gt: bool = False) -> Path:
    name = f"patient{patient:03d}_frame{frame:02d}{'_gt' if gt else ''}.nii.gz"
    return raw / "database" / "training" / f"patient{patient:03d}" / name


def test_truncated_image(tiny_acdc, tmp_path, prepare_cli):
    path = frame(tiny_acdc, 3)
    path.write_bytes(path.read_bytes()[:200])
    out = tmp_path / "out"
    result = prepare_cli(["acdc", "--src", tiny_acdc, "--out", out, *SMALL])
    assert_clean_failure(result, out, str(path), "unreadable or truncated image")


def test_unreadable_metaimage(tmp_path, prepare_cli):
    import SimpleITK as sitk

    src = tmp_path / "promise"
    src.mkdir()
    for name in ("Case00", "Case00_segmentation"):
        image = sitk.GetImageFromArray(np.zeros((4, 16, 16), dtype=np.int16))
        sitk.WriteImage(image, str(src / f"{name}.mhd"))
    raw = src / "Case00.raw"
    raw.write_bytes(raw.read_bytes()[:100])  # truncated pixel data
    out = tmp_path / "out"
    result = prepare_cli(["promise12", "--src", src, "--out", out, *SMALL, "--val", "0"])
    assert_clean_failure(result, out, "Case00.mhd", "unreadable or truncated image")


def test_shape_mismatch(tiny_acdc, tmp_path, prepare_cli, raw_builders):
    label = frame(tiny_acdc, 2, gt=True)
    raw_builders.save_acdc_nifti(label, np.zeros((24, 28, 5), dtype=np.uint8))
    out = tmp_path / "out"
    assert_clean_failure(prepare_cli(["acdc", "--src", tiny_acdc, "--out", out, *SMALL]), out, str(label), "label shape")


def test_spacing_mismatch(tiny_acdc, tmp_path, prepare_cli, raw_builders):
    label = frame(tiny_acdc, 2, gt=True)
    raw_builders.save_acdc_nifti(label, raw_builders.ring_label((24, 28, 4)), spacing=(1.5, 1.5, 5.0))
    out = tmp_path / "out"
    assert_clean_failure(prepare_cli(["acdc", "--src", tiny_acdc, "--out", out, *SMALL]), out, str(label), "label spacing")


def test_label_values_outside_the_declared_set(tiny_acdc, tmp_path, prepare_cli, raw_builders):
    label = frame(tiny_acdc, 4, gt=True)
    values = raw_builders.ring_label((24, 28, 4))
    values[0, 0, 1] = 7
    raw_builders.save_acdc_nifti(label, values)
    out = tmp_path / "out"
    result = prepare_cli(["acdc", "--src", tiny_acdc, "--out", out, *SMALL])
    assert_clean_failure(result, out, str(label), "label values {7} outside the declared set {0, 1, 2, 3}")


def test_missing_label_file(tiny_acdc, tmp_path, prepare_cli):
    label = frame(tiny_acdc, 1, frame=3, gt=True)
    label.unlink()
    out = tmp_path / "out"
    assert_clean_failure(prepare_cli(["acdc", "--src", tiny_acdc, "--out", out, *SMALL]), out, str(label), "label file missing")


@pytest.mark.parametrize("shape", [(24, 28), (24, 28, 4, 2)])
def test_non_3d_volume(tiny_acdc, tmp_path, prepare_cli, raw_builders, shape):
    image = frame(tiny_acdc, 2)
    raw_builders.save_acdc_nifti(image, np.zeros(shape, dtype=np.int16))
    out = tmp_path / "out"
    result = prepare_cli(["acdc", "--src", tiny_acdc, "--out", out, *SMALL])
    assert_clean_failure(result, out, str(image), f"is {len(shape)}D")


def test_nan_intensities(tiny_acdc, tmp_path, prepare_cli, raw_builders):
    image = frame(tiny_acdc, 2)
    values = raw_builders.noisy_image(raw_builders.ring_label((24, 28, 4))).astype(np.float32)
    values[3, 3, 2] = np.nan
    raw_builders.save_acdc_nifti(image, values)
    out = tmp_path / "out"
    assert_clean_failure(prepare_cli(["acdc", "--src", tiny_acdc, "--out", out, *SMALL]), out, str(image), "NaN")


@pytest.mark.parametrize("source", ["acdc", "promise12", "vertebral"])
def test_empty_source_folder(tmp_path, prepare_cli, source):
    src = tmp_path / "empty"
    src.mkdir()
    out = tmp_path / "out"
    assert_clean_failure(prepare_cli([source, "--src", src, "--out", out]), out, str(src), "found")


def test_existing_output_is_kept(tiny_acdc, tmp_path, prepare_cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, stderr = prepare_cli(["acdc", "--src", tiny_acdc, "--out", out, *SMALL])
    assert code == 2 and "--overwrite" in stderr and (out / "keep.txt").read_text() == "mine"


def test_worker_error_reaches_the_parent_as_one_line(tiny_acdc, tmp_path):
    """With --workers 2 the failing volume is read in a child process; run as users do."""
    image = frame(tiny_acdc, 3, frame=3)
    image.write_bytes(gzip.compress(b"not a nifti file", mtime=0))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "data_prep", "acdc", "--src", str(tiny_acdc), "--out", str(out), *SMALL, "--workers", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert_clean_failure((done.returncode, done.stdout, done.stderr), out, str(image), "unreadable or truncated image")


def test_bad_option_value_is_one_line(tiny_acdc, tmp_path, prepare_cli):
    out = tmp_path / "out"
    code, _, stderr = prepare_cli(["acdc", "--src", tiny_acdc, "--out", out, "--targets", "4"])
    assert code == 2 and "--targets" in stderr and not out.exists()
    code, _, stderr = prepare_cli(["acdc", "--src", tiny_acdc, "--out", out, "--weak", "lasso"])
    assert code == 2 and "lasso" in stderr and not out.exists()


def test_volume_readable_by_nibabel_but_bad_dtype_label(tiny_acdc, tmp_path, prepare_cli, raw_builders):
    label = frame(tiny_acdc, 2, gt=True)
    values = raw_builders.ring_label((24, 28, 4)).astype(np.float32)
    values[5, 5, 1] = 0.5
    raw_builders.save_acdc_nifti(label, values)
    out = tmp_path / "out"
    assert_clean_failure(prepare_cli(["acdc", "--src", tiny_acdc, "--out", out, *SMALL]), out, str(label), "non-integer")
