"""The data layer of the training workflows: a prepared dataset's splits as MONAI batches.

:class:`PreparedDataset` reads a prepared dataset's contract once; ``make_dataloader(dataset,
split, ...)`` is what the bundles call (batch format in
:mod:`wss_monai.data.loaders`); ``class_names``, ``volume_ids`` and ``volume_spacing_3d`` give
the evaluator the class names, volume ids and (row, column, slice) spacing of each volume.

The names below are imported on first use (PEP 562): ``python -m data_prep verify`` reads
:mod:`wss_monai.data.prepared` and :mod:`wss_monai.data.verify` without importing torch and
MONAI, which the loaders and transforms need (seconds of start-up for a command that needs none).
"""

from __future__ import annotations

import importlib

#: exported name -> the module defining it
_EXPORTS = {
    **dict.fromkeys(
        ("DatasetError", "build_datalist", "choose_full_patients", "class_names", "full_patients", "read_dataset_json",
         "training_patients", "volume_ids", "volume_spacing_3d"),
        "wss_monai.data.datalist",
    ),
    **dict.fromkeys(("SAMPLINGS", "WeakSliceDataset", "default_transform", "make_dataloader"), "wss_monai.data.loaders"),
    "PreparedDataset": "wss_monai.data.prepared",
    "PrefetchLoader": "wss_monai.data.prefetch",
    **dict.fromkeys(("HybridBatchSampler", "SliceBatchSampler", "VolumeBatchSampler"), "wss_monai.data.samplers"),
    **dict.fromkeys(("AugmentParams", "FormatSampled", "LoadSliced", "RandWeakAffined", "SizeBoundsd", "scale_bounds"),
                    "wss_monai.data.transforms"),
}
_SUBMODULES = ("datalist", "loaders", "prefetch", "prepared", "samplers", "transforms", "verify")

__all__ = [
    "PreparedDataset",
    "make_dataloader",
    "PrefetchLoader",
    "default_transform",
    "class_names",
    "volume_ids",
    "volume_spacing_3d",
    "full_patients",
    "choose_full_patients",
    "training_patients",
    "build_datalist",
    "read_dataset_json",
    "DatasetError",
    "WeakSliceDataset",
    "SAMPLINGS",
    "SliceBatchSampler",
    "VolumeBatchSampler",
    "HybridBatchSampler",
    "LoadSliced",
    "SizeBoundsd",
    "RandWeakAffined",
    "AugmentParams",
    "FormatSampled",
    "scale_bounds",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
