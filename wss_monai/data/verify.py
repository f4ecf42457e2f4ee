"""Check a whole prepared dataset before it is used: every entry, every slice file, the checksums.

A prepared dataset may come from someone else, or may have been edited by hand since
``python -m data_prep`` wrote it. :class:`~wss_monai.data.prepared.PreparedDataset` opens it
with light checks only (so that opening stays instant); what is wrong deeper in it used to
surface far away: a missing or truncated slice as a 50-line traceback out of the data loader,
a label value out of range as an index error in the loss, and an infinite voxel in a
validation image as a silently lower Dice. This module finds all of it up front, in one place:

- :func:`find_problems` lists every problem (file, entry, what is wrong) for a report
  (``python -m data_prep verify PREPARED``);
- :func:`check_dataset` raises :class:`~wss_monai.data.prepared.DatasetError` with the first
  problem and the count of the others, for callers that need one line (every bundle run).

Three levels, cheapest first:

1. the entries of ``dataset.json`` (no file is opened): splits are lists (checked on opening) of mappings with
   ``image``, ``patient``, ``volume`` and ``slice``; paths are relative, without ``..``, and
   stay inside the folder with symlinks followed; volume and patient names are single safe
   file-name components (they name per-volume results); bounds are pairs of finite numbers
   ``0 <= lo <= hi``, one per target class; spacings are positive finite numbers;
2. the slice files (``contents``): each one is there, reads as NIfTI, is 2D and of the
   dataset's slice size; images hold no NaN or infinity; labels hold classes ``0..C-1`` and weak
   labels those or 255 (unannotated);
3. the checksums (``checksums``): every file recorded in ``prep.json`` still has the sha256 it
   had when it was written; without ``prep.json`` this is skipped with a note.

Strings from the dataset are only ever compared and printed, never evaluated.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from wss_monai.data.prepared import PREP_JSON, SPLITS, UNANNOTATED, DatasetError, PreparedDataset

__all__ = ["Problem", "Findings", "find_problems", "check_dataset", "SAFE_NAME"]

#: what a volume or patient name may look like: it becomes a file name (letters, digits, '.', '_',
#: '-', not starting with '.'), the same alphabet ``data_prep`` sanitises user ids to.
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
REQUIRED_KEYS = ("image", "patient", "volume", "slice")
#: slices read before a progress bar is worth showing
PROGRESS_FROM = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a prepared dataset: the file, the entry of dataset.json (or ""), what is wrong."""

    file: str
    entry: str
    problem: str

    def line(self) -> str:
        """``<file>: <entry>: <problem>`` on one line (control characters of hostile names escaped)."""
        text = f"{self.file}: {self.entry}: {self.problem}" if self.entry else f"{self.file}: {self.problem}"
        return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)

    def __str__(self) -> str:
        return self.line()


@dataclass
class Findings:
    """What :func:`find_problems` found: the problems, how much was checked, and notes (checks skipped)."""

    problems: list[Problem] = field(default_factory=list)
    slices: int = 0
    volumes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_dataset(dataset: PreparedDataset | str | os.PathLike, *, contents: bool = True, checksums: bool = False,
                  weak_read: Collection[str] | None = None) -> PreparedDataset:
    """Raise :class:`DatasetError` naming the first problem of :func:`find_problems` (and how many others).

    Returns the opened dataset when nothing is wrong. Checksums are off by default: they flag any
    edit of dataset.json, even a deliberate one, so they belong to ``python -m data_prep verify``.
    """
    data = dataset if isinstance(dataset, PreparedDataset) else PreparedDataset(dataset)
    found = find_problems(data, contents=contents, checksums=checksums, weak_read=weak_read)
    if found.problems:
        first, others = found.problems[0], len(found.problems) - 1
        more = f" (and {others} more problem{'s' if others > 1 else ''}; `python -m data_prep verify {data.root}` lists them)" if others else ""
        raise DatasetError(f"{first.line()}{more}")
    return data


