"""The data layer of the training workflows: a prepared dataset's splits as MONAI batches.

:class:`PreparedDataset` reads a prepared dataset's contract once; ``make_dataloader(dataset,
split, ...)`` is what the bundles call (batch format in
:mod:`wss_monai.data.loaders`); ``class_names``, ``volume_ids`` and ``volume_spacing_3d`` give
the evaluator the class names, volume ids and (row, column, slice) spacing of each volume.
"""

from wss_monai.data.datalist import (
    DatasetError,
    build_datalist,
    choose_full_patients,
    class_names,
    full_patients,
    read_dataset_json,
    training_patients,
    volume_ids,
    volume_spacing_3d,
)
from wss_monai.data.loaders import SAMPLINGS, WeakSliceDataset, default_transform, make_dataloader
from wss_monai.data.prepared import PreparedDataset
from wss_monai.data.samplers import HybridBatchSampler, SliceBatchSampler, VolumeBatchSampler
from wss_monai.data.transforms import AugmentParams, FormatSampled, LoadSliced, RandWeakAffined, SizeBoundsd, scale_bounds

__all__ = [
    "PreparedDataset",
    "make_dataloader",
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
