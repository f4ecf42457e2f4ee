"""Fixtures for the data-preparation tests: tiny raw datasets written here, and a CLI runner.

The phantom fixtures (``acdc_raw``, ``promise12_raw``, ``vertebral_raw``) come from
tests/conftest.py; the small hand-made datasets below are for the cases a phantom does not cover
(custom formats, DICOM, deliberately broken files).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SMALL = ["--size", "32"]


def run_prepare(argv: list[str]) -> tuple[int, str, str]:
    """``python -m data_prep ARGV`` in this process: (exit code, stdout, stderr)."""
    from data_prep.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def ring_label(shape: tuple[int, int, int], radii=(9, 6, 4), absent=(0,)) -> np.ndarray:
    """ACDC-like labels: discs of decreasing radius 1, 2, 3 (RV-ish, myocardium, LV) on every slice but ``absent``."""
    x, y = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(x - shape[0] / 2, y - shape[1] / 2)
    plane = np.zeros(shape[:2], dtype=np.uint8)
    for value, radius in enumerate(radii, start=1):
        plane[r < radius] = value
    label = np.repeat(plane[:, :, None], shape[2], axis=2)
    for k in absent:
        label[:, :, k] = 0
    return label


def noisy_image(label: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(100, 10, label.shape) + 60 * label).astype(np.int16)


def save_acdc_nifti(path: Path, array: np.ndarray, spacing=(1.5, 1.5, 10.0)) -> Path:
    """A NIfTI with ACDC's quirk: the qform has the real spacing, the sform a unit diag(-1, -1, 1)."""
    qform = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    unit_sform = np.diag([-1.0, -1.0, 1.0, 1.0])
    image = nib.Nifti1Image(array, unit_sform)  # nibabel writes the image's affine into the sform
    image.header.set_qform(qform, code=1)
    image.header.set_sform(unit_sform, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def make_acdc(root: Path, patients: int = 4, shape=(24, 28, 4), groups=("DCM", "NOR")) -> Path:
    """A tiny ACDC tree (nested under database/training as some copies are)."""
    for number in range(1, patients + 1):
        folder = root / "database" / "training" / f"patient{number:03d}"
        folder.mkdir(parents=True)
        (folder / "Info.cfg").write_text(f"ED: 1\nES :3\n  Group:{groups[number % len(groups)]}\nNbFrame: 10\n")
        for frame in (1, 3):
            label = ring_label(shape, radii=(9, 6, 5 - frame // 3))
            save_acdc_nifti(folder / f"patient{number:03d}_frame{frame:02d}_gt.nii.gz", label)
            save_acdc_nifti(folder / f"patient{number:03d}_frame{frame:02d}.nii.gz", noisy_image(label, number))
        four_d = np.zeros(shape + (2,), dtype=np.int16)
        save_acdc_nifti(folder / f"patient{number:03d}_4d.nii.gz", four_d)
    return root


@pytest.fixture()
def tiny_acdc(tmp_path) -> Path:
    return make_acdc(tmp_path / "acdc_raw")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


# Helpers are handed out as fixtures so test modules need no import of this file (which works
# whether or not tests/data_prep is a package).


@pytest.fixture()
def prepare_cli():
    """The ``run_prepare`` runner."""
    return run_prepare


@pytest.fixture()
def raw_builders():
    """Functions writing tiny raw data: ring_label, noisy_image, save_acdc_nifti, make_acdc."""

    class Builders:
        pass

    builders = Builders()
    for function in (ring_label, noisy_image, save_acdc_nifti, make_acdc):
        setattr(builders, function.__name__, staticmethod(function))
    return builders
