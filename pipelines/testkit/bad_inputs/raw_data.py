"""Tiny raw datasets the cases break: NIfTI volumes in ACDC, PROMISE12 and custom layouts, weak annotations, and
the checks of a prepared result.

Every builder writes a small, valid dataset that a case then damages in one place.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pipelines.testkit.bad_inputs.corpus import SHAPE, SIZE, SPACING, Setup


# --- writing raw data --------------------------------------------------------------------------


def save_nifti(path: Path, array: np.ndarray, spacing=SPACING) -> Path:
    """A NIfTI with ACDC's quirk: the qform holds the real spacing, the sform a unit diag(-1, -1, 1)."""
    import nibabel as nib

    qform = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    unit = np.diag([-1.0, -1.0, 1.0, 1.0])
    image = nib.Nifti1Image(array, unit)
    image.header.set_qform(qform, code=1)
    image.header.set_sform(unit, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def rings(shape=SHAPE, shift: int = 0, empty_slices=(0,)) -> np.ndarray:
    """ACDC-like labels: discs 1 (RV-ish), 2 (myocardium), 3 (LV) on every slice but ``empty_slices``."""
    x, y = np.mgrid[: shape[0], : shape[1]]
    r = np.hypot(x - shape[0] / 2 - shift, y - shape[1] / 2)
    plane = np.zeros(shape[:2], dtype=np.uint8)
    for value, radius in enumerate((8, 6, 4), start=1):
        plane[r < radius] = value
    label = np.repeat(plane[:, :, None], shape[2], axis=2)
    label[:, :, list(empty_slices)] = 0
    return label


def intensities(label: np.ndarray, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).normal(100, 10, label.shape) + 50 * label).astype(np.int16)


def acdc_raw(raw: Path, patients: int = 2, folder: str = "training") -> Path:
    """A tiny ACDC tree: ``raw/<folder>/patientNNN`` with Info.cfg, ED (1) and ES (3) frames and labels."""
    for number in range(1, patients + 1):
        home = raw / folder / f"patient{number:03d}"
        home.mkdir(parents=True)
        (home / "Info.cfg").write_text(f"ED: 1\nES: 3\nGroup: {('NOR', 'DCM')[number % 2]}\nNbFrame: 10\n")
        for frame in (1, 3):
            label = rings(shift=frame // 3)
            save_nifti(home / f"patient{number:03d}_frame{frame:02d}_gt.nii.gz", label)
            save_nifti(home / f"patient{number:03d}_frame{frame:02d}.nii.gz", intensities(label, 10 * number + frame))
    return raw


def acdc_frame(raw: Path, patient: int = 1, frame: int = 1, gt: bool = False) -> Path:
    name = f"patient{patient:03d}_frame{frame:02d}{'_gt' if gt else ''}.nii.gz"
    return raw / "training" / f"patient{patient:03d}" / name


def acdc_setup(work: Path, **expected) -> Setup:
    out = work / "prepared" / "out"
    out.parent.mkdir(parents=True, exist_ok=True)
    return Setup(["acdc", "--src", work / "raw", "--out", out, *SIZE], out, **expected)


def custom_raw(raw: Path, cases=("a", "b"), label_of=None) -> Path:
    """``raw/images/<case>.nii.gz`` and ``raw/labels/<case>.nii.gz`` with labels {0, 1}."""
    for number, name in enumerate(cases):
        label = (rings(shift=number) == 3).astype(np.uint8) if label_of is None else label_of(name)
        save_nifti(raw / "labels" / f"{name}.nii.gz", label)
        save_nifti(raw / "images" / f"{name}.nii.gz", intensities(label, number))
    return raw


def custom_setup(work: Path, *extra, **expected) -> Setup:
    out = work / "prepared" / "out"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = ["custom", "--src", work / "raw", "--out", out, "--images", "images/{case}.nii.gz",
            "--labels", "labels/{case}.nii.gz", *SIZE, "--val", "0", *extra]  # fmt: skip
    return Setup(argv, out, **expected)


def csv_setup(raw: Path, listing_text: str, *extra, **expected) -> Setup:
    """``raw/list.csv`` holding ``listing_text``, prepared with ``python -m data_prep custom --csv``."""
    listing = raw / "list.csv"
    listing.write_text(listing_text)
    out = raw.parent / "prepared" / "out"
    out.parent.mkdir(parents=True, exist_ok=True)
    return Setup(["custom", "--src", raw, "--out", out, "--csv", listing, *SIZE, *extra], out, **expected)


def promise12_raw(raw: Path, cases: int = 2) -> Path:
    """``raw/CaseNN.mhd`` (+ ``.raw``) and ``CaseNN_segmentation.mhd``, written by SimpleITK."""
    import SimpleITK as sitk

    raw.mkdir(parents=True)
    for number in range(cases):
        label = (rings(shift=number) == 3).astype(np.uint8).transpose(2, 1, 0)  # SimpleITK order (z, y, x)
        for name, array in ((f"Case{number:02d}_segmentation", label), (f"Case{number:02d}", intensities(label, number))):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing((0.6, 0.6, 3.6))
            sitk.WriteImage(image, str(raw / f"{name}.mhd"))
    return raw


def promise12_setup(work: Path, **expected) -> Setup:
    out = work / "prepared" / "out"
    out.parent.mkdir(parents=True, exist_ok=True)
    return Setup(["promise12", "--src", work / "raw", "--out", out, *SIZE, "--val", "0"], out, **expected)


def dicom_series(folder: Path, array_zyx: np.ndarray, series_uid: str) -> None:
    """One 2D DICOM file per slice of one series, as a scanner export writes them."""
    import SimpleITK as sitk

    from pipelines.testkit.dicom import write_dicom_series

    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing((1.5, 1.5, 10.0))
    write_dicom_series(folder, image, series_uid, name=f"{series_uid[-4:]}_{{z:03d}}.dcm")


def scribble_of(label: np.ndarray) -> np.ndarray:
    """A thin stroke (file value 1) along the middle row of the object on every slice where it is present."""
    scribble = np.zeros(label.shape, dtype=np.uint8)
    for k in range(label.shape[2]):
        rows = np.flatnonzero(label[:, :, k].any(axis=1))
        if len(rows):
            middle = rows[len(rows) // 2]
            scribble[middle, :, k] = label[middle, :, k]
    return scribble


def weak_raw(raw: Path, cases=("a", "b"), masks=()) -> Path:
    """``raw/images/<case>.nii.gz``, scribbles ``raw/scribbles/<case>.nii.gz`` and full masks for ``masks`` only."""
    custom_raw(raw, cases=cases)
    for name in cases:
        label_path = raw / "labels" / f"{name}.nii.gz"
        import nibabel as nib

        label = np.asanyarray(nib.load(str(label_path)).dataobj)
        save_nifti(raw / "scribbles" / f"{name}.nii.gz", scribble_of(label))
        if name not in masks:
            label_path.unlink()
    return raw


def weak_setup(work: Path, *extra, **expected) -> Setup:
    """``custom`` with scribbles and no --labels (every case weak-only)."""
    out = work / "prepared" / "out"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = ["custom", "--src", work / "raw", "--out", out, "--images", "images/{case}.nii.gz",
            "--weak-labels", "scribbles/{case}.nii.gz", *SIZE, "--val", "0", *extra]  # fmt: skip
    return Setup(argv, out, **expected)


def save_plain_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))
    return path