def find_problems(
    dataset: PreparedDataset | str | os.PathLike,
    *,
    contents: bool = True,
    checksums: bool = True,
    progress: bool = False,
    weak_read: Collection[str] | None = None,
) -> Findings:
    """Every problem of a prepared dataset (module docstring), in dataset.json's order.

    Args:
        dataset: an opened dataset or its folder (a folder that is no prepared dataset at all
            raises :class:`DatasetError`: there is nothing to list).
        contents: read every slice file (level 2); off, only dataset.json's entries are checked.
        checksums: compare the files with prep.json's record (level 3).
        progress: a progress bar on the slice reads (on a terminal, for large datasets).
        weak_read: the weak-label strategies whose files are read (None: every one). A training run
            reads only its own: the others' files are never opened by it, and reading them was
            most of the check's time (five strategies against one image and one mask per slice).
            Their entries are still checked (level 1).
    """
    data = dataset if isinstance(dataset, PreparedDataset) else PreparedDataset(dataset)
    found = Findings()
    slices = _check_entries(data, found)
    _check_volumes(data, found)
    found.slices = len(slices)
    found.volumes = len({str(entry["volume"]) for _, entry, _ in slices if "volume" in entry})
    if contents:
        _check_files(data, slices, found, progress, weak_read)
    if checksums:
        _check_checksums(data, found)
    return found


# ----------------------------------------------------------------------------------------------
# level 1: the entries of dataset.json


def _where(split: str, number: int, entry: Mapping | None = None) -> str:
    if isinstance(entry, Mapping) and "volume" in entry and "slice" in entry:
        return f"{split}[{number}] ({entry['volume']} slice {entry['slice']})"
    return f"{split}[{number}]"


def _check_entries(data: PreparedDataset, found: Findings) -> list[tuple[str, Mapping, str]]:
    """Check every slice entry; return the usable ones as (split, entry, where) for the file checks."""
    manifest_file = str(data.path)
    usable = []
    for split in SPLITS:  # each is a list: PreparedDataset refuses to open a dataset otherwise
        for number, entry in enumerate(data.manifest.get(split, [])):
            where = _where(split, number, entry)
            before = len(found.problems)
            report = lambda problem: found.problems.append(Problem(manifest_file, where, problem))  # noqa: E731
            if not isinstance(entry, Mapping):
                report(f"must be a mapping (a slice entry), got {type(entry).__name__}")
                continue
            missing = [key for key in REQUIRED_KEYS if key not in entry]
            if split != "training" and "label" not in entry:
                missing.append("label")  # validation and test slices are scored against it
            if missing:
                report(f"lacks {', '.join(repr(k) for k in missing)}")
            for key in ("patient", "volume"):
                if key in entry and not _safe_name(entry[key]):
                    report(f"{key} name {entry[key]!r} is not a single safe file-name component "
                           "(letters, digits, '.', '_', '-'; not starting with '.'): results are named after it")
            if "slice" in entry and not _is_int(entry["slice"]):
                report(f"'slice' must be a whole number, got {entry['slice']!r}")
            for key, path in _entry_paths(entry):
                problem = _path_problem(data.root, path)
                if problem:
                    report(f"{key} path {path!r} {problem}")
            if "weak" in entry and entry["weak"] is not None and not isinstance(entry["weak"], Mapping):
                report(f"'weak' must map strategy names to paths, got {type(entry['weak']).__name__}")
            if "label" in entry and entry["label"] is not None and not isinstance(entry["label"], str):
                report(f"'label' must be a path, got {type(entry['label']).__name__}")
            if "spacing" in entry and not _positive_numbers(entry["spacing"], 2):
                report(f"'spacing' must be two positive finite numbers (row, column mm), got {entry['spacing']!r}")
            for problem in _bounds_problems(entry.get("bounds"), data.num_classes - 1):
                report(problem)
            if len(found.problems) == before:
                usable.append((split, entry, where))
    return usable


