"""A tampered prepared dataset is caught before it is used, with a line naming the file, the entry and the problem.

Specification (``wss_monai.data.verify``, ``python -m data_prep verify``, every bundle run):

- the untouched prepared dataset has no problem;
- each kind of damage below is reported as ``<file>: <entry>: <problem>``: slice files missing,
  unreadable, 3D or of another size; label and weak-label values outside the classes (and 255,
  unannotated, for weak labels); NaN/inf voxels in an image of any split; bounds that are not
  finite non-negative numbers with lo <= hi; splits that are not lists of entries with the
  required keys; paths leading outside the folder; volume and patient names that are not a
  single safe file-name component; files changed since preparation (prep.json's checksums);
- ``check_dataset`` raises one ``DatasetError`` with the first problem and the count of the others;
- the bundles stop a run on a tampered dataset with one ``error:`` line and exit code 2, before
  anything is written.

Every test damages a private copy of the session's prepared phantom (``copy_prepared``).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from wss_monai.data.prepared import DatasetError
from wss_monai.data.verify import check_dataset, find_problems

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------------
# helpers: ways to damage a copy


def _manifest(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text())


def _edit_manifest(root: Path, edit) -> None:
    manifest = _manifest(root)
    edit(manifest)
    (root / "dataset.json").write_text(json.dumps(manifest))  # json.dumps writes NaN/Infinity as given


def _entry(root: Path, split: str = "training", number: int = 0) -> dict:
    return _manifest(root)[split][number]


def _save(path: Path, array: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))


def _lines(root: Path, **options) -> list[str]:
    return [problem.line() for problem in find_problems(root, **options).problems]


def _where(split: str, number: int, entry: dict) -> str:
    return f"{split}[{number}] ({entry['volume']} slice {entry['slice']})"


# ----------------------------------------------------------------------------------------------
# the library: find_problems


def test_untouched_dataset_has_no_problem(prepared_acdc):
    found = find_problems(prepared_acdc)
    assert found.ok and found.problems == [] and found.notes == []
    manifest = _manifest(prepared_acdc)
    assert found.slices == sum(len(manifest[s]) for s in ("training", "validation", "test"))
    assert found.volumes == len(manifest["volumes"])


def test_missing_unreadable_and_misshapen_slice_files(copy_prepared):
    root = copy_prepared()
    entries = _manifest(root)["training"]
    missing, truncated, not_nifti, wrong_size, three_d = (entries[i] for i in range(5))
    (root / missing["image"]).unlink()
    data = (root / truncated["image"]).read_bytes()
    (root / truncated["image"]).write_bytes(data[: len(data) // 2])
    (root / not_nifti["weak"]["erosion"]).write_bytes(gzip.compress(b"not a NIfTI file at all"))
    _save(root / wrong_size["image"], np.zeros((30, 64), np.float32))
    _save(root / three_d["label"], np.zeros((64, 64, 4), np.uint8))

    lines = _lines(root, checksums=False)
    assert f"{root / missing['image']}: {_where('training', 0, missing)}: listed but missing" in lines
    assert any(line.startswith(f"{root / truncated['image']}: {_where('training', 1, truncated)}: cannot read it as a NIfTI slice")
               for line in lines)
    assert any(line.startswith(f"{root / not_nifti['weak']['erosion']}: {_where('training', 2, not_nifti)}: cannot read it as a NIfTI slice")
               for line in lines)
    assert f"{root / wrong_size['image']}: {_where('training', 3, wrong_size)}: slice size 30x64, the dataset's is 64x64" in lines
    assert (f"{root / three_d['label']}: {_where('training', 4, three_d)}: a 3D volume of shape (64, 64, 4) where a 2D slice belongs"
            in lines)
    assert len(lines) == 5


def test_label_and_weak_values_outside_the_classes(copy_prepared):
    root = copy_prepared()
    label_entry, weak_entry, legal_entry = (_entry(root, "training", i) for i in range(3))
    label = np.asarray(nib.load(str(root / label_entry["label"])).dataobj).copy()
    label[0, 0] = 2  # the phantom has classes 0..1
    _save(root / label_entry["label"], label)
    weak = np.asarray(nib.load(str(root / weak_entry["weak"]["erosion"])).dataobj).copy()
    weak[0, 0], weak[0, 1] = 7, 254
    _save(root / weak_entry["weak"]["erosion"], weak)
    weak = np.full((64, 64), 255, np.uint8)  # all unannotated but one background and one target pixel: legal
    weak[0, 0], weak[0, 1] = 0, 1
    _save(root / legal_entry["weak"]["random_disc"], weak)

    assert _lines(root, checksums=False) == [
        f"{root / label_entry['label']}: {_where('training', 0, label_entry)}: label values 2 outside 0..1 (dataset.json 'labels')",
        f"{root / weak_entry['weak']['erosion']}: {_where('training', 1, weak_entry)}: "
        "weak label 'erosion' values 7, 254 outside 0..1 and 255 (unannotated)",
    ]


def test_a_training_reads_only_its_own_weak_labels(copy_prepared):
    """weak_read: the files of the other strategies are not opened (start-up time); their entries still are checked."""
    root = copy_prepared()
    entry = _entry(root)
    (root / entry["weak"]["random_disc"]).write_bytes(gzip.compress(b"not a NIfTI file at all"))
    assert _lines(root, checksums=False, weak_read=["erosion"]) == []
    assert len(_lines(root, checksums=False, weak_read=["random_disc"])) == 1 and len(_lines(root, checksums=False)) == 1
    (root / entry["weak"]["erosion"]).write_bytes(gzip.compress(b"not a NIfTI file at all"))
    assert len(_lines(root, checksums=False, weak_read=["erosion"])) == 1


@pytest.mark.parametrize("split", ["training", "validation"])
def test_nan_and_infinite_image_voxels_in_any_split(split, copy_prepared):
    root = copy_prepared()
    entry = _entry(root, split, 0)
    image = np.asarray(nib.load(str(root / entry["image"])).dataobj).astype(np.float32)
    image[0, 0], image[1, 1], image[2, 2] = np.nan, np.inf, -np.inf
    _save(root / entry["image"], image)
    assert _lines(root, checksums=False) == [
        f"{root / entry['image']}: {_where(split, 0, entry)}: 1 NaN and 2 infinite voxels in the image"
    ]


@pytest.mark.parametrize("bad, fragment", [
    ([[10, 5]], "bounds 'individual' of class 1 has lo > hi, got [10, 5]"),
    ([[float("nan"), 5]], "bounds 'individual' of class 1 must be finite, got [nan, 5]"),
    ([[0, float("inf")]], "bounds 'individual' of class 1 must be finite, got [0, inf]"),
    ([[-1, 5]], "bounds 'individual' of class 1 must not be negative, got [-1, 5]"),
    ([["1", 5]], "bounds 'individual' of class 1 must be two numbers [lo, hi], got ['1', 5]"),
    ([[1, 5], [1, 5]], "bounds 'individual' must list one [lo, hi] pair per target class (1), got [[1, 5], [1, 5]]"),
    ("wide", "bounds 'individual' must list one [lo, hi] pair per target class (1), got 'wide'"),
])
def test_bounds_must_be_finite_non_negative_pairs(bad, fragment, copy_prepared):
    root = copy_prepared()
    _edit_manifest(root, lambda m: m["training"][3]["bounds"].update(individual=bad))
    entry = _entry(root, "training", 3)
    assert _lines(root, contents=False, checksums=False) == [f"{root / 'dataset.json'}: {_where('training', 3, entry)}: {fragment}"]


def test_an_unknown_bound_rule_is_not_a_problem(copy_prepared):
    """User annotations leave a rule unknown for a slice: absent or null, never zero."""
    root = copy_prepared()
    _edit_manifest(root, lambda m: (m["training"][0]["bounds"].update(individual=None), m["training"][1]["bounds"].pop("individual")))
    assert _lines(root, checksums=False) == []


def test_splits_entries_and_required_keys(copy_prepared):
    root = copy_prepared()
    manifest_file = root / "dataset.json"

    def edit(manifest):
        manifest["training"][0] = "slices/image/a.nii"
        del manifest["training"][1]["image"]
        del manifest["validation"][0]["label"]  # validation slices are scored against their label
        manifest["training"][2]["slice"] = "2"
        manifest["training"][3]["spacing"] = [1.0, float("nan")]
        manifest["training"][4]["weak"] = ["slices/weak/erosion/x.nii.gz"]

    _edit_manifest(root, edit)
    manifest = _manifest(root)
    t = manifest["training"]
    assert _lines(root, checksums=False) == [
        f"{manifest_file}: training[0]: must be a mapping (a slice entry), got str",
        f"{manifest_file}: {_where('training', 1, t[1])}: lacks 'image'",
        f"{manifest_file}: {_where('training', 2, t[2])}: 'slice' must be a whole number, got '2'",
        f"{manifest_file}: {_where('training', 3, t[3])}: 'spacing' must be two positive finite numbers (row, column mm), got [1.0, nan]",
        f"{manifest_file}: {_where('training', 4, t[4])}: 'weak' must map strategy names to paths, got list",
        f"{manifest_file}: {_where('validation', 0, manifest['validation'][0])}: lacks 'label'",
    ]
    _edit_manifest(root, lambda m: m.update(test={"not": "a list"}))  # a split that is no list: not a dataset at all
    with pytest.raises(DatasetError, match="'test' must be a list of slice entries"):
        find_problems(root)


def test_paths_must_stay_inside_the_dataset_folder(copy_prepared, tmp_path):
    root = copy_prepared()
    outside = tmp_path / "outside.nii"
    _save(outside, np.zeros((64, 64), np.float32))
    (root / "slices" / "image" / "link.nii").symlink_to(outside)

    def edit(manifest):
        t = manifest["training"]
        t[0]["image"] = str(outside)
        t[1]["label"] = "../outside.nii"
        t[2]["image"] = "slices/image/link.nii"
        t[3]["weak"]["erosion"] = "slices/../../outside.nii"

    _edit_manifest(root, edit)
    t = _manifest(root)["training"]
    where = [f"{root / 'dataset.json'}: {_where('training', i, t[i])}: " for i in range(4)]
    assert _lines(root, checksums=False) == [
        where[0] + f"image path {str(outside)!r} is absolute; paths must be relative to the dataset folder",
        where[1] + "label path '../outside.nii' contains '..'; paths must stay inside the dataset folder",
        where[2] + f"image path 'slices/image/link.nii' leads outside the dataset folder (to {outside.resolve()}, through a symbolic link)",
        where[3] + "weak label 'erosion' path 'slices/../../outside.nii' contains '..'; paths must stay inside the dataset folder",
    ]


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "", "line\nbreak", 7])
def test_volume_and_patient_names_are_single_safe_file_names(name, copy_prepared):
    root = copy_prepared()
    _edit_manifest(root, lambda m: (m["training"][0].update(volume=name), m["volumes"][0].update(patient=name)))
    lines = _lines(root, contents=False, checksums=False)
    rule = "is not a single safe file-name component (letters, digits, '.', '_', '-'; not starting with '.'): results are named after it"
    entry = _entry(root)
    volume = _manifest(root)["volumes"][0]
    assert lines == [
        f"{root / 'dataset.json'}: {_where('training', 0, entry)}: volume name {name!r} {rule}".replace("\n", "\\n"),
        f"{root / 'dataset.json'}: volumes[0] ({volume['volume']}): patient name {name!r} {rule}".replace("\n", "\\n"),
    ]
    assert all("\n" not in line for line in lines)


def test_files_changed_since_preparation(copy_prepared):
    root = copy_prepared()
    entry = _entry(root)
    with open(root / entry["image"], "r+b") as handle:  # one byte of the pixel data: still a valid slice
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    (root / "bounds.csv").unlink()
    assert _lines(root, contents=False) == [
        f"{root / 'bounds.csv'}: recorded in prep.json but missing",
        f"{root / entry['image']}: changed since preparation (its sha256 differs from prep.json's record)",
    ]
    assert _lines(root, contents=False, checksums=False) == []


def test_without_prep_json_checksums_are_skipped_with_a_note(copy_prepared):
    root = copy_prepared()
    (root / "prep.json").unlink()
    found = find_problems(root)
    assert found.ok and found.notes == [f"{root / 'prep.json'}: absent; checksums not checked (the files cannot be compared with what was prepared)"]


def test_check_dataset_raises_the_first_problem_and_counts_the_others(copy_prepared):
    root = copy_prepared()
    entries = _manifest(root)["training"]
    for entry in entries[:3]:
        (root / entry["image"]).unlink()
    with pytest.raises(DatasetError) as caught:
        check_dataset(root)
    assert str(caught.value) == (
        f"{root / entries[0]['image']}: {_where('training', 0, entries[0])}: listed but missing "
        f"(and 2 more problems; `python -m data_prep verify {root}` lists them)"
    )
    assert check_dataset(root, contents=False).root == root.resolve()  # entries alone are fine


# ----------------------------------------------------------------------------------------------
# the command line: python -m data_prep verify


def test_cli_verify_reports_problems_or_ok(copy_prepared, tmp_path):
    root = copy_prepared()

    def verify(*args):
        return subprocess.run([sys.executable, "-m", "data_prep", "verify", *map(str, args)], cwd=REPO, capture_output=True, text=True, encoding="utf-8", errors="replace",
                              timeout=120)

    done = verify(root)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"ok: {_checked(root)}\n", "")

    entry = _entry(root)
    (root / entry["label"]).unlink()
    _edit_manifest(root, lambda m: m["validation"][0]["bounds"].update(tags=[[3, 1]]))
    done = verify(root)
    assert done.returncode == 2
    assert done.stdout.splitlines() == [
        f"{root / 'dataset.json'}: {_where('validation', 0, _entry(root, 'validation'))}: bounds 'tags' of class 1 has lo > hi, got [3, 1]",
        f"{root / entry['label']}: {_where('training', 0, entry)}: listed but missing",
        f"{root / 'dataset.json'}: changed since preparation (its sha256 differs from prep.json's record)",
        f"{root / entry['label']}: recorded in prep.json but missing",
    ]
    assert done.stderr == f"error: {root}: 4 problems found (listed above)\n"

    done = verify(tmp_path / "nowhere")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"error: {tmp_path / 'nowhere'}: no such folder; pass a prepared dataset folder (written by `python -m data_prep ...`)\n"


def _checked(root: Path) -> str:
    manifest = _manifest(root)
    return f"{sum(len(manifest[s]) for s in ('training', 'validation', 'test'))} slices, {len(manifest['volumes'])} volumes checked"


# ----------------------------------------------------------------------------------------------
# the bundles: every run checks the dataset first


def _bundle(*files: str, **overrides):
    from monai.bundle.scripts import run

    configs = [str(REPO / "bundles" / "wss_segmentation" / "configs" / f) for f in files]
    return run(config_file=configs if len(configs) > 1 else configs[0], meta_file=str(REPO / "bundles/wss_segmentation/configs/metadata.json"),
               logging_file=False, **overrides)


def test_bundle_runs_stop_on_a_tampered_dataset_with_one_line(copy_prepared, tmp_path, capsys):
    from wss_monai.engine import BundleInputError

    root = copy_prepared()
    entry = _entry(root, "validation", 0)
    image = np.asarray(nib.load(str(root / entry["image"])).dataobj).astype(np.float32)
    image[5, 5] = np.inf  # would silently lower the validation Dice
    _save(root / entry["image"], image)
    expected = f"{root / entry['image']}: {_where('validation', 0, entry)}: 1 infinite voxels in the image"

    for files, overrides in ((("train.json",), dict(regime="partial", epochs=1, log_mlflow=False, progress=False)),
                             (("train.json", "evaluate.json"), dict(ckpt_path=str(tmp_path / "none.pt"), split="validation"))):
        with pytest.raises(BundleInputError) as caught:
            _bundle(*files, dataset_dir=str(root), output_dir=str(tmp_path / "out"), **overrides)
        assert caught.value.code == 2 and caught.value.message == expected
        assert capsys.readouterr().err.strip().splitlines() == [f"error: {expected}"]
        assert not (tmp_path / "out").exists()  # nothing written


def test_bundle_key_verify_slices_false_reads_no_slice_but_checks_the_entries(copy_prepared, tmp_path):
    """``--verify_slices false`` (a JSON-only change) skips the slice reads, never dataset.json's entries."""
    from monai.bundle import ConfigWorkflow

    from wss_monai.engine import BundleInputError

    root = copy_prepared()
    (root / _entry(root)["image"]).unlink()

    def dataset(verify_slices):
        workflow = ConfigWorkflow(config_file=str(REPO / "bundles/wss_segmentation/configs/train.json"),
                                  meta_file=str(REPO / "bundles/wss_segmentation/configs/metadata.json"), logging_file=False,
                                  workflow_type=None, dataset_dir=str(root), verify_slices=verify_slices)
        workflow.parser.parse(reset=True)
        return workflow.parser.get_parsed_content("dataset")

    with pytest.raises(BundleInputError, match="listed but missing"):
        dataset(True)
    assert dataset("false").root == root.resolve()
    _edit_manifest(root, lambda m: m["training"][1].update(patient="../x"))
    with pytest.raises(BundleInputError, match=r"patient name '\.\./x' is not a single safe file-name component"):
        dataset("false")
