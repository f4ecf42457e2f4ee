"""Read a prepared dataset (``dataset.json``) into the flat sample dicts the training loaders use.

The prepared-dataset contract is in DESIGN.md and data_prep/README.md: one ``dataset.json`` entry
per 2D slice with ``"image"``, ``"label"``, ``"weak"`` (one path per strategy), ``"patient"``,
``"volume"``, ``"slice"``, ``"spacing"`` and ``"bounds"`` (one ``[lo, hi]`` per target class and
rule), plus a ``"volumes"`` list with the 3D geometry.

:func:`build_datalist` turns the entries of one split into sample dicts::

    {"image": "/abs/slices/image/p_001.nii",          # always read
     "weak": "/abs/slices/weak/erosion/p_001.nii.gz", # or None: an all-255 (unannotated) map
     "label": None,                                   # the full mask's path ONLY where it may be read
     "has_label": False, "full": False,
     "bounds": [[lo, hi], ...] or None,               # classes 1..K of the chosen rule
     "patient": "p", "volume_name": "p_frame01", "volume": 7, "slice": 1, "spacing": [r, c]}

A weak training sample carries ``"label": None``: the loaders cannot open its full mask
(DESIGN.md: "training never opens a full mask in a weak regime").

Fully annotated patients (regimes ``hybrid_<n>`` and ``full_<n>``) come from
:func:`choose_full_patients`: the training patients sorted by name, permuted with
``numpy.random.default_rng(seed)``, the first ``n`` of the permutation. For one seed the choices
are nested (the 5 patients of ``hybrid_5`` are among the 10 of ``hybrid_10``), and ``hybrid_n``
and ``full_n`` with the same seed use the same patients, as the paper's Table 2 compares them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

DATASET_JSON = "dataset.json"
SPLITS = ("training", "validation", "test")
UNANNOTATED = 255
#: special weak-strategy name: the dataset's primary strategy (``dataset.json["weak_primary"]``)
PRIMARY = "primary"


class DatasetError(ValueError):
    """A prepared dataset that does not fit the contract, or a request it cannot serve; names the file."""


def dataset_json_path(dataset_dir: str | Path) -> Path:
    return Path(dataset_dir) / DATASET_JSON


def read_dataset_json(dataset_dir: str | Path) -> dict:
    """The parsed ``dataset.json`` of a prepared dataset (clear error if missing or not JSON)."""
    path = dataset_json_path(dataset_dir)
    if not path.is_file():
        raise DatasetError(f"{path}: no dataset.json here; pass a folder written by `python -m data_prep ...`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: cannot read it as JSON ({error})") from error
    if not isinstance(manifest, dict) or "labels" not in manifest:
        raise DatasetError(f"{path}: not a prepared dataset (no 'labels' mapping)")
    return manifest


def class_names(dataset_dir: str | Path) -> dict[int, str]:
    """``{0: "background", 1: "left ventricle", ...}`` from ``dataset.json["labels"]``."""
    return _class_names(read_dataset_json(dataset_dir), dataset_json_path(dataset_dir))


def _class_names(manifest: dict, path: Path) -> dict[int, str]:
    try:
        names = {int(k): str(v) for k, v in manifest["labels"].items()}
    except (AttributeError, TypeError, ValueError) as error:
        raise DatasetError(f"{path}: 'labels' must map class indices to names ({error})") from error
    if sorted(names) != list(range(len(names))) or len(names) < 2:
        raise DatasetError(f"{path}: 'labels' must list classes 0..C-1 (0 = background, at least one target), got {sorted(names)}")
    return names


def volume_ids(dataset_dir: str | Path) -> dict[str, int]:
    """A stable integer id per volume: the sorted volume names of the whole dataset -> 0, 1, ...

    Names come from ``"volumes"`` and from every slice entry of every split, so the ids do not
    depend on the split (or the rank) a loader serves.
    """
    return _volume_ids(read_dataset_json(dataset_dir))


def _volume_ids(manifest: dict) -> dict[str, int]:
    names = {str(v["volume"]) for v in manifest.get("volumes", []) if "volume" in v}
    for split in SPLITS:
        names.update(str(e["volume"]) for e in manifest.get(split, []) if "volume" in e)
    return {name: i for i, name in enumerate(sorted(names))}


def volume_spacing_3d(dataset_dir: str | Path) -> dict[str, tuple[float, float, float]]:
    """Per volume, the voxel spacing in mm as (row, column, slice distance) of the prepared slices.

    ``"volumes"`` stores the spacing in file axis order; row and column are the two in-plane axes
    in file order (as a slice's array is indexed) and the slice distance is the ``slice_axis`` one.
    """
    path = dataset_json_path(dataset_dir)
    manifest = read_dataset_json(dataset_dir)
    result: dict[str, tuple[float, float, float]] = {}
    for volume in manifest.get("volumes", []):
        try:
            spacing = [float(s) for s in volume["spacing"]]
            axis = int(volume.get("slice_axis", 2))
            inplane = [a for a in range(3) if a != axis]
            result[str(volume["volume"])] = (spacing[inplane[0]], spacing[inplane[1]], spacing[axis])
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise DatasetError(f"{path}: volume entry {volume.get('volume', '?')!r} has no usable 'spacing'/'slice_axis' ({error})") from error
    return result


def weak_strategies(manifest: dict) -> list[str]:
    """The weak-label strategies a dataset offers (``"weak_strategies"``, else those of its entries)."""
    if manifest.get("weak_strategies"):
        return [str(s) for s in manifest["weak_strategies"]]
    found: set[str] = set()
    for split in SPLITS:
        for entry in manifest.get(split, []):
            found.update((entry.get("weak") or {}).keys())
    return sorted(found)


def bound_rules(manifest: dict) -> list[str]:
    """The size-bound rules a dataset offers (``"bound_rules"``, else those of its entries)."""
    if manifest.get("bound_rules"):
        return [str(s) for s in manifest["bound_rules"]]
    found: set[str] = set()
    for split in SPLITS:
        for entry in manifest.get(split, []):
            found.update((entry.get("bounds") or {}).keys())
    return sorted(found)


def training_patients(dataset_dir: str | Path) -> list[str]:
    """The patients of the training split, sorted by name."""
    return sorted({str(e["patient"]) for e in read_dataset_json(dataset_dir).get("training", [])})


def choose_full_patients(patients: Iterable[str], n: int, seed: int = 0) -> list[str]:
    """The ``n`` fully annotated patients of a hybrid/``full_<n>`` regime (returned sorted).

    The candidates are sorted by name, permuted with ``numpy.random.default_rng(seed)``, and the
    first ``n`` of the permutation are taken: reproducible, independent of the entry order in
    dataset.json, and nested in ``n`` for a fixed seed.
    """
    ordered = sorted(set(str(p) for p in patients))
    n = int(n)
    if n < 0:
        raise ValueError(f"full_patients must be >= 0, got {n}")
    if n > len(ordered):
        raise ValueError(f"full_patients={n} but the training split has only {len(ordered)} patients")
    order = np.random.default_rng(int(seed)).permutation(len(ordered))
    return sorted(ordered[i] for i in order[:n])


def full_patients(dataset_dir: str | Path, n: int, seed: int = 0) -> list[str]:
    """:func:`choose_full_patients` over the training patients of ``dataset_dir`` (log it with the run)."""
    return choose_full_patients(training_patients(dataset_dir), n, seed)


def _resolve(dataset_dir: Path, path: str) -> str:
    p = Path(path)
    return str(p if p.is_absolute() else dataset_dir / p)


def resolve_weak(manifest: dict, weak: str | None, path: Path) -> str | None:
    """The weak strategy name to read (``None`` = no weak labels; ``"primary"`` = the dataset's primary)."""
    if weak is None:
        return None
    available = weak_strategies(manifest)
    if weak == PRIMARY:
        weak = manifest.get("weak_primary") or (available[0] if available else None)
        if weak is None:
            raise DatasetError(f"{path}: weak='primary' but the dataset lists no weak-label strategy")
    if weak not in available:
        raise DatasetError(
            f"{path}: no weak-label strategy {weak!r}; this dataset has {', '.join(available) or 'none'} "
            f"(or pass weak=None for all-unannotated weak labels, weak='primary' for {manifest.get('weak_primary')!r})"
        )
    return weak


def resolve_bounds(manifest: dict, bounds: str | None, path: Path) -> str | None:
    """The bound rule to read (``None`` = unconstrained (0, inf) for every class)."""
    if bounds is None:
        return None
    available = bound_rules(manifest)
    if bounds not in available:
        raise DatasetError(
            f"{path}: no size-bound rule {bounds!r}; this dataset has {', '.join(available) or 'none'} (or pass bounds=None)"
        )
    return bounds


def build_datalist(
    dataset_dir: str | Path,
    split: str,
    *,
    weak: str | None = "erosion",
    bounds: str | None = None,
    full_patients: int = 0,
    full: bool = False,
    seed: int = 0,
    load_labels: bool | None = None,
) -> list[dict[str, Any]]:
    """The samples of one split as flat dicts (module docstring), sorted by (volume, slice).

    Args:
        dataset_dir: a prepared dataset (``dataset.json`` at its root); relative paths in the
            entries are resolved against it.
        split: ``"training"``, ``"validation"`` or ``"test"``.
        weak: weak-label strategy (a key of the entries' ``"weak"``), ``"primary"``, or ``None``.
        bounds: bound rule (a key of the entries' ``"bounds"``), or ``None``.
        full_patients: training only: that many patients (:func:`choose_full_patients` with
            ``seed``) are fully annotated - their samples get ``full=True`` and their labels.
        full: every sample is fully annotated; with ``full_patients > 0`` the training split
            keeps ONLY the chosen patients (regime ``full_<n>``).
        seed: seed of the full-patient choice.
        load_labels: ``None`` (default): labels of validation/test samples and of fully
            annotated training samples; ``True``: every sample's label (e.g. training-set Dice;
            this reads the full masks of weak samples); ``False``: no label at all.

    Raises:
        DatasetError: unknown split, strategy or rule (listing the available ones), or entries
            that do not fit the contract; the message names the dataset.json.
    """
    dataset_dir = Path(dataset_dir)
    path = dataset_json_path(dataset_dir)
    if split not in SPLITS:
        raise DatasetError(f"{path}: split must be one of {', '.join(SPLITS)}, got {split!r}")
    manifest = read_dataset_json(dataset_dir)
    names = _class_names(manifest, path)
    n_targets = len(names) - 1
    weak = resolve_weak(manifest, weak, path)
    rule = resolve_bounds(manifest, bounds, path)
    if full and load_labels is False:
        raise ValueError("full=True needs the labels of the fully annotated samples; do not pass load_labels=False")
    ids = _volume_ids(manifest)

    chosen: set[str] = set()
    if full_patients and split == "training":
        chosen = set(choose_full_patients((e["patient"] for e in manifest.get("training", [])), full_patients, seed))

    samples = []
    for number, entry in enumerate(manifest.get(split, [])):
        where = f"{path}: {split}[{number}]"
        try:
            patient = str(entry["patient"])
            volume = str(entry["volume"])
            image = _resolve(dataset_dir, entry["image"])
            slice_index = int(entry["slice"])
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(f"{where} lacks 'image', 'patient', 'volume' or 'slice' ({error})") from error
        if split == "training" and chosen and full and patient not in chosen:
            continue  # regime full_<n>: only the n chosen patients
        is_full = bool(full) or patient in chosen
        has_label = load_labels if load_labels is not None else (split != "training" or is_full)
        label = None
        if has_label:
            if not entry.get("label"):
                raise DatasetError(f"{where} ({volume} slice {slice_index}) has no 'label' but labels are needed here")
            label = _resolve(dataset_dir, entry["label"])
        weak_path = None
        if weak is not None:
            weak_map = entry.get("weak") or {}
            if weak not in weak_map:
                raise DatasetError(f"{where} ({volume} slice {slice_index}) has no weak label {weak!r}; it has {', '.join(weak_map) or 'none'}")
            weak_path = _resolve(dataset_dir, weak_map[weak])
        entry_bounds = None
        if rule is not None:
            entry_bounds = (entry.get("bounds") or {}).get(rule)
            if entry_bounds is None:
                raise DatasetError(f"{where} ({volume} slice {slice_index}) has no bounds {rule!r}")
            if len(entry_bounds) != n_targets:
                raise DatasetError(
                    f"{where}: bounds {rule!r} lists {len(entry_bounds)} classes, 'labels' has {n_targets} target classes"
                )
            entry_bounds = [[float(lo), float(hi)] for lo, hi in entry_bounds]
        spacing = entry.get("spacing", [1.0, 1.0])
        if len(spacing) != 2 or not all(math.isfinite(float(s)) and float(s) > 0 for s in spacing):
            raise DatasetError(f"{where}: 'spacing' must be two positive numbers (row, column mm), got {spacing}")
        samples.append(
            {
                "image": image,
                "weak": weak_path,
                "label": label,
                "has_label": bool(has_label),
                "full": is_full,
                "bounds": entry_bounds,
                "patient": patient,
                "volume_name": volume,
                "volume": ids[volume],
                "slice": slice_index,
                "spacing": [float(s) for s in spacing],
            }
        )
    samples.sort(key=lambda s: (s["volume"], s["slice"]))
    return samples
