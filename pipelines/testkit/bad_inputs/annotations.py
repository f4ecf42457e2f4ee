"""Corpus cases: your own annotations (issue 13): scribbles, clicks, tags and size estimates that do not fit
their images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipelines.testkit.bad_inputs.corpus import SHAPE, SPACING, Setup, case
from pipelines.testkit.bad_inputs.raw_data import (
    _acdc_affine,
    _entries,
    markups_text,
    prepared_problems,
    rings,
    save_plain_nifti,
    scribble_of,
    weak_raw,
    weak_setup,
)


# --- the corpus: your own annotations (issue 13) --------------------------------------------------


def _replace_scribble(work: Path, array: np.ndarray | None = None, affine: np.ndarray | None = None) -> Path:
    path = work / "raw" / "scribbles" / "b.nii.gz"
    import nibabel as nib

    current = np.asanyarray(nib.load(str(path)).dataobj)
    path.unlink()
    return save_plain_nifti(path, current if array is None else array, _acdc_affine() if affine is None else affine)


def _weak_only(out: Path) -> list[str]:
    """The contract for weak-only cases: no label, no sizes, the user strategy, bounds only where derived."""
    problems = prepared_problems(out)
    for entry in _entries(out):
        if "label" in entry or "size_px" in entry or "volume_size_px" in entry:
            problems.append(f"weak-only slice {entry['image']} has a label or sizes")
            break
        if "user" not in entry["weak"]:
            problems.append(f"slice {entry['image']} lacks the user strategy")
            break
        if any(rule in entry["bounds"] for rule in ("individual", "volume3d")):
            problems.append(f"slice {entry['image']} has a bound nobody gave")
            break
    return problems


@case("weak-only-custom", "legal: custom data without --labels, scribbles only: every case a weak-only training case")
def _weak_only_custom(work: Path) -> Setup:
    weak_raw(work / "raw")
    return weak_setup(work, code=0, verify=_weak_only)


@case("annotation-shape-mismatch", "a scribble file with one slice fewer than its image")
def _annotation_shape(work: Path) -> Setup:
    weak_raw(work / "raw")
    path = _replace_scribble(work, np.zeros((SHAPE[0], SHAPE[1], SHAPE[2] - 1), dtype=np.uint8))
    return weak_setup(work, names=str(path), problem="annotation shape")


@case("annotation-spacing-mismatch", "a scribble file whose voxels are 2 mm instead of 1.5 mm")
def _annotation_spacing(work: Path) -> Setup:
    weak_raw(work / "raw")
    path = _replace_scribble(work, affine=_acdc_affine((2.0, 2.0, 10.0)))
    return weak_setup(work, names=str(path), problem="annotation spacing")


@case("annotation-orientation-mismatch", "a scribble file with its first axis flipped (RPS instead of LPS)")
def _annotation_orientation(work: Path) -> Setup:
    weak_raw(work / "raw")
    path = _replace_scribble(work, affine=np.diag([SPACING[0], -SPACING[1], SPACING[2], 1.0]))
    return weak_setup(work, names=str(path), problem="annotation orientation differs")


@case("annotation-origin-mismatch", "a scribble file shifted by 3 mm")
def _annotation_origin(work: Path) -> Setup:
    weak_raw(work / "raw")
    affine = _acdc_affine()
    affine[0, 3] = 3.0
    path = _replace_scribble(work, affine=affine)
    return weak_setup(work, names=str(path), problem="annotation origin is 3 mm away")


@case("annotation-undeclared-value", "a scribble file holding the value 7, which --weak-values does not declare")
def _annotation_value(work: Path) -> Setup:
    weak_raw(work / "raw")
    array = scribble_of((rings() == 3).astype(np.uint8))
    array[0, 0, 0] = 7
    path = _replace_scribble(work, array)
    return weak_setup(work, "--weak-values", "0=none,1=1", names=str(path), problem="annotation values {7} not declared")


@case("every-case-annotated", "--every-case-annotated, and case b has no scribble file")
def _every_case(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    missing = raw / "scribbles" / "b.nii.gz"
    missing.unlink()
    return weak_setup(work, "--every-case-annotated", names=str(missing), problem="annotation file missing for case b")


@case("point-outside-image", "a points CSV with a voxel index past the image's last column")
def _point_outside(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    listing = raw / "points.csv"
    listing.write_text(f"case,class,i,j,k\na,1,10,11,1\nb,1,10,{SHAPE[1] + 4},1\n")
    return weak_setup(work, "--points", listing, names=str(listing), problem="line 3: lies outside the image")


@case("point-undeclared-space", "a points CSV in world mm (x,y,z) without --points-space")
def _point_space(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    listing = raw / "points.csv"
    listing.write_text("case,class,x,y,z\na,1,-15.0,-16.5,10.0\n")
    return weak_setup(work, "--points", listing, names=str(listing), problem="undeclared coordinate system")


@case("markups-undeclared-space", "a Slicer markups file whose coordinateSystem is 'IJK'")
def _markups_space(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    path = raw / "clicks" / "a.mrk.json"
    path.parent.mkdir()
    path.write_text(markups_text([("1-1", [-15.0, -16.5, 10.0])], space="IJK"))
    return weak_setup(work, "--markups", "clicks/{case}.mrk.json", names=str(path),
                      problem="coordinate system 'IJK' is not LPS or RAS")


@case("markups-not-json", "a .mrk.json file cut in the middle (not valid JSON)")
def _markups_json(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    path = raw / "clicks" / "a.mrk.json"
    path.parent.mkdir()
    text = markups_text([("1-1", [-15.0, -16.5, 10.0])])
    path.write_text(text[: len(text) // 2])
    return weak_setup(work, "--markups", "clicks/{case}.mrk.json", names=str(path), problem="not valid JSON")


@case("markups-not-markups", "a .mrk.json file that is JSON but not a Slicer markups file (a segmentation's metadata)")
def _markups_other(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    path = raw / "clicks" / "a.mrk.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"segments": [{"name": "LV", "labelValue": 1}]}))
    return weak_setup(work, "--markups", "clicks/{case}.mrk.json", names=str(path), problem="not a 3D Slicer markups file")


@case("csv-unknown-case", "a tags CSV listing case 'zz', which is not among the cases found")
def _csv_unknown_case(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    listing = raw / "tags.csv"
    listing.write_text("case,class,present,slice\na,1,1,1\nzz,1,0,1\n")
    return weak_setup(work, "--tags", listing, names=str(listing), problem="line 3: case 'zz' is not among the cases found")


@case("two-classes-one-voxel", "two clicks of different classes on the same voxel")
def _two_classes(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    listing = raw / "points.csv"
    listing.write_text("case,class,i,j,k\na,1,10,11,1\na,background,10,11,1\n")
    return weak_setup(work, "--points", listing, names=str(listing), problem="two classes")


@case("tag-contradicts-annotation", "a tags CSV saying class 1 is absent on a slice where the scribble paints it")
def _tag_contradiction(work: Path) -> Setup:
    raw = weak_raw(work / "raw")
    listing = raw / "tags.csv"
    listing.write_text("case,class,present,slice\na,1,0,1\n")
    return weak_setup(work, "--tags", listing, names=str(listing), problem="tagged absent on slice 1 of a")


@case("mm2-bound-without-spacing", "--common-bounds-mm2 on an image whose header declares no voxel size")
def _mm2_no_spacing(work: Path) -> Setup:
    import nibabel as nib

    raw = weak_raw(work / "raw")
    path = raw / "images" / "b.nii.gz"
    array = np.asanyarray(nib.load(str(path)).dataobj)
    path.unlink()
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))  # pixdim 1, unit unknown: no spacing
    (raw / "scribbles" / "b.nii.gz").unlink()
    nib.save(nib.Nifti1Image(scribble_of((rings(shift=1) == 3).astype(np.uint8)), np.eye(4)), str(raw / "scribbles" / "b.nii.gz"))
    return weak_setup(work, "--common-bounds-mm2", "20,400", names=str(path), problem="declares no spacing")


@case("val-needs-masks", "--val 2 when only one patient has a full mask")
def _val_needs_masks(work: Path) -> Setup:
    weak_raw(work / "raw", cases=("a", "b", "c"), masks=("a",))
    setup = weak_setup(work, "--labels", "labels/{case}.nii.gz", problem="only 1 of the 3 patients have them")
    setup.argv[setup.argv.index("--val") + 1] = "2"
    return setup
