"""Command corpus cases: a training run given bad values, names that would climb out of ``runs/``, and a
prepared dataset from someone else, tampered with."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from pipelines.testkit.command_corpus.corpus import (
    PAYLOAD,
    Command,
    Shared,
    case,
    first_entry,
    rewrite_slice,
    tampered,
    train,
)


# training values (each stops before anything is built)


def _options(extra: list[str], names: str | None, problem: str):
    def build(work: Path, shared: Shared) -> Command:
        return Command(train(shared.prepared, work, *extra), names=names, problem=problem)

    return build


for _key, _value_text, _problem in [
    ("epochs", "1.5", "whole number"),
    ("epochs", "abc", "whole number"),
    ("batch_size", "0", "whole number >= 1"),
    ("learning_rate", "abc", "number > 0"),
    ("learning_rate", "-0.1", "number > 0"),
    ("seed", "abc", "whole number"),
    ("num_workers", "-1", "whole number >= 0"),
    ("betas", "[2.0,0.9]", "two numbers in [0, 1)"),
    ("lr_factor", "1.5", "< 1"),
    ("val_interval", "0", "whole number >= 1"),
    ("amp", "maybe", "true or false"),
]:
    case(f"train_{_key}_{_value_text}", "train", "traceback")(_options([f"--{_key}", _value_text], f"--{_key}", _problem))


for _name, _kind, _extra, _names, _problem in [
    ("unknown_regime", "traceback", ["--regime", "individul"], "individul", "unknown regime"),
    ("misspelt_key", "silent", ["--epoch", "3"], "--epoch", "did you mean --epochs"),
    ("weak_strategy_absent", "traceback", ["--weak", "scribble"], "scribble", "weak labels"),
    ("hybrid_needs_more_patients", "traceback", ["--regime", "hybrid_9"], None, "needs 9 fully annotated"),
]:
    case(f"train_{_name}", "train", _kind)(_options(_extra, _names, _problem))


@case("train_output_dir_is_a_file", "train", "traceback")
def _output_dir_file(work: Path, shared: Shared) -> Command:
    (work / "out").write_text("my notes\n")
    return Command(train(shared.prepared, work), names="out", problem="file")


@case("train_no_dataset_dir", "train", "traceback")
def _no_dataset(work: Path, shared: Shared) -> Command:
    argv = train(shared.prepared, work)
    del argv[argv.index("--dataset_dir"): argv.index("--dataset_dir") + 2]
    return Command(argv, names="dataset_dir", problem="required")


@case("train_dataset_dir_not_prepared", "train", "traceback")
def _not_prepared(work: Path, shared: Shared) -> Command:
    return Command(train(shared.raw, work), names="raw", problem="no dataset.json")


@case("train_unknown_tracking_scheme", "train", "traceback")
def _tracking_scheme(work: Path, shared: Shared) -> Command:
    return Command(train(shared.prepared, work, "--tracking_uri", "foo://bar", mlflow=True), names="foo://bar",
                   problem="tracking")


# names that would place files outside runs/


@case("train_run_name_climbs_out", "train", "outside")
def _run_name_up(work: Path, shared: Shared) -> Command:
    argv = train(shared.prepared, work, "--run_name", "../../../escaped")
    del argv[argv.index("--output_dir"): argv.index("--output_dir") + 2]
    return Command(argv, names="../../../escaped", problem="cannot name a folder", cwd=work / "cwd")


@case("train_experiment_name_climbs_out", "train", "outside")
def _experiment_up(work: Path, shared: Shared) -> Command:
    argv = train(shared.prepared, work, "--experiment_name", "../../escaped")
    del argv[argv.index("--output_dir"): argv.index("--output_dir") + 2]
    return Command(argv, names="../../escaped", problem="experiment", cwd=work / "cwd")


@case("train_run_name_absolute", "train", "outside")
def _run_name_absolute(work: Path, shared: Shared) -> Command:
    argv = train(shared.prepared, work, "--run_name", str(work / "elsewhere"))
    del argv[argv.index("--output_dir"): argv.index("--output_dir") + 2]
    return Command(argv, names="elsewhere", problem="cannot name a folder", cwd=work / "cwd")


# a prepared dataset from someone else, tampered with (the checks run before training)


def _tamper(change: Callable[[Path, dict], None], names: str | None, problem: str):
    def build(work: Path, shared: Shared) -> Command:
        data = tampered(work, shared, change)
        return Command(train(data, work), names=names, problem=problem)

    return build


def _missing_slice(data: Path, manifest: dict) -> None:
    (data / first_entry(manifest)["image"]).unlink()


def _truncated_slice(data: Path, manifest: dict) -> None:
    path = data / first_entry(manifest)["image"]
    path.write_bytes(path.read_bytes()[:60])


def _text_slice(data: Path, manifest: dict) -> None:
    (data / first_entry(manifest)["image"]).write_text("not an image\n")


def _wrong_size(data: Path, manifest: dict) -> None:
    rewrite_slice(data, first_entry(manifest)["image"], lambda a: np.zeros((20, 24) + a.shape[2:], a.dtype))


def _label_value(data: Path, manifest: dict) -> None:
    rewrite_slice(data, first_entry(manifest)["label"], lambda a: np.where(a > 0, 7, a).astype(a.dtype) if a.any()
                  else np.full_like(a, 7))


def _weak_value(data: Path, manifest: dict) -> None:
    entry = first_entry(manifest)
    weak = entry["weak"]["erosion"] if isinstance(entry.get("weak"), dict) else entry["weak"]
    rewrite_slice(data, weak, lambda a: np.full_like(a, 9))


def _nan_voxel(data: Path, manifest: dict) -> None:
    def edit(a):
        a = a.astype(np.float32)
        a.flat[a.size // 2] = np.nan
        return a

    rewrite_slice(data, first_entry(manifest)["image"], edit)


def _inf_validation(data: Path, manifest: dict) -> None:
    def edit(a):
        a = a.astype(np.float32)
        a.flat[3] = np.inf
        return a

    rewrite_slice(data, first_entry(manifest, "validation")["image"], edit)


def _bounds(value_of: Callable[[list], object]):
    def change(data: Path, manifest: dict) -> None:
        for entry in manifest["training"]:
            for rule, pairs in (entry.get("bounds") or {}).items():
                entry["bounds"][rule] = [value_of(pair) for pair in pairs]

    return change


def _training_not_list(data: Path, manifest: dict) -> None:
    manifest["training"] = {"a": 1}


def _entry_absolute(data: Path, manifest: dict) -> None:
    outside = data.parent / "outside.nii.gz"
    shutil.copy(data / first_entry(manifest)["image"], outside)
    first_entry(manifest)["image"] = str(outside)


def _entry_climbs(data: Path, manifest: dict) -> None:
    outside = data.parent / "outside.nii.gz"
    shutil.copy(data / first_entry(manifest)["image"], outside)
    first_entry(manifest)["image"] = "../outside.nii.gz"


def _entry_symlink(data: Path, manifest: dict) -> None:
    path = data / first_entry(manifest)["image"]
    outside = data.parent / "outside.nii.gz"
    shutil.copy(path, outside)
    path.unlink()
    path.symlink_to(outside)


def _volume_name_climbs(data: Path, manifest: dict) -> None:
    old = first_entry(manifest, "test")["volume"]
    for split in ("training", "validation", "test"):
        for entry in manifest.get(split, []):
            if entry.get("volume") == old:
                entry["volume"] = "../../escaped"
    for volume in manifest.get("volumes", []):
        if isinstance(volume, dict) and volume.get("volume") == old:
            volume["volume"] = "../../escaped"


def _labels_gap(data: Path, manifest: dict) -> None:
    manifest["labels"] = {"0": "background", "2": "lv"}


def _slice_3d(data: Path, manifest: dict) -> None:
    rewrite_slice(data, first_entry(manifest)["image"], lambda a: np.stack([a.reshape(a.shape[:2])] * 3, axis=-1))


for _name, _kind, _change, _names, _problem in [
    ("missing_slice", "traceback", _missing_slice, None, "missing"),
    ("truncated_slice", "traceback", _truncated_slice, None, ""),
    ("slice_not_nifti", "traceback", _text_slice, None, ""),
    ("slice_wrong_size", "traceback", _wrong_size, None, "size"),
    ("slice_3d", "traceback", _slice_3d, None, ""),
    ("label_value_out_of_range", "traceback", _label_value, None, "7"),
    ("weak_label_value_out_of_range", "traceback", _weak_value, None, "9"),
    ("nan_voxel_in_training_image", "traceback", _nan_voxel, None, "NaN"),
    ("inf_voxel_in_validation_image", "silent", _inf_validation, None, "inf"),
    ("bounds_lo_above_hi", "traceback", _bounds(lambda b: [b[1] + 10, b[1]]), None, "bound"),
    ("bounds_nan", "traceback", _bounds(lambda b: [float("nan"), b[1]]), None, "bound"),
    ("bounds_text", "traceback", _bounds(lambda b: ["small", "large"]), None, "bound"),
    ("training_not_a_list", "traceback", _training_not_list, "dataset.json", "training"),
    ("entry_path_absolute", "outside", _entry_absolute, None, "outside"),
    ("entry_path_climbs_out", "outside", _entry_climbs, None, "outside"),
    ("entry_symlink_outside", "outside", _entry_symlink, None, "outside"),
    ("volume_name_climbs_out", "outside", _volume_name_climbs, "../../escaped", "volume"),
    ("labels_not_0_to_c", "traceback", _labels_gap, "dataset.json", "labels"),
    ("slice_path_is_a_number", "traceback", lambda d, m: first_entry(m).__setitem__("image", 5), "dataset.json", "image"),
]:
    case(f"dataset_{_name}", "train", _kind)(_tamper(_change, _names, _problem))


@case("dataset_json_not_json", "train", "traceback")
def _dataset_not_json(work: Path, shared: Shared) -> Command:
    data = shared.copy_prepared(work / "prepared")
    (data / "dataset.json").write_text("{ this is not json")
    return Command(train(data, work), names="dataset.json", problem="JSON")


@case("dataset_string_in_config_is_not_run", "train", "evaluated")
def _dataset_payload(work: Path, shared: Shared) -> Command:
    """A dataset name (which becomes the experiment name) that MONAI would run if it reached a config as text."""

    def change(data: Path, manifest: dict) -> None:
        manifest["name"] = PAYLOAD

    data = tampered(work, shared, change)
    return Command(train(data, work), code=0, out=work / "out", absent=[work / "cwd" / "PWNED"], timeout=600)
