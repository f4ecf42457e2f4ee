"""Corpus cases: inputs that were once prepared without a word into wrong data (issue 15), and legal
look-alikes that must not be refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.testkit.bad_inputs.corpus import SHAPE, SPACING, Setup, case
from pipelines.testkit.bad_inputs.raw_data import (
    _acdc_affine,
    acdc_frame,
    acdc_raw,
    acdc_setup,
    custom_raw,
    custom_setup,
    intensities,
    prepared_problems,
    promise12_raw,
    promise12_setup,
    rings,
    save_nifti,
    save_plain_nifti,
    weak_raw,
    weak_setup,
)


# --- the corpus: silently wrong results (issue 15) -------------------------------------------------


def _prepared_image(out: Path, volume: str) -> np.ndarray:
    """The prepared (normalised, resampled) 3D image of ``volume``."""
    import nibabel as nib

    entry = next(v for v in json.loads((out / "dataset.json").read_text())["volumes"] if v["volume"] == volume)
    return np.asanyarray(nib.load(str(out / entry["image"])).dataobj)


def _same_normalised(out: Path, volume: str, twin: str) -> list[str]:
    """``volume`` (extreme intensities) must be prepared like ``twin`` (the same image at ordinary scale)."""
    problems = prepared_problems(out)
    if problems:
        return problems
    extreme, ordinary = _prepared_image(out, volume), _prepared_image(out, twin)
    if not np.all(np.isfinite(extreme)) or not np.ptp(extreme) > 0:
        return [f"{volume} prepared into non-finite or flat intensities (min {extreme.min()}, max {extreme.max()})"]
    worst = float(np.max(np.abs(extreme.astype(np.float64) - ordinary)))
    return [f"{volume} differs from its scaled-down twin {twin} by up to {worst:.3g}"] if worst > 1e-4 else []


@case("extreme-intensity", "legal: an image of values near float32's limits (+-3e38) is normalised like its scaled-down twin")
def _extreme_intensity(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    centred = np.clip(intensities(rings(), 11).astype(np.float32) - 180, -130, 130)
    save_nifti(acdc_frame(raw, 1, 1), centred)
    save_nifti(acdc_frame(raw, 2, 1), centred * np.float32(2.5e36))  # up to 3.25e38: float32 max is 3.40e38
    verify = lambda out: _same_normalised(out, "patient002_frame01", "patient001_frame01")  # noqa: E731
    return acdc_setup(work, code=0, verify=verify)


@case("label-flipped-shifted", "a label whose affine has the x axis reversed and the origin 40 mm away from its image's")
def _label_flipped(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    path = acdc_frame(raw, 2, gt=True)
    path.unlink()
    affine = np.diag([SPACING[0], -SPACING[1], SPACING[2], 1.0])  # image: diag(-1.5, -1.5, 10)
    affine[0, 3] = -40.0
    save_plain_nifti(path, rings(), affine)
    return acdc_setup(work, names=str(path), problem="label orientation differs from the image's")


@case("label-origin-shifted", "a PROMISE12 segmentation (.mhd) whose Offset is 12 mm away from its image's")
def _label_origin_shifted(work: Path) -> Setup:
    raw = promise12_raw(work / "raw")
    path = raw / "Case01_segmentation.mhd"
    text = path.read_text()
    assert "Offset = 0 0 0" in text, text
    path.write_text(text.replace("Offset = 0 0 0", "Offset = 0 12 0"))
    return promise12_setup(work, names=str(path), problem="label origin is 12 mm away from the image's")


@case("label-origin-rounding", "legal: a label whose origin and direction differ from its image's by rounding (1e-4 mm)")
def _label_origin_rounding(work: Path) -> Setup:
    raw = custom_raw(work / "raw")
    path = raw / "labels" / "b.nii.gz"
    label = (rings(shift=1) == 3).astype(np.uint8)
    path.unlink()
    affine = _acdc_affine()
    affine[:3, 3] = (1e-4, -2e-4, 1e-4)
    affine[1, 0] = 1e-6  # a direction cosine of 1e-6 / 1.5 mm
    save_plain_nifti(path, label, affine)
    return custom_setup(work, code=0, verify=lambda out: prepared_problems(out, volumes=2))


@case("constant-image-foreground", "an image whose voxels all hold 7 while its label marks foreground")
def _constant_image(work: Path) -> Setup:
    path = save_nifti(acdc_frame(acdc_raw(work / "raw"), 2, 3), np.full(SHAPE, 7, dtype=np.int16))
    return acdc_setup(work, names=str(path), problem="image is constant (every voxel 7) but its label")


@case("constant-image-annotation", "a weak-only case whose image is all 0 while its scribble paints foreground")
def _constant_image_annotation(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    path = raw / "images" / "b.nii.gz"
    path.unlink()
    save_nifti(path, np.zeros(SHAPE, dtype=np.int16))
    return weak_setup(work, names=str(path), problem="image is constant (every voxel 0) but its annotation marks foreground")


def _padding_kept(out: Path, volume: str) -> list[str]:
    """The padding slice of ``volume`` is flat at 0 and the others keep their contrast."""
    problems = prepared_problems(out, volumes=4)
    if problems:
        return problems
    image = _prepared_image(out, volume)
    if np.ptp(image[:, :, 0]) != 0 or image[:, :, 0].max() != 0:
        problems.append(f"the constant padding slice of {volume} is not flat at 0")
    if not all(np.ptp(image[:, :, k]) > 0.5 for k in range(1, image.shape[2])):
        problems.append(f"the other slices of {volume} lost their contrast")
    return problems


@case("constant-padding-slices", "legal: an image constant (0) on a padding slice only, where its label is empty")
def _constant_padding(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    label = rings(empty_slices=(0,))
    values = intensities(label, 21)
    values[:, :, 0] = 0
    save_nifti(acdc_frame(raw, 2, 1), values)
    return acdc_setup(work, code=0, verify=lambda out: _padding_kept(out, "patient002_frame01"))
