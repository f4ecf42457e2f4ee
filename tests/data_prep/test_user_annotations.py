"""Your own annotations as input (issue 13): label maps in both conventions, Slicer markups in LPS
and RAS, CSV points in world mm and voxels, boxes, tags, typed mm² bounds, size estimates, cases
without full masks, and the thin-stroke rule. The bad inputs are corpus cases (test_reliability).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pipelines.testkit.bad_inputs import markups_text, save_plain_nifti
from data_prep.errors import InputError
from data_prep.resample import plan_inplane
from data_prep.thin_resample import resample_annotation, survival
from data_prep.user_classes import map_values, parse_value_map, value_lookup, vocabulary

SHAPE = (20, 24, 4)  # i, j, k
SPACING = (1.5, 2.0, 8.0)
AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, -2.0, 0, 40.0], [0, 0, 8.0, -12.0], [0, 0, 0, 1]])
SAME_GRID = ["--size", f"{SHAPE[0]},{SHAPE[1]}", "--val", "0"]  # no in-plane resampling: prepared pixel = raw voxel


def disc_label(shift: int = 0) -> np.ndarray:
    """Class 1 (raw 1): a disc on slices 1-3, absent on slice 0."""
    i, j = np.mgrid[: SHAPE[0], : SHAPE[1]]
    plane = (np.hypot(i - 10 - shift, j - 12) < 5).astype(np.uint8)
    label = np.repeat(plane[:, :, None], SHAPE[2], axis=2)
    label[:, :, 0] = 0
    return label


def save(path: Path, array: np.ndarray, affine=AFFINE) -> Path:
    return save_plain_nifti(path, array, affine)


def custom_data(root: Path, cases=("a", "b"), masks=()) -> Path:
    """Images for ``cases``, full masks for ``masks`` only."""
    for number, name in enumerate(cases):
        label = disc_label(number)
        save(root / "images" / f"{name}.nii.gz", (np.random.default_rng(number).normal(100, 5, SHAPE) + 80 * label).astype(np.int16))
        if name in masks:
            save(root / "labels" / f"{name}.nii.gz", label)
    return root


def run(prepare_cli, root: Path, out: Path, *extra) -> dict:
    code, stdout, stderr = prepare_cli(["custom", "--src", root, "--out", out, "--images", "images/{case}.nii.gz", *extra])
    assert code == 0, stderr
    return json.loads((out / "dataset.json").read_text())


def weak_of(out: Path, entry: dict, name: str = "user") -> np.ndarray:
    return np.asanyarray(nib.load(str(out / entry["weak"][name])).dataobj)


def entries(dataset: dict, volume: str | None = None) -> list[dict]:
    found = [e for s in ("training", "validation", "test") for e in dataset[s]]
    return [e for e in found if volume is None or e["volume"] == volume]


# --- label maps -----------------------------------------------------------------------------------


def test_public_acdc_scribble_convention(tmp_path, prepare_cli, raw_builders):
    """0 background, 1 RV, 2 myocardium, 3 LV, 4 unannotated; patients 1-2 have no full mask."""
    raw = raw_builders.make_acdc(tmp_path / "acdc", patients=3, shape=(24, 28, 4))
    scribbles = {}
    for gt in sorted(raw.rglob("*_gt.nii.gz")):
        label = np.asanyarray(nib.load(str(gt)).dataobj)
        scribble = np.full(label.shape, 4, dtype=np.uint8)
        scribble[12, :, :] = np.where(label[12, :, :] > 0, label[12, :, :], 4)  # one row through the rings
        scribble[1, 2:20, 1:] = 0  # a background stroke near the border
        path = gt.with_name(gt.name.replace("_gt", "_scribble"))
        raw_builders.save_acdc_nifti(path, scribble)
        scribbles[gt.name.replace("_gt.nii.gz", "")] = (scribble, label)
        if "patient003" not in gt.name:
            gt.unlink()  # no full mask for patients 1 and 2
    out = tmp_path / "prepared"
    code, stdout, stderr = prepare_cli(
        ["acdc", "--src", raw, "--out", out, "--targets", "1,2,3", "--size", "24,28", "--val-patients", "patient003",
         "--weak-labels", "{folder}/{case}_scribble.nii.gz", "--weak-values", "0=background,1=1,2=2,3=3,4=none"])  # fmt: skip
    assert code == 0, stderr
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["weak_primary"] == "user" and dataset["provenance"]["weak"]["user"] == "user file"
    for entry in entries(dataset):
        scribble, label = scribbles[entry["volume"]]
        expected = np.where(scribble == 4, 255, scribble)[:, :, entry["slice"]]
        assert np.array_equal(weak_of(out, entry), expected)
        if entry["patient"] == "patient003":
            assert entry["label"] and "erosion" in entry["weak"]  # the masked patient: validation, generated strategies
        else:
            assert "label" not in entry and "size_px" not in entry and "volume_size_px" not in entry
            assert set(entry["weak"]) == {"user"}
    assert [e["patient"] for e in dataset["validation"]][0] == "patient003"
    assert all("label" not in v for v in dataset["volumes"] if v["patient"] != "patient003")
    kept = json.loads((out / "prep.json").read_text())["user_annotations"]["classes"]
    assert all(c["pixels"] == c["pixels_kept"] and c["strokes"] == c["strokes_kept"] for c in kept.values())
    assert "user annotations 'user' on 6 volumes" in stdout


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_snap_convention_in_nrrd_and_metaimage(tmp_path, prepare_cli, suffix):
    """ITK-SNAP: 0 unpainted, here 1 = background and 2 = the target (raw 1); NRRD/MetaImage files; no --labels at all."""
    root = tmp_path / "nrrd"
    root.mkdir()
    painted = {}
    for number, name in enumerate(("a", "b")):
        label = disc_label(number).transpose(2, 1, 0)  # SimpleITK order (k, j, i)
        paint = np.zeros_like(label)
        paint[:, 12, 8:13] = np.where(label[:, 12, 8:13] > 0, 2, 0)
        paint[:, 2, 2:6] = 1
        for file, array in ((f"images/{name}.nrrd", (label * 80 + 100).astype(np.int16)), (f"paint/{name}.seg{suffix}", paint)):
            image = sitk.GetImageFromArray(array)
            image.SetSpacing(SPACING)
            image.SetOrigin((-30.0, -40.0, -12.0))
            (root / file).parent.mkdir(exist_ok=True)
            sitk.WriteImage(image, str(root / file))
        painted[name] = paint.transpose(2, 1, 0)
    out = tmp_path / "prepared"
    code, _, stderr = prepare_cli(["custom", "--src", root, "--out", out, "--images", "images/{case}.nrrd",
                                   "--weak-labels", "paint/{case}.seg" + suffix, "--weak-values", "0=none,1=background,2=1",
                                   *SAME_GRID])  # fmt: skip
    assert code == 0, stderr
    dataset = json.loads((out / "dataset.json").read_text())
    for entry in entries(dataset):
        expected = np.select([painted[entry["volume"]] == 2, painted[entry["volume"]] == 1], [1, 0], 255)
        assert np.array_equal(weak_of(out, entry), expected[:, :, entry["slice"]])
        assert "label" not in entry


def test_value_maps_and_names():
    vocab = vocabulary(((3,), (2,), (1,)), {0, 1, 2, 3}, ("left ventricle", "myocardium", "right ventricle"),
                       ("lv", "myo", "rv"), "bg=background,cavity=3")
    acdc = value_lookup(parse_value_map("0=background,1=1,2=2,3=3,4=none"), vocab)
    assert acdc == {0: 0, 1: 3, 2: 2, 3: 1, 4: 255}  # raw 3 (LV) is class 1 with --targets 3,2,1
    assert map_values(np.array([0, 0]), None, vocab, "f").tolist() == [255, 255]  # default: 0 = none
    with pytest.raises(InputError, match=r"annotation values \{4\} not declared"):
        map_values(np.array([0, 4]), None, vocab, "f")  # 4 is no raw label value of this dataset
    assert map_values(np.array([0, 3, 1]), None, vocab, "f").tolist() == [255, 1, 3]
    assert [vocab.name_to_class(n) for n in ("LV-1", "MYO-12", "rv", "BG-3", "cavity", "3", "background")] == [1, 2, 3, 0, 1, 1, 0]
    assert vocab.name_to_class("F-1") is None  # Slicer's default name says nothing about the class


# --- points -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["LPS", "RAS"])
def test_slicer_markups_in_lps_and_ras(tmp_path, prepare_cli, space):
    root = custom_data(tmp_path / "raw")
    voxel = np.array([10, 12, 2])
    ras = (AFFINE @ np.append(voxel, 1.0))[:3]
    position = [float(v) for v in (ras * [-1, -1, 1] if space == "LPS" else ras)]
    (root / "clicks").mkdir()
    (root / "clicks" / "a.mrk.json").write_text(markups_text([("target-1", position), ("BG-1", [position[0], position[1], position[2] - 8.0])], space))
    out = tmp_path / "prepared"
    dataset = run(prepare_cli, root, out, "--markups", "clicks/{case}.mrk.json", "--annotation-classes", "target=1",
                  "--point-radius", "2.0", *SAME_GRID)
    by_slice = {e["slice"]: e for e in entries(dataset, "a")}
    weak = weak_of(out, by_slice[2])
    assert weak[10, 12] == 1
    # 2 mm radius (inclusive) on 1.5 x 2.0 mm pixels: one pixel either way along i and j, no diagonal (2.5 mm).
    assert set(map(tuple, np.argwhere(weak == 1))) == {(9, 12), (10, 12), (11, 12), (10, 11), (10, 13)}
    assert weak_of(out, by_slice[1])[10, 12] == 0  # the background click, one slice (8 mm) lower
    assert "user" not in entries(dataset, "b")[0]["weak"]  # b has no annotation: a plain image
    assert by_slice[2]["tag"] == [1] and by_slice[2]["bounds"]["tags"] == [[1, SHAPE[0] * SHAPE[1]]]
    assert "tag" not in by_slice[1]  # a background click does not say the target is absent


def test_csv_points_world_and_voxel(tmp_path, prepare_cli):
    root = custom_data(tmp_path / "raw")
    ras = (AFFINE @ np.array([4.0, 5.0, 3.0, 1.0]))[:3]
    lps = ras * [-1, -1, 1]
    (root / "world.csv").write_text(f"case,class,x,y,z\na,1,{lps[0]},{lps[1]},{lps[2]}\n")
    (root / "voxel.csv").write_text("case,class,i,j,k\nb,background,6,7,1\nb,1,10.4,12.2,2.3\n")
    out = tmp_path / "world"
    dataset = run(prepare_cli, root, out, "--points", root / "world.csv", "--points-space", "LPS", "--point-radius", "0", *SAME_GRID)
    weak = weak_of(out, [e for e in entries(dataset, "a") if e["slice"] == 3][0])
    assert np.argwhere(weak != 255).tolist() == [[4, 5]] and weak[4, 5] == 1
    out = tmp_path / "voxel"
    dataset = run(prepare_cli, root, out, "--points", root / "voxel.csv", "--point-radius", "0", *SAME_GRID)
    by_slice = {e["slice"]: weak_of(out, e) for e in entries(dataset, "b")}
    assert by_slice[1][6, 7] == 0 and by_slice[2][10, 12] == 1  # voxel indices round to the nearest voxel
    assert (by_slice[0] == 255).all() and (by_slice[3] == 255).all()


# --- boxes, tags, size knowledge ------------------------------------------------------------------


def test_boxes_annotate_background_outside_and_presence(tmp_path, prepare_cli):
    root = custom_data(tmp_path / "raw")
    (root / "boxes.csv").write_text("case,class,i_min,i_max,j_min,j_max,k_min,k_max\na,1,5,15,7,17,2,3\n")
    out = tmp_path / "prepared"
    dataset = run(prepare_cli, root, out, "--boxes", root / "boxes.csv", *SAME_GRID)
    by_slice = {e["slice"]: e for e in entries(dataset, "a")}
    weak = weak_of(out, by_slice[2])
    assert (weak[5:16, 7:18] == 255).all() and (weak[:5] == 0).all() and (weak[:, 18:] == 0).all()
    assert (weak_of(out, by_slice[1]) == 255).all()  # a slice no box crosses is left alone
    assert by_slice[3]["tag"] == [1] and "tag" not in by_slice[1]


def test_tags_state_presence_and_absence(tmp_path, prepare_cli):
    root = custom_data(tmp_path / "raw")
    scribble = np.zeros(SHAPE, dtype=np.uint8)
    scribble[10, 10:14, 2] = 1
    save(root / "scribbles" / "a.nii.gz", scribble)
    (root / "tags.csv").write_text("case,class,present,slice\na,1,absent,0\na,1,present,1\nb,1,no,\n")
    out = tmp_path / "prepared"
    dataset = run(prepare_cli, root, out, "--weak-labels", "scribbles/{case}.nii.gz", "--tags", root / "tags.csv", *SAME_GRID)
    tags = {(e["volume"], e["slice"]): e.get("tag") for e in entries(dataset)}
    assert tags[("a", 0)] == [0] and tags[("a", 1)] == [1] and tags[("a", 2)] == [1]  # tagged, tagged, painted
    assert tags[("a", 3)] is None  # nothing said: unknown, never guessed absent
    assert all(tags[("b", k)] == [0] for k in range(SHAPE[2]))  # absent from the whole case
    a3 = [e for e in entries(dataset, "a") if e["slice"] == 3][0]
    assert "tags" not in a3["bounds"] and "common" not in a3["bounds"]  # nothing derivable: no rule, never (0, 0)
    assert dataset["provenance"]["bounds"]["tags"] == "annotations + tags file"


def test_typed_mm2_bounds_become_pixels_per_slice(tmp_path, prepare_cli):
    root = custom_data(tmp_path / "raw")
    (root / "tags.csv").write_text("case,class,present,slice\na,1,1,2\na,1,0,0\n")
    out = tmp_path / "prepared"
    dataset = run(prepare_cli, root, out, "--tags", root / "tags.csv", "--common-bounds-mm2", "30,300",
                  "--size", "10,12", "--val", "0")
    by_slice = {e["slice"]: e for e in entries(dataset, "a")}
    pixel_mm2 = by_slice[2]["spacing"][0] * by_slice[2]["spacing"][1]
    assert pixel_mm2 == pytest.approx(3.0 * 4.0)  # 1.5 x 2.0 mm voxels, half as many pixels each way
    assert by_slice[2]["bounds"]["common"] == [pytest.approx([30 / 12, 300 / 12])]
    assert by_slice[0]["bounds"]["common"] == [[0, 0]]  # stated absent
    assert by_slice[1]["bounds"]["common"] == [pytest.approx([0, 300 / 12])]  # unknown: 0 or within the range
    assert dataset["provenance"]["bounds"]["common"] == "typed (mm2)"


def test_size_estimates_give_individual_and_volume_bounds(tmp_path, prepare_cli):
    root = custom_data(tmp_path / "raw")
    scribble = np.zeros(SHAPE, dtype=np.uint8)
    scribble[10, 10:14, 1:] = 1
    save(root / "scribbles" / "a.nii.gz", scribble)
    (root / "sizes.csv").write_text("case,class,size,unit,slice,tolerance\na,1,240,mm2,2,0.2\na,1,0,px,0,\na,1,3.6,ml,,\n")
    out = tmp_path / "prepared"
    dataset = run(prepare_cli, root, out, "--weak-labels", "scribbles/{case}.nii.gz", "--size-estimates", root / "sizes.csv",
                  *SAME_GRID)
    by_slice = {e["slice"]: e for e in entries(dataset, "a")}
    assert by_slice[2]["bounds"]["individual"] == [pytest.approx([0.8 * 80, 1.2 * 80])]  # 240 mm2 / 3 mm2
    assert by_slice[0]["bounds"]["individual"] == [[0, 0]] and by_slice[0]["tag"] == [0]  # an estimate of 0: absent
    volume_px = 3600 / (1.5 * 2.0 * 8.0)
    assert by_slice[1]["bounds"]["volume3d"] == [pytest.approx([0.9 * volume_px, 1.1 * volume_px])]
    assert "individual" not in by_slice[1]["bounds"]  # not estimated there: no rule (never a zero bound)
    assert dataset["provenance"]["bounds"]["individual"] == "estimated"


def test_masked_cases_can_be_scored_and_others_train(tmp_path, prepare_cli):
    root = custom_data(tmp_path / "raw", cases=("a", "b", "c", "d"), masks=("c", "d"))
    for name in "abcd":
        save(root / "scribbles" / f"{name}.nii.gz", (disc_label() * (np.arange(SHAPE[1]) == 12)[None, :, None]).astype(np.uint8))
    out = tmp_path / "prepared"
    dataset = run(prepare_cli, root, out, "--labels", "labels/{case}.nii.gz", "--weak-labels", "scribbles/{case}.nii.gz",
                  "--size", "16", "--val", "1", "--test", "1")
    assert {e["patient"] for e in dataset["validation"] + dataset["test"]} == {"c", "d"}
    assert all("label" in e for e in dataset["validation"] + dataset["test"])
    assert all("label" not in e for e in dataset["training"])
    assert "common" not in dataset["training"][0]["bounds"]  # no training patient has a mask: no reference
    # Provenance describes the training slices: the masks of validation and test give them nothing.
    assert dataset["provenance"]["bounds"] == {"tags": "annotations"}
    assert dataset["provenance"]["weak"]["user"] == "user file" and dataset["provenance"]["weak"]["erosion"] == "generated"


def test_a_label_map_contradicting_the_boxes_is_refused(tmp_path, prepare_cli):
    root = custom_data(tmp_path / "raw")
    scribble = np.zeros(SHAPE, dtype=np.uint8)
    scribble[2, 2, 2] = 1  # the target painted where the box protocol says background
    save(root / "scribbles" / "a.nii.gz", scribble)
    (root / "boxes.csv").write_text("case,class,i_min,i_max,j_min,j_max,k_min,k_max\na,1,5,15,7,17,2,2\n")
    code, _, stderr = prepare_cli(["custom", "--src", root, "--out", tmp_path / "out", "--images", "images/{case}.nii.gz",
                                   "--weak-labels", "scribbles/{case}.nii.gz", "--boxes", root / "boxes.csv", *SAME_GRID])
    assert code == 2 and "boxes.csv: two classes on the same voxel (2, 2, 2)" in stderr
    assert not (tmp_path / "out").exists()


# --- the thin-stroke rule ---------------------------------------------------------------------------


def test_one_pixel_strokes_survive_a_four_times_smaller_grid():
    weak = np.full((96, 96, 1), 255, dtype=np.uint8)
    weak[10:90, 41, 0] = 1  # a vertical 1-pixel line: nearest neighbour would keep it only if column 41 is sampled
    weak[30, 5:60, 0] = 0  # a background stroke crossing it
    weak[70, 70, 0] = 2  # a single clicked pixel
    plan = plan_inplane((96, 96), (1.0, 1.0), (24, 24))
    prepared, conflicts = resample_annotation(weak, plan, (0, 1), priority=(1, 2, 0))
    stats = survival(weak, prepared, plan, (0, 1), 2, n_classes=2)
    assert all(stats[c]["strokes_kept"] == stats[c]["strokes"] for c in (0, 1, 2))
    assert stats[2]["pixels_kept"] == 1 and prepared[17, 17, 0] == 2
    assert prepared[7, 10, 0] == 1 and conflicts[7, 10, 0]  # the crossing: foreground has priority over background
    assert stats[0]["pixels_kept"] == stats[0]["pixels"] - 4  # the 4 background pixels sharing that prepared pixel
    nearest = weak[::4, ::4]  # what plain nearest-neighbour sampling of this grid sees
    assert not (nearest == 1).any()


def test_priority_decides_and_crop_is_counted():
    weak = np.full((8, 8, 1), 255, dtype=np.uint8)
    weak[2, 2, 0], weak[3, 3, 0] = 1, 2  # both under prepared pixel (1, 1) of a 4 x 4 grid
    plan = plan_inplane((8, 8), (1.0, 1.0), (4, 4))
    assert resample_annotation(weak, plan, (0, 1), (2, 1, 0))[0][1, 1, 0] == 2
    assert resample_annotation(weak, plan, (0, 1), (1, 2, 0))[0][1, 1, 0] == 1
    wide = np.full((8, 16, 1), 255, dtype=np.uint8)
    wide[4, 0, 0] = 1  # at the left edge, cropped by pad-crop to a square at the same pixel size
    plan = plan_inplane((8, 16), (1.0, 1.0), (8, 8), mode="pad-crop", target_spacing=1.0)
    prepared, _ = resample_annotation(wide, plan, (0, 1), (1, 0))
    assert survival(wide, prepared, plan, (0, 1), 2, 1)[1] == {"pixels": 1, "pixels_kept": 0, "strokes": 1, "strokes_kept": 0}


def test_prepared_summary_reports_survival(tmp_path, prepare_cli):
    root = custom_data(tmp_path / "raw")
    scribble = np.zeros(SHAPE, dtype=np.uint8)
    scribble[7, 3:20, 1:] = 1  # 1-pixel rows, on a grid 2.5 and 3 times smaller
    scribble[13, 3:20, 1:] = 1
    save(root / "scribbles" / "a.nii.gz", scribble)
    code, stdout, stderr = prepare_cli(["custom", "--src", root, "--out", tmp_path / "out", "--images", "images/{case}.nii.gz",
                                        "--weak-labels", "scribbles/{case}.nii.gz", "--size", "8", "--val", "0"])
    assert code == 0, stderr
    assert "class 1 (label 1): 102 of 102 annotated pixels, 6 of 6 strokes" in stdout
    summary = json.loads((tmp_path / "out" / "prep.json").read_text())["user_annotations"]
    assert summary["classes"]["1"]["strokes_kept"] == 6


# --- the annotator-like phantom ---------------------------------------------------------------------


def test_annotator_phantom_trains_without_training_masks(tmp_path, prepare_cli):
    from pipelines.testkit.phantoms import generate

    raw = generate("acdc", tmp_path / "raw", cases=4, small=True, annotator=2)
    assert not list(raw.glob("training/patient00[12]/*_gt.nii.gz"))  # no full mask to read for patients 1-2
    assert len(list(raw.glob("training/patient00[34]/*_gt.nii.gz"))) == 4
    markups = json.loads(next(raw.glob("training/patient001/*.mrk.json")).read_text())
    assert markups["markups"][0]["coordinateSystem"] == "LPS" and markups["@schema"].endswith("v1.0.3.json#")
    out = tmp_path / "prepared"
    code, stdout, stderr = prepare_cli(
        ["acdc", "--src", raw, "--out", out, "--targets", "1,2,3", "--size", "64", "--val", "1",
         "--weak-labels", "{folder}/{case}_scribble.nii.gz", "--weak-values", "0=background,1=1,2=2,3=3,4=none",
         "--markups", "{folder}/{case}.mrk.json", "--tags", raw / "tags.csv", "--size-estimates", raw / "size_estimates.csv"])  # fmt: skip
    assert code == 0, stderr
    dataset = json.loads((out / "dataset.json").read_text())
    weak_only = [e for e in dataset["training"] if e["patient"] in ("patient001", "patient002")]
    assert weak_only and all("label" not in e and "tag" in e for e in weak_only)  # tags.csv covers every slice
    assert {e["patient"] for e in dataset["validation"]} <= {"patient003", "patient004"}
    assert any("individual" in e["bounds"] for e in weak_only)
    annotated = np.concatenate([weak_of(out, e).ravel() for e in weak_only])
    assert {0, 1, 2, 3} <= set(np.unique(annotated).tolist())  # background and the three structures
    assert json.loads((out / "prep.json").read_text())["user_annotations"]["points"] > 0
