"""``make_dataloader``: a prepared dataset's split as batches for training and evaluation.

Every batch is a dict (B = samples in the batch, C = classes incl. background)::

    image        float32 (B, 1, H, W)
    weak         int64   (B, H, W)   class index on annotated pixels, 255 elsewhere
    label        int64   (B, H, W)   full mask where loaded (has_label), 255 elsewhere
    has_label    bool    (B,)        the full mask was read for this sample
    full         bool    (B,)        fully annotated sample (full CE in hybrid/full regimes)
    bounds       float32 (B, C, 2)   (lower, upper) size in pixels; background (0, inf)
    volume       int64   (B,)        volume id (sorted volume names of the whole dataset)
    slice        int64   (B,)        slice index in its volume
    spacing      float32 (B, 2)      in-plane pixel size in mm (row, col), after any zoom
    affine       float64 (B, 4, 4)   the slice file's affine (before augmentation)
    patient, volume_name, image_path: lists of str

The deterministic part (reading files, bounds) is cached with MONAI's ``CacheDataset``; the
augmentation runs per sample from seeds the batch sampler derives from ``(seed, epoch, sample)``,
so the same seed gives the same batches and augmentations whatever ``num_workers``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, list_data_collate
from monai.transforms import Compose
from torch.utils.data import DataLoader

from wss_monai.data.prepared import PreparedDataset
from wss_monai.data.samplers import HybridBatchSampler, SliceBatchSampler, VolumeBatchSampler
from wss_monai.data.transforms import FormatSampled, LoadSliced, RandWeakAffined, SizeBoundsd

__all__ = ["make_dataloader", "WeakSliceDataset", "SAMPLINGS", "default_transform"]

SAMPLINGS = ("slices", "volume", "hybrid")


def _unwrap(error: BaseException) -> BaseException:
    """The original error inside MONAI's "applying transform ..." RuntimeError wrappers."""
    while isinstance(error, RuntimeError) and str(error).startswith("applying transform") and error.__cause__ is not None:
        error = error.__cause__
    return error


def default_transform(num_classes: int) -> Compose:
    """The deterministic steps of every sample (what ``train.json``'s ``preprocessing`` spells out):
    read the slice, its weak labels and mask (:class:`LoadSliced`), then its bounds as (C, 2)
    (:class:`SizeBoundsd`)."""
    return Compose([LoadSliced(image_key="image", label_keys=("weak", "label")), SizeBoundsd(keys="bounds", num_classes=num_classes)])


class WeakSliceDataset(torch.utils.data.Dataset):
    """Samples of one split: cached loading, then the seeded augmentation, then batch dtypes.

    ``transform`` (default :func:`default_transform`) runs once per sample and is cached; it must
    be deterministic. ``dataset[i]`` gives sample ``i`` unaugmented; ``dataset[(i, sample_seed, scale_seed)]``
    (what the batch samplers yield) augments it with flips/rotation drawn from
    ``sample_seed`` and the zoom drawn from ``scale_seed``.

    Attributes:
        samples: the datalist (:func:`wss_monai.data.datalist.build_datalist`).
        class_names: ``{0: "background", ...}``.
        full_patients: the fully annotated training patients chosen for this loader (sorted).
    """

    def __init__(
        self,
        samples: Sequence[dict],
        num_classes: int,
        *,
        augment: RandWeakAffined | None = None,
        transform: Any = None,
        cache: bool = True,
        cache_workers: int | None = 1,
    ) -> None:
        self.samples = list(samples)
        deterministic = default_transform(num_classes) if transform is None else transform
        data = [dict(s, image_path=s["image"]) for s in self.samples]
        try:
            if cache:
                # no random transform in it: CacheDataset returns the cached dict itself, which
                # the steps below copy (a new dict) and never modify in place.
                self.base = CacheDataset(data, deterministic, num_workers=cache_workers, progress=False, copy_cache=False)
            else:
                self.base = Dataset(data, deterministic)
        except RuntimeError as error:
            raise _unwrap(error) from None
        self.augment = augment
        self.format = FormatSampled(image_key="image", label_keys=("weak", "label"))
        self.class_names: dict[int, str] = {}
        self.full_patients: list[str] = []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, ref: Any) -> dict:
        if isinstance(ref, (tuple, list)):
            index, sample_seed, scale_seed = ref
        else:
            index, sample_seed, scale_seed = int(ref), None, None
        try:
            item = dict(self.base[index])
        except RuntimeError as error:  # a file that cannot be read: its own message, naming it
            raise _unwrap(error) from None
        if self.augment is not None and sample_seed is not None:
            square = item["image"].shape[-2] == item["image"].shape[-1]
            self.augment.set_random_state(seed=int(sample_seed))
            params = self.augment.draw(square)
            if scale_seed is not None and scale_seed != sample_seed:
                self.augment.set_random_state(seed=int(scale_seed))
                zoom = self.augment.draw(square).scale
                params = type(params)(params.flip_rows, params.flip_cols, params.quarter_turns, params.angle, zoom)
            item = self.augment.apply(item, params)
        return self.format(item)


