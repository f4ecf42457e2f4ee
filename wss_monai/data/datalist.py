"""Function forms of :class:`~wss_monai.data.prepared.PreparedDataset` for callers holding a folder.

Each opens the dataset once and asks it; a caller that needs several answers opens a
:class:`PreparedDataset` itself. The sample dict format is :meth:`PreparedDataset.datalist`'s.

Fully annotated patients (regimes ``hybrid_<n>`` and ``full_<n>``) come from
:func:`choose_full_patients`: the labelled training patients sorted by name, permuted with
``numpy.random.default_rng(seed)``, the first ``n`` of the permutation. For one seed the choices
are nested (the 5 patients of ``hybrid_5`` are among the 10 of ``hybrid_10``), and ``hybrid_n``
and ``full_n`` with the same seed use the same patients, as the paper's Table 2 compares them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wss_monai.data.prepared import PRIMARY, SPLITS, UNANNOTATED, DatasetError, PreparedDataset, choose_full_patients

__all__ = [
    "DatasetError",
    "PRIMARY",
    "SPLITS",
    "UNANNOTATED",
    "build_datalist",
    "choose_full_patients",
    "class_names",
    "full_patients",
    "read_dataset_json",
    "training_patients",
    "volume_ids",
    "volume_spacing_3d",
]


def read_dataset_json(dataset_dir: str | Path) -> dict:
    """The parsed ``dataset.json`` of a prepared dataset (clear error if missing or not JSON)."""
    return PreparedDataset(dataset_dir).manifest


def class_names(dataset_dir: str | Path) -> dict[int, str]:
    """``{0: "background", 1: "left ventricle", ...}`` from ``dataset.json["labels"]``."""
    return PreparedDataset(dataset_dir).class_names


def volume_ids(dataset_dir: str | Path) -> dict[str, int]:
    """A stable integer id per volume: the sorted volume names of the whole dataset -> 0, 1, ..."""
    return PreparedDataset(dataset_dir).volume_ids


def volume_spacing_3d(dataset_dir: str | Path) -> dict[str, tuple[float, float, float]]:
    """Per volume, the voxel spacing in mm as (row, column, slice distance) of the prepared slices."""
    return PreparedDataset(dataset_dir).volume_spacing


def training_patients(dataset_dir: str | Path) -> list[str]:
    """The patients of the training split, sorted by name."""
    return PreparedDataset(dataset_dir).patients("training")


def full_patients(dataset_dir: str | Path, n: int, seed: int = 0) -> list[str]:
    """The ``n`` fully annotated training patients of ``dataset_dir`` (log it with the run)."""
    return PreparedDataset(dataset_dir).full_patient_names(n, seed)


def build_datalist(dataset_dir: str | Path, split: str, *, weak: str | None = "erosion", **kwargs: Any) -> list[dict[str, Any]]:
    """The samples of one split (:meth:`PreparedDataset.datalist`)."""
    return PreparedDataset(dataset_dir).datalist(split, weak=weak, **kwargs)
