"""Reading dataset.json: paths, strategies and rules, volume ids and spacing, full patients."""

import json
from pathlib import Path

import pytest

from wss_monai.data import DatasetError, build_datalist, choose_full_patients, class_names, full_patients, volume_ids, volume_spacing_3d


def test_class_names_come_from_the_labels_mapping(prepared_acdc, manifest):
    assert class_names(prepared_acdc) == {int(k): v for k, v in manifest["labels"].items()}
    assert class_names(prepared_acdc)[0] == "background"


def test_volume_ids_are_the_sorted_volume_names_of_the_whole_dataset(prepared_acdc, manifest):
    ids = volume_ids(prepared_acdc)
    names = sorted({e["volume"] for split in ("training", "validation", "test") for e in manifest[split]})
    assert ids == {name: i for i, name in enumerate(names)}


def test_volume_spacing_3d_is_row_column_slice_distance(prepared_acdc, manifest):
    spacing = volume_spacing_3d(prepared_acdc)
    first = manifest["training"][0]
    row, col, between = spacing[first["volume"]]
    assert (row, col) == pytest.approx(first["spacing"])
    volume = next(v for v in manifest["volumes"] if v["volume"] == first["volume"])
    assert between == pytest.approx(volume["spacing"][volume["slice_axis"]])


def test_datalist_resolves_paths_and_drops_the_label_path_of_weak_training_samples(prepared_acdc):
    samples = build_datalist(prepared_acdc, "training", weak="random_disc", bounds="common")
    assert all(Path(s["image"]).is_file() and "random_disc" in s["weak"] for s in samples)
    assert all(s["label"] is None and not s["has_label"] and not s["full"] for s in samples)
    assert [(s["volume"], s["slice"]) for s in samples] == sorted((s["volume"], s["slice"]) for s in samples)
    validation = build_datalist(prepared_acdc, "validation", weak="erosion")
    assert all(Path(s["label"]).is_file() and s["has_label"] for s in validation)


def test_weak_none_and_primary(prepared_acdc, manifest):
    assert all(s["weak"] is None for s in build_datalist(prepared_acdc, "training", weak=None))
    primary = build_datalist(prepared_acdc, "training", weak="primary")
    assert manifest["weak_primary"] in primary[0]["weak"]


def test_unknown_strategy_or_rule_lists_what_the_dataset_has_and_names_the_file(prepared_acdc):
    with pytest.raises(DatasetError, match=r"dataset\.json.*'scribble'.*erosion, random_disc"):
        build_datalist(prepared_acdc, "training", weak="scribble")
    with pytest.raises(DatasetError, match=r"dataset\.json.*'tight'.*tags, upper, common, individual, volume3d"):
        build_datalist(prepared_acdc, "training", bounds="tight")
    with pytest.raises(DatasetError, match="split must be one of"):
        build_datalist(prepared_acdc, "train")
    with pytest.raises(DatasetError, match="no dataset.json"):
        build_datalist(prepared_acdc / "slices", "training")


def test_bounds_of_the_wrong_class_count_are_rejected(copy_prepared):
    root = copy_prepared()
    manifest = json.loads((root / "dataset.json").read_text())
    manifest["training"][0]["bounds"]["common"] = [[1, 2], [3, 4]]
    (root / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="lists 2 classes, 'labels' has 1"):
        build_datalist(root, "training", bounds="common")


def test_full_patient_choice_is_seeded_sorted_and_nested():
    patients = [f"patient{i:03d}" for i in range(20, 0, -1)]
    five, ten = choose_full_patients(patients, 5, seed=3), choose_full_patients(patients, 10, seed=3)
    assert five == sorted(five) and set(five) <= set(ten)
    assert five == choose_full_patients(reversed(patients), 5, seed=3)  # order of the input does not matter
    assert five != choose_full_patients(patients, 5, seed=4)
    with pytest.raises(ValueError, match="only 20 patients"):
        choose_full_patients(patients, 21)


def test_hybrid_flags_and_labels_only_the_chosen_patients(prepared_acdc):
    chosen = full_patients(prepared_acdc, 1, seed=0)
    samples = build_datalist(prepared_acdc, "training", full_patients=1, seed=0)
    for s in samples:
        assert s["full"] == s["has_label"] == (s["patient"] in chosen)
        assert (s["label"] is not None) == (s["patient"] in chosen)
    only = build_datalist(prepared_acdc, "training", full_patients=1, full=True, seed=0)
    assert {s["patient"] for s in only} == set(chosen) and all(s["full"] and s["label"] for s in only)
    everyone = build_datalist(prepared_acdc, "training", weak=None, full=True)
    assert len(everyone) == len(samples) and all(s["full"] and s["has_label"] for s in everyone)