def _check_volumes(data: PreparedDataset, found: Findings) -> None:
    volumes = data.manifest.get("volumes", [])
    if not isinstance(volumes, list):
        found.problems.append(Problem(str(data.path), "", f"'volumes' must be a list, got {type(volumes).__name__}"))
        return
    for number, volume in enumerate(volumes):
        where = f"volumes[{number}]" + (f" ({volume['volume']})" if isinstance(volume, Mapping) and "volume" in volume else "")
        report = lambda problem: found.problems.append(Problem(str(data.path), where, problem))  # noqa: E731
        if not isinstance(volume, Mapping):
            report(f"must be a mapping (a volume entry), got {type(volume).__name__}")
            continue
        for key in ("volume", "patient"):
            if key in volume and not _safe_name(volume[key]):
                report(f"{key} name {volume[key]!r} is not a single safe file-name component "
                       "(letters, digits, '.', '_', '-'; not starting with '.'): results are named after it")
        for key in ("image", "label"):
            if volume.get(key) is not None:
                problem = _path_problem(data.root, volume[key])
                if problem:
                    report(f"{key} path {volume[key]!r} {problem}")
        if "spacing" in volume and not _positive_numbers(volume["spacing"], 3):
            report(f"'spacing' must be three positive finite numbers (mm), got {volume['spacing']!r}")
        if "slice_axis" in volume and (not _is_int(volume["slice_axis"]) or volume["slice_axis"] not in (0, 1, 2)):
            report(f"'slice_axis' must be 0, 1 or 2, got {volume['slice_axis']!r}")


def _entry_paths(entry: Mapping, weak_read: Collection[str] | None = None) -> Iterable[tuple[str, Any]]:
    """(what, path) of every file an entry names: image, label, each weak label (those of ``weak_read`` when given)."""
    if "image" in entry:
        yield "image", entry["image"]
    if entry.get("label") is not None:
        yield "label", entry["label"]
    weak = entry.get("weak")
    if isinstance(weak, Mapping):
        for strategy, path in weak.items():
            if weak_read is None or strategy in weak_read:
                yield f"weak label {strategy!r}", path


def _path_problem(root: Path, path: Any) -> str | None:
    """Why ``path`` (from dataset.json or prep.json) may not be opened, or None: it must stay inside ``root``."""
    if not isinstance(path, str) or not path:
        return "is not a relative path (a non-empty string)"
    pure = PurePosixPath(path)
    if pure.is_absolute() or Path(path).is_absolute() or "\\" in path or re.match(r"[A-Za-z]:", path):
        return "is absolute; paths must be relative to the dataset folder"
    if ".." in pure.parts:
        return "contains '..'; paths must stay inside the dataset folder"
    if "\x00" in path:
        return "contains a NUL character"
    resolved = (root / path).resolve()
    if resolved != root and root not in resolved.parents:
        return f"leads outside the dataset folder (to {resolved}, through a symbolic link)"
    return None


def _safe_name(name: Any) -> bool:
    return isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None and len(name.encode()) <= 200


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_numbers(values: Any, count: int) -> bool:
    return (isinstance(values, list) and len(values) == count
            and all(_is_number(v) and math.isfinite(v) and v > 0 for v in values))


def _bounds_problems(bounds: Any, n_targets: int) -> list[str]:
    """What is wrong with an entry's ``"bounds"``: rule -> one ``[lo, hi]`` per target class (or None: unknown)."""
    if bounds is None:
        return []
    if not isinstance(bounds, Mapping):
        return [f"'bounds' must map rule names to [lo, hi] pairs, got {type(bounds).__name__}"]
    problems = []
    for rule, rows in bounds.items():
        if rows is None:
            continue  # the rule is unknown for this slice (user annotations), never zero
        if not isinstance(rows, list) or len(rows) != n_targets:
            problems.append(f"bounds {rule!r} must list one [lo, hi] pair per target class ({n_targets}), got {rows!r}")
            continue
        for cls, pair in enumerate(rows, start=1):
            if not (isinstance(pair, list) and len(pair) == 2 and all(_is_number(v) for v in pair)):
                problems.append(f"bounds {rule!r} of class {cls} must be two numbers [lo, hi], got {pair!r}")
            elif not all(math.isfinite(v) for v in pair):
                problems.append(f"bounds {rule!r} of class {cls} must be finite, got {pair!r}")
            elif pair[0] < 0 or pair[1] < 0:
                problems.append(f"bounds {rule!r} of class {cls} must not be negative, got {pair!r}")
            elif pair[0] > pair[1]:
                problems.append(f"bounds {rule!r} of class {cls} has lo > hi, got {pair!r}")
    return problems


# ----------------------------------------------------------------------------------------------
# level 2: the slice files


