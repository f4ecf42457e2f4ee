"""A prepared dataset's contract, read once: classes, slice size, splits, weak labels, bounds, geometry.

The contract itself (the files, an entry's keys) is drawn in ``docs/ARCHITECTURE.md``.

``dataset.json`` (and ``prep.json`` when present) of a folder written by ``python -m data_prep``
are parsed here and nowhere else; the training session, the loaders, the evaluator and the
inference config are handed one :class:`PreparedDataset`::

    >>> data = PreparedDataset("prepared/acdc-lv")          # doctest: +SKIP
    >>> data.num_classes, data.image_size, data.weak_primary  # doctest: +SKIP
    (2, (256, 256), 'erosion')
    >>> data.preprocessing                                   # doctest: +SKIP
    {'slice_axis': 2, 'size': [256, 256], 'resize': 'stretch', 'inplane_spacing': None, 'percentiles': [0.5, 99.5]}

What an entry may lack (user annotations, issue 13): a training slice may have no ``"label"``
(weak annotations only; then no ``"size_px"`` either), and its ``"bounds"`` may lack a rule (that
rule is unknown for the slice, never zero). :meth:`check_training` says, before anything is
built, whether a regime can train on what the dataset has: one line naming what is missing and a
few of the cases.

``preprocessing`` is what inference must repeat on a new scan (:mod:`wss_monai.geometry`): the
slice axis, the in-plane size and resize mode, the fixed in-plane spacing (``pad-crop``) and the
intensity percentiles. It is saved with the model, so a trained model segments new scans without
the dataset folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wss_monai.geometry import DEFAULT_PERCENTILES

__all__ = ["PreparedDataset", "DatasetError", "choose_full_patients", "SPLITS", "UNANNOTATED", "PRIMARY"]

DATASET_JSON = "dataset.json"
PREP_JSON = "prep.json"
SPLITS = ("training", "validation", "test")
UNANNOTATED = 255
#: special weak-strategy name: the dataset's primary strategy (``dataset.json["weak_primary"]``)
PRIMARY = "primary"
#: how many case names a message lists before "..."
SHOWN = 3


class DatasetError(ValueError):
    """A prepared dataset that does not fit the contract, or a request it cannot serve; names the file."""


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
        raise ValueError(f"full_patients={n} but only {len(ordered)} patients can be chosen")
    order = np.random.default_rng(int(seed)).permutation(len(ordered))
    return sorted(ordered[i] for i in order[:n])


def _cases(entries: Sequence[Mapping]) -> str:
    names = sorted({f"{e.get('volume', '?')} slice {e.get('slice', '?')}" for e in entries})
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


class PreparedDataset:
    """The contract of one prepared dataset (module docstring), checked when it is opened.

    Args:
        root: the folder holding ``dataset.json`` (``prep.json`` is optional).

    Raises:
        DatasetError: no folder, no or unreadable ``dataset.json``, ``labels`` not ``0..C-1``.

    Attributes:
        root (Path, resolved), path (its dataset.json), manifest (the parsed JSON), name,
        class_names ``{0: "background", ...}``, num_classes, image_size ``(H, W)`` or None,
        weak_strategies, weak_primary, bound_rules, volumes (the ``"volumes"`` list),
        provenance (``dataset.json["provenance"]`` or None), prep (``prep.json`` or {}).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        if root is None or str(root).strip() == "":
            raise DatasetError("dataset_dir is required: pass --dataset_dir PREPARED (a folder written by `python -m data_prep ...`).")
        self.root = Path(str(root)).expanduser().resolve()
        self.path = self.root / DATASET_JSON
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: dataset_dir does not exist or is not a folder (pass a folder written by `python -m data_prep ...`).")
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: no dataset.json; dataset_dir must be a prepared dataset (written by `python -m data_prep ...`).")
        try:
            manifest = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DatasetError(f"{self.path}: cannot read it as JSON ({err}).") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("labels"), Mapping):
            raise DatasetError(f"{self.path}: not a prepared dataset (no 'labels' mapping).")
        self.manifest = manifest
        try:
            names = {int(k): str(v) for k, v in manifest["labels"].items()}
        except (TypeError, ValueError) as err:
            raise DatasetError(f"{self.path}: 'labels' must map class indices to names ({err}).") from None
        if sorted(names) != list(range(len(names))) or len(names) < 2:
            raise DatasetError(f"{self.path}: 'labels' must list classes 0..C-1 (0 = background, at least one target), got {sorted(names)}.")
        self.class_names: dict[int, str] = dict(sorted(names.items()))
        self.num_classes = len(names)
        self.name = str(manifest.get("name") or self.root.name)
        for split in SPLITS:
            if not isinstance(manifest.get(split, []), list):
                raise DatasetError(f"{self.path}: '{split}' must be a list of slice entries.")
        volumes = manifest.get("volumes", [])
        self.volumes: list[dict] = [v for v in volumes if isinstance(v, Mapping)] if isinstance(volumes, list) else []
        provenance = manifest.get("provenance")
        self.provenance: dict | None = dict(provenance) if isinstance(provenance, Mapping) else None
        try:
            prep = json.loads((self.root / PREP_JSON).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            prep = {}
        self.prep: dict = prep if isinstance(prep, dict) else {}
        self.weak_strategies = self._available("weak_strategies", "weak")
        primary = manifest.get("weak_primary")
        self.weak_primary: str | None = str(primary) if primary else (self.weak_strategies[0] if self.weak_strategies else None)
        self.bound_rules = self._available("bound_rules", "bounds")
        self.image_size = self._image_size()
        self._ids = self._volume_ids()

    # ------------------------------------------------------------------------------------------
    # what the dataset offers

    def _available(self, list_key: str, entry_key: str) -> list[str]:
        found: list[str] = [str(s) for s in self.manifest.get(list_key) or []]
        for split in SPLITS:
            for entry in self.manifest.get(split, []):
                found_here = entry.get(entry_key) if isinstance(entry, Mapping) else None
                for name in (found_here if isinstance(found_here, Mapping) else {}):
                    if str(name) not in found:
                        found.append(str(name))
        return found

    def _image_size(self) -> tuple[int, int] | None:
        for size in ((self.prep.get("options") or {}).get("size"), self.manifest.get("size")):
            if isinstance(size, int) and not isinstance(size, bool):
                return (size, size)
            if isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and not isinstance(s, bool) for s in size):
                return (int(size[0]), int(size[1]))
        for split in SPLITS:
            for entry in self.manifest.get(split, [])[:1]:
                try:
                    import nibabel as nib

                    shape = nib.load(str(self.resolve(entry["image"]))).shape
                    return (int(shape[0]), int(shape[1]))
                except Exception:
                    return None
        return None

    def _volume_ids(self) -> dict[str, int]:
        names = {str(v["volume"]) for v in self.volumes if "volume" in v}
        for split in SPLITS:
            names.update(str(e["volume"]) for e in self.manifest.get(split, []) if isinstance(e, Mapping) and "volume" in e)
        return {name: i for i, name in enumerate(sorted(names))}

    @property
    def volume_ids(self) -> dict[str, int]:
        """A stable integer id per volume: the sorted volume names of the whole dataset -> 0, 1, ..."""
        return dict(self._ids)

    def entries(self, split: str) -> list[dict]:
        """The slice entries of a split (as in dataset.json)."""
        if split not in SPLITS:
            raise DatasetError(f"{self.path}: split must be one of {', '.join(SPLITS)}, got {split!r}.")
        return list(self.manifest.get(split, []))

    def patients(self, split: str = "training") -> list[str]:
        """The patients of a split, sorted by name."""
        return sorted({str(e.get("patient")) for e in self.entries(split)})

    def labelled_patients(self, split: str = "training") -> list[str]:
        """The patients of a split all of whose slices carry a full mask (``"label"``), sorted."""
        missing = {str(e.get("patient")) for e in self.entries(split) if not e.get("label")}
        return [p for p in self.patients(split) if p not in missing]

    @property
    def volume_spacing(self) -> dict[str, tuple[float, float, float]]:
        """Volume name -> (row, column, slice distance) in mm of the prepared slices."""
        result: dict[str, tuple[float, float, float]] = {}
        for volume in self.volumes:
            try:
                spacing = [float(s) for s in volume["spacing"]]
                axis = int(volume.get("slice_axis", 2))
                inplane = [a for a in range(3) if a != axis]
                result[str(volume["volume"])] = (spacing[inplane[0]], spacing[inplane[1]], spacing[axis])
            except (KeyError, IndexError, TypeError, ValueError) as error:
                raise DatasetError(f"{self.path}: volume entry {volume.get('volume', '?')!r} has no usable 'spacing'/'slice_axis' ({error}).") from None
        return result

    @property
    def fingerprint(self) -> str:
        """12 hex characters that tell two preparations apart (MLflow's dataset digest and the tag ``dataset_fingerprint``).

        Two folders with the same ``name`` may hold different data (another ``--size``, other
        weak labels, a re-run with another seed); runs trained on them must not be averaged
        together. ``prep.json`` records the sha256 of every file data_prep wrote, dataset.json
        included, so the sha256 of that ``checksums`` mapping (as JSON with sorted keys) changes
        with any prepared file and not with the folder's location or file times. A dataset
        without ``prep.json`` (made by hand or by an older data_prep) falls back to the sha256 of
        ``dataset.json``'s bytes: its entries name every slice file, so it still changes with
        the splits and labels. Twelve characters keep the UI column narrow; a clash between two
        preparations of one dataset is negligible (48 bits).
        """
        checksums = self.prep.get("checksums")
        if isinstance(checksums, Mapping) and checksums:
            payload = json.dumps({str(k): str(v) for k, v in checksums.items()}, sort_keys=True, separators=(",", ":")).encode()
        else:
            payload = self.path.read_bytes()
        return hashlib.sha256(payload).hexdigest()[:12]

    @property
    def preprocessing(self) -> dict[str, Any]:
        """What inference repeats on a new scan (module docstring); JSON-friendly."""
        options = self.prep.get("options") or {}
        axis = options.get("slice_axis")
        if axis is None:
            axis = next((v.get("slice_axis") for v in self.volumes if "slice_axis" in v), 2)
        mode = options.get("resize")
        if mode is None:
            mode = next(((v.get("plan") or {}).get("mode") for v in self.volumes if v.get("plan")), "stretch")
        return {
            "slice_axis": int(axis),
            "size": list(self.image_size) if self.image_size else None,
            "resize": str(mode),
            "inplane_spacing": options.get("inplane_spacing"),
            "percentiles": [float(p) for p in options.get("percentiles") or DEFAULT_PERCENTILES],
        }

    def resolve(self, relpath: str) -> Path:
        """A path of an entry, inside the dataset folder (a path leading outside it is refused)."""
        path = (self.root / str(relpath)).resolve()
        if path != self.root and self.root not in path.parents:
            raise DatasetError(f"{self.path}: the path {relpath!r} leads outside the dataset folder; refused.")
        return path

    # ------------------------------------------------------------------------------------------
    # what a regime needs

    def resolve_weak(self, weak: str | None) -> str | None:
        """The weak strategy to read (``None``: none; ``"primary"``: the dataset's primary one)."""
        if weak is None:
            return None
        if weak == PRIMARY:
            if self.weak_primary is None:
                raise DatasetError(f"{self.path}: weak='primary' but the dataset lists no weak-label strategy.")
            return self.weak_primary
        if weak not in self.weak_strategies:
            raise DatasetError(
                f"{self.path}: no weak-label strategy {weak!r}; this dataset has {', '.join(self.weak_strategies) or 'none'}."
            )
        return weak

    def full_patient_names(self, n: int, seed: int = 0) -> list[str]:
        """The ``n`` fully annotated training patients of ``hybrid_<n>``/``full_<n>``, among those with labels."""
        labelled = self.labelled_patients("training")
        if n > len(labelled):
            unlabelled = sorted(set(self.patients("training")) - set(labelled))
            raise DatasetError(
                f"{self.path}: {n} fully annotated training patients needed, {len(labelled)} have full masks "
                f"(without 'label': {', '.join(unlabelled[:SHOWN])}{' ...' if len(unlabelled) > SHOWN else ''})."
            )
        return choose_full_patients(labelled, n, seed)

    def check_training(self, *, weak: str | None, bounds: str | None, full: bool, full_patients: int, seed: int = 0) -> list[str]:
        """Check that the training split can serve a regime; returns the full patients chosen.

        Raises:
            DatasetError: one line naming what is missing and a few cases: the weak strategy on
                some slices, the bound rule on some slices, the full masks the regime needs.
        """
        training = self.entries("training")
        if not training:
            raise DatasetError(f"{self.path}: the training split is empty; nothing to train on.")
        chosen = self.full_patient_names(full_patients, seed) if full_patients else []
        used = [e for e in training if str(e.get("patient")) in chosen] if (full and chosen) else training
        needs_label = used if full else [e for e in training if str(e.get("patient")) in chosen]
        lacking = [e for e in needs_label if not e.get("label")]
        if lacking:
            raise DatasetError(
                f"{self.path}: the regime needs full masks ('label') on {'every training slice' if not chosen else 'the full patients'}, "
                f"{len(lacking)} slices have none ({_cases(lacking)}); choose a weak regime."
            )
        weak_users = [e for e in used if not (full or str(e.get("patient")) in chosen)]
        if weak is not None:
            lacking = [e for e in weak_users if weak not in (e.get("weak") or {})]
            if lacking:
                raise DatasetError(f"{self.path}: weak labels {weak!r} missing on {len(lacking)} training slices ({_cases(lacking)}).")
        if bounds is not None:
            lacking = [e for e in weak_users if (e.get("bounds") or {}).get(bounds) is None]
            if lacking:
                raise DatasetError(
                    f"{self.path}: size bounds {bounds!r} missing on {len(lacking)} training slices ({_cases(lacking)}); "
                    "a missing rule is unknown, not zero: choose another rule or add the bounds."
                )
        return chosen

    # ------------------------------------------------------------------------------------------
    # samples

    def datalist(
        self,
        split: str,
        *,
        weak: str | None = PRIMARY,
        bounds: str | None = None,
        full_patients: int = 0,
        full: bool = False,
        seed: int = 0,
        load_labels: bool | None = None,
    ) -> list[dict[str, Any]]:
        """The samples of one split as flat dicts, sorted by (volume, slice)::

            {"image": "/abs/slices/image/p_001.nii",          # always read
             "weak": "/abs/slices/weak/erosion/p_001.nii.gz", # or None: an all-255 (unannotated) map
             "label": None,                                   # the full mask's path ONLY where it may be read
             "has_label": False, "full": False,
             "bounds": [[lo, hi], ...] or None,               # classes 1..K of the chosen rule
             "patient": "p", "volume_name": "p_frame01", "volume": 7, "slice": 1, "spacing": [r, c]}

        A weak training sample carries ``"label": None``: the loaders cannot open its full mask.

        Args:
            split: ``"training"``, ``"validation"`` or ``"test"``.
            weak: weak-label strategy (a key of the entries' ``"weak"``), ``"primary"``, or ``None``.
            bounds: bound rule (a key of the entries' ``"bounds"``), or ``None``.
            full_patients: training only: that many patients (:meth:`full_patient_names`) are
                fully annotated: their samples get ``full=True`` and their labels.
            full: every sample is fully annotated; with ``full_patients > 0`` the training split
                keeps ONLY the chosen patients (regime ``full_<n>``).
            seed: seed of the full-patient choice.
            load_labels: ``None``: labels of validation/test samples and of fully annotated
                training samples; ``True``: every sample's label; ``False``: none.

        Raises:
            DatasetError: unknown split, strategy or rule, or entries that do not fit the contract.
        """
        n_targets = self.num_classes - 1
        weak = self.resolve_weak(weak)
        if bounds is not None and bounds not in self.bound_rules:
            raise DatasetError(f"{self.path}: no size-bound rule {bounds!r}; this dataset has {', '.join(self.bound_rules) or 'none'}.")
        if full and load_labels is False:
            raise ValueError("full=True needs the labels of the fully annotated samples; do not pass load_labels=False")
        chosen: set[str] = set()
        if full_patients and split == "training":
            chosen = set(self.full_patient_names(full_patients, seed))
        samples = []
        for number, entry in enumerate(self.entries(split)):
            where = f"{self.path}: {split}[{number}]"
            try:
                patient = str(entry["patient"])
                volume = str(entry["volume"])
                image = str(self.resolve(entry["image"]))
                slice_index = int(entry["slice"])
            except (KeyError, TypeError, ValueError) as error:
                raise DatasetError(f"{where} lacks 'image', 'patient', 'volume' or 'slice' ({error})") from None
            if split == "training" and chosen and full and patient not in chosen:
                continue  # regime full_<n>: only the n chosen patients
            is_full = bool(full) or patient in chosen
            has_label = load_labels if load_labels is not None else (split != "training" or is_full)
            label = None
            if has_label:
                if not entry.get("label"):
                    raise DatasetError(f"{where} ({volume} slice {slice_index}) has no 'label' but labels are needed here")
                label = str(self.resolve(entry["label"]))
            weak_path = None
            if weak is not None and not (is_full and weak not in (entry.get("weak") or {})):
                weak_map = entry.get("weak") or {}
                if weak not in weak_map:
                    raise DatasetError(f"{where} ({volume} slice {slice_index}) has no weak label {weak!r}; it has {', '.join(weak_map) or 'none'}")
                weak_path = str(self.resolve(weak_map[weak]))
            entry_bounds = None
            if bounds is not None and not (is_full and (entry.get("bounds") or {}).get(bounds) is None):
                entry_bounds = (entry.get("bounds") or {}).get(bounds)
                if entry_bounds is None:
                    raise DatasetError(f"{where} ({volume} slice {slice_index}) has no bounds {bounds!r}")
                if len(entry_bounds) != n_targets:
                    raise DatasetError(f"{where}: bounds {bounds!r} lists {len(entry_bounds)} classes, 'labels' has {n_targets} target classes")
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
                    "volume": self._ids[volume],
                    "slice": slice_index,
                    "spacing": [float(s) for s in spacing],
                }
            )
        samples.sort(key=lambda s: (s["volume"], s["slice"]))
        return samples
