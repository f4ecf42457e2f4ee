"""The custom path: NIfTI, MetaImage/NRRD, DICOM series folders, pattern and CSV pairing, label mapping."""

from __future__ import annotations

import json
import locale
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pipelines.testkit import dicom as kit_dicom

from data_prep.slicing import restore_volume

SMALL = ["--size", "32", "--val", "0"]
SHAPE_ZYX = (5, 30, 26)  # SimpleITK array order (z, y, x)
SPACING_XYZ = (0.8, 0.7, 3.0)


def label_zyx(offset: int = 0) -> np.ndarray:
    """Labels 0/1/2/5 in z, y, x order: a disc (2) with a core (5) and a bar (1), absent on slice 0."""
    z, y, x = np.mgrid[: SHAPE_ZYX[0], : SHAPE_ZYX[1], : SHAPE_ZYX[2]]
    label = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    disc = np.hypot(y - 15 - offset, x - 12) < 8
    label[disc] = 2
    label[np.hypot(y - 15 - offset, x - 12) < 4] = 5
    label[(y > 25) & (x > 3) & (x < 22)] = 1
    label[0] = 0
    return label


def sitk_image(array_zyx: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin((-10.0, 4.0, 22.0))
    return image


def image_zyx(label: np.ndarray, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).normal(200, 20, label.shape) + 40 * label).astype(np.int16)


def write_dicom_series(folder: Path, array_zyx: np.ndarray) -> None:
    """One 2D DICOM file per slice, positioned along z, as a scanner export would be."""
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin((-10.0, 4.0, 22.0))
    kit_dicom.write_dicom_series(folder, image, "1.2.826.0.1.3680043.2.1125.1." + str(abs(hash(folder.name)) % 10**8))


def check_prepared(out: Path, expected_classes: dict, n_volumes: int) -> dict:
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["labels"] == expected_classes
    assert len(dataset["volumes"]) == n_volumes
    for volume in dataset["volumes"]:
        assert volume["original_shape"] == [SHAPE_ZYX[2], SHAPE_ZYX[1], SHAPE_ZYX[0]]  # file order i, j, k
        assert volume["original_spacing"] == pytest.approx(list(SPACING_XYZ), rel=1e-4)
        assert volume["n_slices"] == SHAPE_ZYX[0]
    return dataset


def test_nifti_pattern_with_label_mapping(tmp_path, prepare_cli):
    src = tmp_path / "mydata"
    for number in range(3):
        label = label_zyx(number)
        # NIfTI files in x, y, z order as most tools write them.
        affine = np.diag(list(SPACING_XYZ) + [1.0])
        (src / "images").mkdir(parents=True, exist_ok=True)
        (src / "labels").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(image_zyx(label, number).transpose(2, 1, 0), affine), str(src / "images" / f"sub{number}.nii.gz"))
        nib.save(nib.Nifti1Image(label.transpose(2, 1, 0), affine), str(src / "labels" / f"sub{number}_seg.nii.gz"))
    out = tmp_path / "prepared"
    code, stdout, stderr = prepare_cli(
        ["custom", "--src", src, "--out", out, "--images", "images/{case}.nii.gz", "--labels", "labels/{case}_seg.nii.gz",
         "--targets", "5,2+1", "--label-values", "0,1,2,5", "--class-names", "core,organ", *SMALL]
    )  # fmt: skip
    assert code == 0, stderr
    dataset = check_prepared(out, {"0": "background", "1": "core", "2": "organ"}, 3)
    assert dataset["name"] == "custom-core-organ"
    # Raw 5 -> class 1, raw 2 and 1 -> class 2: restore the prepared labels and compare with the mapping.
    volume = dataset["volumes"][0]
    slices = [np.asanyarray(nib.load(str(out / e["label"])).dataobj) for e in dataset["training"] if e["volume"] == volume["volume"]]
    restored = restore_volume(slices, volume)
    raw = label_zyx(0).transpose(2, 1, 0)
    expected = np.select([raw == 5, (raw == 2) | (raw == 1)], [1, 2], 0)
    assert (restored == expected).mean() > 0.97
    assert "custom" in dataset["description"]


