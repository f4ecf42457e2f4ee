"""End to end on the phantoms of the three real layouts: the prepared-dataset contract holds."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_prep.io import read_volume
from data_prep.manifest import BOUNDS_COLUMNS
from data_prep.slicing import restore_volume

SIZE = ["--size", "64"]  # the small phantoms are ~64 px in-plane: no detail lost to downsampling
TARGET_RAW = {"acdc": 3, "promise12": 1, "vertebral": 1}
SLICE_AXIS = {"acdc": 2, "promise12": 2, "vertebral": 0}
ENTRY_KEYS = {"image", "label", "weak", "patient", "volume", "slice", "spacing", "size_px", "tag", "volume_size_px", "bounds"}


@pytest.fixture(scope="module")
def prepared(request, tmp_path_factory):
    """Prepare each phantom once per module: {dataset: (raw, out)}."""
    runs = {}

    def get(dataset: str, *extra: str) -> tuple[Path, Path]:
        key = (dataset, extra)
        if key not in runs:
            from data_prep.cli import main

            raw = request.getfixturevalue(f"{dataset}_raw")
            out = tmp_path_factory.mktemp(f"{dataset}_prepared") / "out"
            assert main([dataset, "--src", str(raw), "--out", str(out), *SIZE, *extra]) == 0
            runs[key] = (raw, out)
        return runs[key]

    return get


def load(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def all_entries(dataset: dict) -> list[dict]:
    return dataset["training"] + dataset["validation"] + dataset["test"]


def bounds_rows(out: Path) -> tuple[list[str], list[dict]]:
    with (out / "bounds.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


@pytest.mark.parametrize("name", ["acdc", "promise12", "vertebral"])
def test_contract(prepared, name):
    raw, out = prepared(name)
    dataset = json.loads((out / "dataset.json").read_text())
    assert {"name", "labels", "training", "validation", "test"} <= set(dataset)
    assert dataset["labels"]["0"] == "background" and list(dataset["labels"]) == ["0", "1"]
    entries = all_entries(dataset)
    assert entries and all(ENTRY_KEYS <= set(e) for e in entries)
    for entry in entries[:: max(1, len(entries) // 12)]:
        image = nib.load(str(out / entry["image"]))
        label = nib.load(str(out / entry["label"]))
        assert image.get_data_dtype() == np.float32 and image.shape == (64, 64)
        assert label.get_data_dtype() == np.uint8 and label.shape == (64, 64)
        assert image.header.get_zooms() == pytest.approx(entry["spacing"], rel=1e-5)
        assert np.allclose(image.affine, label.affine)
        assert set(entry["weak"]) == set(dataset["weak_strategies"])
        for path in entry["weak"].values():
            assert nib.load(str(out / path)).get_data_dtype() == np.uint8
        assert set(entry["bounds"]) == {"tags", "upper", "common", "individual", "volume3d"}
    for volume in dataset["volumes"]:
        assert (out / volume["image"]).exists() and (out / volume["label"]).exists()
        assert volume["slice_axis"] == SLICE_AXIS[name]
    columns, rows = bounds_rows(out)
    assert columns == list(BOUNDS_COLUMNS)
    assert len(rows) == len(entries)  # one constrained class
    prep = json.loads((out / "prep.json").read_text())
    assert prep["seed"] == 0 and prep["versions"]["nibabel"] == nib.__version__
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"prep.json"}
    assert set(prep["checksums"]) == written
    for relpath in sorted(written)[:: max(1, len(written) // 20)]:
        assert hashlib.sha256((out / relpath).read_bytes()).hexdigest() == prep["checksums"][relpath]


@pytest.mark.parametrize("name", ["acdc", "vertebral"])
def test_weak_labels_lie_inside_their_object(prepared, name):
    _, out = prepared(name)
    dataset = json.loads((out / "dataset.json").read_text())
    seeded = 0
    for entry in all_entries(dataset):
        label = load(out / entry["label"])
        for strategy, path in entry["weak"].items():
            weak = load(out / path)
            annotated = weak != 255
            assert np.array_equal(weak[annotated], label[annotated]), (strategy, path)
            if strategy != "box":
                assert np.all(weak[label == 0] == 255)  # foreground only: background all unannotated
                assert annotated.any() == bool(entry["tag"][0])  # a seed on exactly the slices with the target
                seeded += int(annotated.any())
    assert seeded > 0


def test_bounds_are_the_papers(prepared):
    _, out = prepared("acdc")
    _, rows = bounds_rows(out)
    prep = json.loads((out / "prep.json").read_text())
    common_lo, common_hi = prep["common_bounds"]["1"]
    reference_sizes = [int(r["size_px"]) for r in rows if r["patient"] == prep["reference_patient"] and int(r["size_px"])]
    assert common_lo == 0.9 * min(reference_sizes) and common_hi == 1.1 * max(reference_sizes)
    volume_sizes: dict[str, int] = {}
    for row in rows:
        size = int(row["size_px"])
        volume_sizes[row["volume"]] = volume_sizes.get(row["volume"], 0) + size
        present = size > 0
        assert int(row["tag"]) == int(present)
        assert (float(row["tags_lo"]), float(row["tags_hi"])) == ((1, 64 * 64) if present else (0, 0))
        assert float(row["individual_lo"]) == 0.9 * size and float(row["individual_hi"]) == 1.1 * size
        assert (float(row["common_lo"]), float(row["common_hi"])) == ((common_lo, common_hi) if present else (0, 0))
        assert (float(row["upper_lo"]), float(row["upper_hi"])) == ((1, common_hi) if present else (0, 0))
        assert int(row["weak_px"]) <= size
    assert all(volume_sizes[r["volume"]] == int(r["volume_size_px"]) for r in rows)


def test_entries_carry_the_same_bounds_as_the_table(prepared):
    _, out = prepared("vertebral")
    dataset = json.loads((out / "dataset.json").read_text())
    _, rows = bounds_rows(out)
    by_slice = {(r["volume"], int(r["slice"])): r for r in rows}
    for entry in all_entries(dataset):
        row = by_slice[(entry["volume"], entry["slice"])]
        assert entry["size_px"][0] == int(row["size_px"])
        assert entry["bounds"]["individual"][0] == [float(row["individual_lo"]), float(row["individual_hi"])]
        assert entry["bounds"]["volume3d"][0] == pytest.approx([0.9 * entry["volume_size_px"][0], 1.1 * entry["volume_size_px"][0]])


@pytest.mark.parametrize("name", ["acdc", "promise12"])
def test_no_patient_in_two_splits(prepared, name):
    _, out = prepared(name)
    dataset = json.loads((out / "dataset.json").read_text())
    seen: dict[str, set] = {}
    for split in ("training", "validation", "test"):
        for entry in dataset[split]:
            seen.setdefault(entry["patient"], set()).add(split)
    assert all(len(splits) == 1 for splits in seen.values())
    assert len(dataset["validation"]) > 0 and len(dataset["training"]) > 0


def test_same_seed_gives_byte_identical_output(prepared, acdc_raw, tmp_path):
    """Another run, with 2 workers this time, writes exactly the same bytes; another seed does not."""
    from data_prep.cli import main

    _, first = prepared("acdc")
    second = tmp_path / "again"
    assert main(["acdc", "--src", str(acdc_raw), "--out", str(second), *SIZE, "--workers", "2"]) == 0
    files = sorted(p.relative_to(first).as_posix() for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second).as_posix() for p in second.rglob("*") if p.is_file())
    for relpath in files:
        assert (first / relpath).read_bytes() == (second / relpath).read_bytes(), relpath
    third = tmp_path / "other_seed"
    assert main(["acdc", "--src", str(acdc_raw), "--out", str(third), *SIZE, "--seed", "1", "--weak", "random_disc"]) == 0
    disc_files = sorted((first / "slices" / "weak" / "random_disc").iterdir())
    assert any(p.read_bytes() != (third / "slices" / "weak" / "random_disc" / p.name).read_bytes() for p in disc_files)


@pytest.mark.parametrize("name", ["acdc", "promise12", "vertebral"])
def test_slices_restored_to_the_raw_grid_match_the_raw_labels(prepared, name):
    """3D Dice >= 0.99 between the raw target and the prepared slices stacked and resampled back."""
    _, out = prepared(name)
    dataset = json.loads((out / "dataset.json").read_text())
    entries = all_entries(dataset)
    raw_root = prepared(name)[0]
    for volume in dataset["volumes"]:
        slices = sorted((e for e in entries if e["volume"] == volume["volume"]), key=lambda e: e["slice"])
        restored = restore_volume([load(out / e["label"]) for e in slices], volume)
        raw = read_volume(raw_root / volume["raw_label"], "label").array == TARGET_RAW[name]
        assert restored.shape == raw.shape
        dice = 2 * np.sum((restored == 1) & raw) / (np.sum(restored == 1) + np.sum(raw))
        assert dice >= 0.99, (volume["volume"], dice)


def test_acdc_groups_come_from_info_cfg(acdc_raw, tmp_path):
    """The pathology group read from each Info.cfg is recorded and used as the split's stratum
    (the stratification itself is tested on 100 patients in test_prepare_steps)."""
    from data_prep.cli import main

    out = tmp_path / "out"
    assert main(["acdc", "--src", str(acdc_raw), "--out", str(out), "--size", "16", "--weak", "erosion", "--val", "0.4"]) == 0
    prep = json.loads((out / "prep.json").read_text())
    assert sorted(info["group"] for info in prep["patients"].values()) == ["DCM", "HCM", "MINF", "NOR", "RV"]
    assert prep["counts"]["patients"] == {"training": 3, "validation": 2, "test": 0}


@pytest.fixture(scope="module")
def acdc_realistic(tmp_path_factory):
    """Two ACDC-sized phantom patients (real in-plane size and spacing), prepared at 256 x 256."""
    from data_prep.cli import main
    from pipelines.testkit.phantoms import generate

    root = tmp_path_factory.mktemp("acdc_realistic")
    raw = generate("acdc", root / "raw", cases=2, seed=0)
    out = root / "out"
    assert main(["acdc", "--src", str(raw), "--out", str(out), "--val", "0", "--weak", "erosion,random_disc,scribble"]) == 0
    return out


def test_annotated_fractions_match_the_papers_at_real_size(acdc_realistic):
    """Erosion annotates about 0.1% of the pixels (the papers' figure) and random discs less."""
    fractions = json.loads((acdc_realistic / "prep.json").read_text())["annotated_fraction"]
    assert 0.0003 <= fractions["erosion"] <= 0.003
    assert 0 < fractions["random_disc"] < fractions["erosion"]
    assert 0 < fractions["scribble"] < fractions["erosion"]


def test_annotated_fractions_on_tiny_slices(prepared):
    """On 64 x 64 slices of small objects the comparable property: every seed is a small part of its object."""
    _, out = prepared("acdc")
    _, rows = bounds_rows(out)
    present = [r for r in rows if int(r["size_px"]) > 0]
    assert all(0 < int(r["weak_px"]) <= int(r["size_px"]) for r in present)  # erosion: non-empty, inside
    assert sum(int(r["weak_px"]) for r in present) < 0.5 * sum(int(r["size_px"]) for r in present)


def test_pad_crop_and_background_scribble(acdc_raw, tmp_path):
    """Aspect-preserving resize still round-trips in 3D; background scribbles lie in the background."""
    from data_prep.cli import main

    out = tmp_path / "out"
    argv = ["acdc", "--src", str(acdc_raw), "--out", str(out), *SIZE, "--resize", "pad-crop",
            "--weak", "scribble", "--background-scribble", "--background-margin", "3"]  # fmt: skip
    assert main(argv) == 0
    dataset = json.loads((out / "dataset.json").read_text())
    entries = all_entries(dataset)
    for volume in dataset["volumes"]:
        plan = volume["plan"]
        assert plan["mode"] == "pad-crop"
        ratio = [plan["scaled"][a] / plan["original"][a] for a in range(2)]
        assert ratio[0] == pytest.approx(ratio[1], rel=0.05)  # the same pixel size on both axes
        slices = sorted((e for e in entries if e["volume"] == volume["volume"]), key=lambda e: e["slice"])
        restored = restore_volume([load(out / e["label"]) for e in slices], volume)
        raw = read_volume(acdc_raw / volume["raw_label"], "label").array == 3
        assert 2 * np.sum((restored == 1) & raw) / (np.sum(restored == 1) + np.sum(raw)) >= 0.99
    background_seen = 0
    for entry in entries:
        label, weak = load(out / entry["label"]), load(out / entry["weak"]["scribble"])
        annotated = weak != 255
        assert np.array_equal(weak[annotated], label[annotated])
        background_seen += int(np.any(weak == 0))
    assert background_seen == len(entries)