def _acdc_affine(spacing=SPACING) -> np.ndarray:
    return np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])


def markups_text(points: list[tuple[str, list[float]]], space: str = "LPS") -> str:
    """A point list as 3D Slicer writes it (markups schema v1.0.3, control points abridged to the schema's fields)."""
    controls = [{"id": str(n), "label": label, "description": "", "associatedNodeID": "", "position": position,
                 "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0], "selected": True, "locked": False,
                 "visibility": True, "positionStatus": "defined"} for n, (label, position) in enumerate(points, 1)]
    return json.dumps({"@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
                       "Resources/Schema/markups-schema-v1.0.3.json#",
                       "markups": [{"type": "Fiducial", "coordinateSystem": space, "coordinateUnits": "mm",
                                    "locked": False, "fixedNumberOfControlPoints": False, "labelFormat": "%N-%d",
                                    "lastUsedControlPointNumber": len(points), "controlPoints": controls,
                                    "measurements": [], "display": {"visibility": True}}]}, indent=4)


# --- checking a prepared dataset ----------------------------------------------------------------


def prepared_problems(out: Path, volumes: int | None = None) -> list[str]:
    """Problems with a prepared dataset: missing index, wrong volume count, a file not matching prep.json."""
    try:
        dataset = json.loads((out / "dataset.json").read_text())
        prep = json.loads((out / "prep.json").read_text())
    except (OSError, ValueError) as err:
        return [f"no readable dataset.json/prep.json ({err})"]
    problems = []
    if volumes is not None and len(dataset["volumes"]) != volumes:
        problems.append(f"{len(dataset['volumes'])} volumes, expected {volumes}")
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"prep.json"}
    if written != set(prep["checksums"]):
        problems.append("files on disk differ from the ones listed in prep.json")
    for relpath, digest in prep["checksums"].items():
        path = out / relpath
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            problems.append(f"{relpath} does not match its checksum")
            break
    return problems


def _entries(out: Path) -> list[dict]:
    dataset = json.loads((out / "dataset.json").read_text())
    return [e for split in ("training", "validation", "test") for e in dataset[split]]


def _all_absent(out: Path, volume: str | None = None) -> list[str]:
    """Every slice (of ``volume``) tagged absent with (0, 0) bounds: all-background labels are legal."""
    entries = [e for e in _entries(out) if volume is None or e["volume"] == volume]
    if not entries:
        return [f"no slices of {volume or 'any volume'}"]
    wrong = [e for e in entries if e["tag"] != [0] or e["bounds"]["tags"] != [[0, 0]] or e["size_px"] != [0]]
    return [f"{len(wrong)} slices of an all-background volume are not tagged absent"] if wrong else []