def _augmenter(augment: bool | Mapping | RandWeakAffined) -> RandWeakAffined | None:
    if augment is False or augment is None:
        return None
    if augment is True:
        return RandWeakAffined()
    if isinstance(augment, RandWeakAffined):
        return augment
    if isinstance(augment, Mapping):
        return RandWeakAffined(**dict(augment))
    raise TypeError(f"augment must be a bool, a dict of RandWeakAffined arguments or a RandWeakAffined, got {type(augment).__name__}")


def _rank_world(distributed: bool, rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise ValueError("pass both rank and world_size (or neither, to read them from torch.distributed)")
        return int(rank), int(world_size)
    if not distributed:
        return 0, 1
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("distributed=True needs an initialised torch.distributed process group (or explicit rank and world_size)")
    return dist.get_rank(), dist.get_world_size()


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator: derive numpy's and random's from it,
    # for any third-party randomness (ours comes from the sampler's seeds).
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_dataloader(
    dataset_dir: str | Path | PreparedDataset,
    split: str,
    *,
    weak: str | None = "erosion",
    bounds: str | None = None,
    sampling: str = "slices",
    full_patients: int = 0,
    full: bool = False,
    batch_size: int = 8,
    augment: bool | Mapping | RandWeakAffined | None = False,
    transform: Any = None,
    shuffle: bool | None = None,
    num_workers: int = 0,
    seed: int = 0,
    cache: bool = True,
    distributed: bool = False,
    load_labels: bool | None = None,
    full_share: float | None = None,
    drop_last: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> DataLoader:
    """A ``DataLoader`` over one split of a prepared dataset (batch format: module docstring).

    Args:
        dataset_dir: a prepared dataset (:class:`PreparedDataset`, or its folder).
        split: ``"training"``, ``"validation"`` or ``"test"``.
        weak: weak-label strategy (an entry's ``"weak"`` key), ``"primary"`` for the dataset's
            primary one, or ``None`` for all-255 weak labels (regime ``full``).
        bounds: bound rule (``"tags"``, ``"upper"``, ``"common"``, ``"individual"``,
            ``"volume3d"``) or ``None`` for (0, inf) everywhere.
        sampling: ``"slices"`` (batches of shuffled slices), ``"volume"`` (one batch = all slices
            of one volume, ``batch_size`` ignored) or ``"hybrid"`` (full and weak slices spread
            evenly over the batches, see :class:`HybridBatchSampler`).
        full_patients: n > 0: n training patients are fully annotated (sorted names permuted by
            ``seed``, the first n: :func:`~wss_monai.data.datalist.choose_full_patients`).
        full: every sample is fully annotated; with ``full_patients`` > 0 the training split keeps
            only those patients (regime ``full_<n>``).
        batch_size: slices per batch (``"slices"``, ``"hybrid"``).
        augment: training only (no effect on validation/test): ``True`` for the default
            :class:`RandWeakAffined` (flips, rotation, zoom with bounds scaled by s^2), a dict of
            its arguments, or an instance (``train.json``'s ``train#augmentation``).
        transform: the cached deterministic steps (default :func:`default_transform`;
            ``train.json``'s ``train#preprocessing``).
        shuffle: default ``True`` for training, ``False`` otherwise.
        num_workers: DataLoader worker processes (results do not depend on it).
        seed: order, augmentation and full-patient choice.
        cache: cache the loaded slices in memory (``CacheDataset``).
        distributed: shard over the ranks of ``torch.distributed`` (or ``rank``/``world_size``).
        load_labels: default: labels of validation/test samples and of fully annotated
            training samples only; ``True``: every sample (reads weak samples' full masks);
            ``False``: none.
        full_share: ``"hybrid"`` only: a share of every batch given to full slices, oversampled
            (default ``None``: the paper's plain mix, each slice once per epoch).
        drop_last: drop the last incomplete batch (``"slices"``, ``"hybrid"``).
        rank, world_size: explicit DDP shard (overrides ``torch.distributed``).
        pin_memory, persistent_workers: passed to ``DataLoader``.

    Returns:
        A ``DataLoader`` whose ``batch_sampler`` has ``set_epoch`` and whose ``dataset`` is a
        :class:`WeakSliceDataset` (``.samples``, ``.class_names``, ``.full_patients``).

    Example:
        >>> loader = make_dataloader("prepared", "training", weak="erosion", bounds="individual", batch_size=4)  # doctest: +SKIP
        >>> batch = next(iter(loader)); batch["weak"].shape  # doctest: +SKIP
        torch.Size([4, 256, 256])
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    if full_share is not None and sampling != "hybrid":
        raise ValueError("full_share applies to sampling='hybrid' only")
    training = split == "training"
    shuffle = training if shuffle is None else bool(shuffle)
    prepared = dataset_dir if isinstance(dataset_dir, PreparedDataset) else PreparedDataset(dataset_dir)
    samples = prepared.datalist(split, weak=weak, bounds=bounds, full_patients=full_patients, full=full, seed=seed, load_labels=load_labels)
    if not samples:
        raise ValueError(f"{prepared.path}: the {split!r} split has no samples")
    augmenter = _augmenter(augment) if training else None
    dataset = WeakSliceDataset(samples, prepared.num_classes, augment=augmenter, transform=transform, cache=cache,
                               cache_workers=max(1, int(num_workers)))
    dataset.class_names = dict(prepared.class_names)
    if full_patients and training:
        dataset.full_patients = prepared.full_patient_names(full_patients, seed)

    rank_, world = _rank_world(distributed, rank, world_size)
    volumes = [s["volume"] for s in samples]
    common = dict(shuffle=shuffle, seed=seed, rank=rank_, world_size=world, drop_uneven=training)
    volume_scale = bounds == "volume3d"  # per-volume bounds must stay identical across a volume's slices
    if sampling == "volume":
        batch_sampler = VolumeBatchSampler(volumes, **common)
    elif sampling == "hybrid":
        batch_sampler = HybridBatchSampler(
            [s["full"] for s in samples], volumes, batch_size, full_share=full_share, drop_last=drop_last, volume_scale=volume_scale, **common
        )
    else:
        batch_sampler = SliceBatchSampler(volumes, batch_size, drop_last=drop_last, volume_scale=volume_scale, **common)

    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=int(num_workers),
        collate_fn=list_data_collate,
        worker_init_fn=_worker_init if num_workers else None,
        generator=generator,
        pin_memory=pin_memory,
        persistent_workers=bool(persistent_workers and num_workers),
    )
