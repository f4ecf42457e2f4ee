"""Reliability of data preparation: the bad-input corpus through the real CLI, killed runs, stale temporaries.

Every case of :mod:`pipelines.testkit.bad_inputs` runs ``python -m data_prep`` in a subprocess: a broken
input gives one line naming the file and exit code 2, a legal oddity a correct result; never a
traceback, nothing left under or beside ``--out``, no input changed. :mod:`pipelines.testkit.interrupted`
kills runs with SIGKILL and checks that the next run finishes byte-identical to an
uninterrupted one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from data_prep import atomic
from pipelines.testkit.bad_inputs import CASES, make_removable, run_case
from data_prep.errors import InputError
from pipelines.testkit.interrupted import killed_phantom, killed_prepare
from data_prep.io import write_file


@pytest.mark.parametrize("bad", CASES, ids=[bad.name for bad in CASES])
def test_bad_input_is_handled(bad, tmp_path):
    try:
        outcome = run_case(bad, tmp_path)
    finally:
        make_removable(tmp_path)
    if outcome.skipped:
        pytest.skip(outcome.skipped)
    assert not outcome.lost, f"input changed or removed: {outcome.lost}"
    assert outcome.handled, f"{outcome.problems}; stderr: {outcome.message}"


def test_the_corpus_covers_the_issue():
    names = [bad.name for bad in CASES]
    assert len(names) >= 25 and len(set(names)) == len(names)
    for needed in (
        "truncated-image", "wrong-magic", "shape-mismatch", "spacing-mismatch", "label-outside-declared-set",
        "float-labels", "nan-intensity", "inf-intensity", "image-2d", "image-4d", "empty-source", "missing-gt",
        "missing-segmentation", "duplicate-patient", "unreadable-file", "folder-instead-of-file",
        "hostile-csv-names", "symlink-loop-file", "zero-byte-file", "zero-length-axis", "all-background-volume",
        "dicom-mixed-series",
    ):  # fmt: skip
        assert needed in names


def test_the_corpus_covers_your_own_annotations():
    """Issue 13's bad inputs: every one is a corpus case run through the real command line."""
    names = {bad.name for bad in CASES}
    for needed in (
        "weak-only-custom", "annotation-shape-mismatch", "annotation-spacing-mismatch",
        "annotation-orientation-mismatch", "annotation-origin-mismatch", "annotation-undeclared-value",
        "every-case-annotated", "point-outside-image", "point-undeclared-space", "markups-undeclared-space",
        "markups-not-json", "markups-not-markups", "csv-unknown-case", "two-classes-one-voxel",
        "tag-contradicts-annotation", "mm2-bound-without-spacing", "val-needs-masks",
    ):  # fmt: skip
        assert needed in names


def test_the_corpus_covers_silently_wrong_results():
    """Issue 15: inputs that were prepared without a word into wrong data; two legal guards against over-refusal."""
    names = {bad.name for bad in CASES}
    for needed in (
        "extreme-intensity", "label-flipped-shifted", "label-origin-shifted", "label-origin-rounding",
        "constant-image-foreground", "constant-image-annotation", "constant-padding-slices",
    ):  # fmt: skip
        assert needed in names


def test_killed_preparation_finishes_byte_identical(tmp_path):
    report = killed_prepare(tmp_path, seed=0)
    assert report.handled, report
    assert len(report.kills) == 3 and any(k.workers == 2 for k in report.kills)
    assert any(k.phase == "writing" for k in report.kills), report.kills  # a kill left a temporary folder
    for kill in report.kills:
        if kill.workers == 2 and kill.phase == "writing":
            assert kill.children >= 2, kill  # the workers were running, and died with their parent
    assert report.files > 100 and not report.lost


def test_killed_phantom_generation_finishes_byte_identical(tmp_path):
    report = killed_phantom(tmp_path, seed=1)
    assert report.handled, report
    assert any(k.phase == "writing" for k in report.kills), report.kills


def _stale(parent: Path, name: str) -> Path:
    folder = parent / f".{name}.partial-abcd_123"
    (folder / "volumes").mkdir(parents=True)
    (folder / "volumes" / "half.nii").write_bytes(b"half")
    return folder


def test_stale_temporaries_of_the_target_only_are_removed(tmp_path):
    stale = _stale(tmp_path, "out")
    other_target = _stale(tmp_path, "out2")
    not_ours = tmp_path / ".out.partial-mine"  # not mkdtemp's 8 characters
    not_ours.mkdir()
    a_file = tmp_path / ".out.partial-abcdefgh"
    a_file.write_text("a file, not a temporary folder")
    with atomic.atomic_dir(tmp_path / "out") as root:
        (root / "done.txt").write_text("complete")
    assert not stale.exists()
    assert other_target.exists() and not_ours.exists() and a_file.exists()
    assert (tmp_path / "out" / "done.txt").read_text() == "complete"


def test_temporaries_of_a_live_writer_are_kept(tmp_path):
    stale = _stale(tmp_path, "out")
    holder = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_SH)  # what a live writer in this folder holds
        assert atomic.clean_stale(tmp_path / "out") == [] and stale.exists()
    finally:
        os.close(holder)
    assert atomic.clean_stale(tmp_path / "out") == [stale] and not stale.exists()


def test_an_overwrite_killed_between_its_renames_gives_the_previous_output_back(tmp_path):
    old = tmp_path / f".out.old-{os.getpid() + 1}"
    old.mkdir()
    (old / "dataset.json").write_text("previous")
    new = _stale(tmp_path, "out")
    atomic.clean_stale(tmp_path / "out")
    assert (tmp_path / "out" / "dataset.json").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not new.exists()


def test_an_existing_file_is_never_replaced_by_a_folder(tmp_path):
    target = tmp_path / "out"
    target.write_text("precious")
    with pytest.raises(InputError, match="not a folder"):
        with atomic.atomic_dir(target, overwrite=True):
            pass
    assert target.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("relpath", ["../escape.nii", "/tmp/abs.nii", "volumes/../../x.nii", "a\\..\\b.nii", ""])
def test_write_file_refuses_paths_leaving_the_output(tmp_path, relpath):
    with pytest.raises(ValueError, match="refusing to write"):
        write_file(tmp_path / "out", relpath, b"x")
    assert not any(tmp_path.rglob("*"))


def test_an_unreadable_file_is_one_error_even_where_chmod_cannot_show_it(tmp_path, monkeypatch):
    """The unreadable-file case is skipped as root (chmod 000 does not stop root): the same path, here."""
    import errno

    from data_prep import io

    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"\x1f\x8b")

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(io, "open", denied, raising=False)
    with pytest.raises(InputError) as error:
        io.read_volume(path, "image")
    assert error.value.line() == f"{path}: cannot read the image file (Permission denied)"