def _check_files(data: PreparedDataset, slices: list[tuple[str, Mapping, str]], found: Findings, progress: bool,
                 weak_read: Collection[str] | None = None) -> None:
    from tqdm import tqdm

    classes = data.num_classes
    size = data.image_size
    for split, entry, where in tqdm(slices, desc="verify", unit="slice", disable=None if (progress and len(slices) >= PROGRESS_FROM) else True):
        for key, relpath in _entry_paths(entry, weak_read):
            path = data.root / relpath
            array, problem = _read_slice(path)
            if problem is None:
                shape = tuple(array.shape)
                if size is None:
                    size = shape  # no declared size: the first slice read sets it
                if shape != tuple(size):
                    problem = f"slice size {shape[0]}x{shape[1]}, the dataset's is {size[0]}x{size[1]}"
                elif key == "image":
                    problem = _image_problem(array)
                elif key == "label":
                    problem = _label_problem(array, set(range(classes)), f"label values {{}} outside 0..{classes - 1} (dataset.json 'labels')")
                else:
                    problem = _label_problem(array, set(range(classes)) | {UNANNOTATED},
                                             f"{key} values {{}} outside 0..{classes - 1} and {UNANNOTATED} (unannotated)")
            if problem:
                found.problems.append(Problem(str(path), where, problem))


def _read_slice(path: Path) -> tuple[np.ndarray | None, str | None]:
    """The 2D array of a NIfTI slice, or why there is none (missing, unreadable, 3D...)."""
    import nibabel as nib

    if not path.exists():
        return None, "listed but missing"
    if not path.is_file():
        return None, "is not a file"
    try:
        array = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as error:  # nibabel raises several types (truncated gzip, bad header...)
        reason = " ".join(str(error).split()) or type(error).__name__
        return None, f"cannot read it as a NIfTI slice ({reason})"
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        kind = "a 3D volume" if array.ndim == 3 else f"a {array.ndim}D array"
        return None, f"{kind} of shape {tuple(array.shape)} where a 2D slice belongs"
    if not np.issubdtype(array.dtype, np.number):
        return None, f"voxels of non-numeric type {array.dtype}"
    return array, None


def _image_problem(array: np.ndarray) -> str | None:
    if np.issubdtype(array.dtype, np.integer):
        return None
    finite = np.isfinite(array)
    if finite.all():
        return None
    nan = int(np.isnan(array).sum())
    inf = int(array.size - finite.sum()) - nan
    parts = [f"{nan} NaN"] * bool(nan) + [f"{inf} infinite"] * bool(inf)
    return f"{' and '.join(parts)} voxels in the image"


def _label_problem(array: np.ndarray, allowed: set[int], message: str) -> str | None:
    if not np.issubdtype(array.dtype, np.integer):
        return f"label maps must be stored as integers, got {array.dtype}"
    if array.size and 0 <= array.min() and array.max() <= 255:
        present = np.flatnonzero(np.bincount(array.ravel().astype(np.intp), minlength=256))
    else:
        present = np.unique(array)
    bad = sorted(int(v) for v in present if int(v) not in allowed)
    if not bad:
        return None
    shown = ", ".join(str(v) for v in bad[:5]) + (" ..." if len(bad) > 5 else "")
    return message.format(shown)


# ----------------------------------------------------------------------------------------------
# level 3: prep.json's checksums


def _check_checksums(data: PreparedDataset, found: Findings) -> None:
    record_file = data.root / PREP_JSON
    if not record_file.is_file():
        found.notes.append(f"{record_file}: absent; checksums not checked (the files cannot be compared with what was prepared)")
        return
    record = data.prep.get("checksums")
    if not isinstance(record, Mapping):
        found.problems.append(Problem(str(record_file), "", "no 'checksums' mapping (unreadable, or not written by data_prep)"))
        return
    for relpath, digest in record.items():
        problem = _path_problem(data.root, relpath)
        if problem:
            found.problems.append(Problem(str(record_file), "checksums", f"path {relpath!r} {problem}"))
            continue
        path = data.root / relpath
        if not path.is_file():
            found.problems.append(Problem(str(path), "", "recorded in prep.json but missing"))
        elif _sha256(path) != digest:
            found.problems.append(Problem(str(path), "", "changed since preparation (its sha256 differs from prep.json's record)"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