def test_metaimage_and_nrrd_pairing(tmp_path, prepare_cli):
    src = tmp_path / "mixed"
    src.mkdir()
    for number in range(2):
        label = (label_zyx(number) > 0).astype(np.uint8)
        sitk.WriteImage(sitk_image(image_zyx(label, number)), str(src / f"scan{number}.mhd"))
        sitk.WriteImage(sitk_image(label), str(src / f"scan{number}_mask.nrrd"))
    out = tmp_path / "prepared"
    code, _, stderr = prepare_cli(
        ["custom", "--src", src, "--out", out, "--images", "{case}.mhd", "--labels", "{case}_mask.nrrd", "--slice-axis", "2", *SMALL]
    )
    assert code == 0, stderr
    dataset = check_prepared(out, {"0": "background", "1": "label 1"}, 2)
    present = [e for e in dataset["training"] if e["tag"][0]]
    assert len(present) == 2 * (SHAPE_ZYX[0] - 1)  # slice 0 is empty in every volume


def test_dicom_series_folders(tmp_path, prepare_cli):
    encoding = locale.getpreferredencoding(False)
    src = tmp_path / "dicom"
    for number in range(2):
        label = (label_zyx(number) > 0).astype(np.uint8)
        write_dicom_series(src / f"patient{number}" / "t2", image_zyx(label, number))
        sitk.WriteImage(sitk_image(label), str(src / f"patient{number}" / "mask.nii.gz"))
    out = tmp_path / "prepared"
    code, _, stderr = prepare_cli(
        ["custom", "--src", src, "--out", out, "--images", "{case}/t2", "--labels", "{case}/mask.nii.gz", *SMALL]
    )
    assert code == 0, stderr
    # GDCM's writer resets the C locale; the test kit's writer puts it back (open() would turn ASCII)
    assert locale.getpreferredencoding(False) == encoding
    dataset = check_prepared(out, {"0": "background", "1": "label 1"}, 2)
    assert sorted(v["patient"] for v in dataset["volumes"]) == ["patient0", "patient1"]


def test_csv_listing_with_patients(tmp_path, prepare_cli):
    src = tmp_path / "listed"
    src.mkdir()
    rows = ["image,label,patient,case"]
    for number in range(4):
        label = (label_zyx(number % 2) > 0).astype(np.uint8)
        sitk.WriteImage(sitk_image(image_zyx(label, number)), str(src / f"i{number}.nrrd"))
        sitk.WriteImage(sitk_image(label), str(src / f"l{number}.nrrd"))
        rows.append(f"i{number}.nrrd,l{number}.nrrd,p{number // 2},visit{number}")
    (src / "list.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "prepared"
    code, _, stderr = prepare_cli(["custom", "--src", src, "--out", out, "--csv", src / "list.csv", "--size", "32", "--val", "1"])
    assert code == 0, stderr
    dataset = check_prepared(out, {"0": "background", "1": "label 1"}, 4)
    split_of = {}
    for split in ("training", "validation", "test"):
        for entry in dataset[split]:
            split_of.setdefault(entry["patient"], set()).add(split)
    assert all(len(s) == 1 for s in split_of.values()) and set(split_of) == {"p0", "p1"}


def test_custom_label_values_are_enforced(tmp_path, prepare_cli):
    src = tmp_path / "strict"
    src.mkdir()
    label = label_zyx()
    sitk.WriteImage(sitk_image(image_zyx(label, 0)), str(src / "a.nrrd"))
    sitk.WriteImage(sitk_image(label), str(src / "a_seg.nrrd"))
    out = tmp_path / "prepared"
    code, _, stderr = prepare_cli(["custom", "--src", src, "--out", out, "--images", "{case}.nrrd", "--labels", "{case}_seg.nrrd", *SMALL])
    assert code == 2 and "a_seg.nrrd" in stderr and "{2, 5}" in stderr and not out.exists()
