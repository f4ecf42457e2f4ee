"""Batch samplers for slices, whole volumes and hybrid (full + weak) batches.

Every sampler here is a ``torch.utils.data.Sampler`` of batches (pass it as ``batch_sampler``)
and yields lists of :data:`SampleRef` ``(index, sample_seed, scale_seed)``: the dataset index
plus the seeds of that sample's augmentation. Seeds are derived from ``(seed, epoch, ...)`` in
the main process, so a run is reproducible whatever ``num_workers`` and whichever worker loads
a sample.

Epochs: each ``iter()`` uses the current epoch and then advances it; :meth:`set_epoch` sets it
explicitly (as with ``DistributedSampler``). Two samplers built with the same arguments give the
same batches, epoch after epoch.

Distributed data parallel: ``rank``/``world_size`` shard the epoch's order - slices, whole
volumes, or the full and weak pools separately - disjointly over the ranks. With
``drop_uneven=True`` (training) the tail that does not divide evenly is left out of that epoch
(a different tail each shuffled epoch) so every rank runs the same number of batches, as DDP
needs; with ``False`` (evaluation) every sample is served exactly once over the ranks.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["SampleRef", "derive_seed", "SliceBatchSampler", "VolumeBatchSampler", "HybridBatchSampler"]

#: (dataset index, seed of the sample's augmentation, seed of its zoom)
SampleRef = tuple[int, int, int]

_SAMPLE, _VOLUME_SCALE, _VOLUME = 0, 1, 2  # seed domains


def derive_seed(*words: int) -> int:
    """A 32-bit seed from non-negative integers (``numpy.random.SeedSequence``)."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(1)[0])


def _check_int(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


class _EpochBatchSampler(Sampler):
    """Epoch counter, rank sharding and augmentation seeds shared by the samplers."""

    def __init__(
        self,
        volumes: Sequence[int],
        *,
        shuffle: bool,
        seed: int,
        rank: int,
        world_size: int,
        drop_uneven: bool,
        volume_scale: bool,
    ) -> None:
        self.volumes = np.asarray(volumes, dtype=np.int64)
        self.shuffle = bool(shuffle)
        self.seed = _check_int("seed", seed, 0)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank must be < world_size ({self.world_size}), got {self.rank}")
        self.drop_uneven = bool(drop_uneven)
        self.volume_scale = bool(volume_scale)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next ``iter()`` (order and augmentation seeds depend on it)."""
        self.epoch = _check_int("epoch", epoch, 0)

    def _rng(self, epoch: int, stream: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, stream])

    def _shard(self, items: np.ndarray) -> np.ndarray:
        if self.world_size == 1:
            return items
        stop = len(items) // self.world_size * self.world_size if self.drop_uneven else len(items)
        return items[self.rank : stop : self.world_size]

    def _shard_len(self, n: int) -> int:
        if self.world_size == 1:
            return n
        if self.drop_uneven:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def _ref(self, index: int, epoch: int) -> SampleRef:
        sample = derive_seed(self.seed, epoch, _SAMPLE, index)
        scale = derive_seed(self.seed, epoch, _VOLUME_SCALE, int(self.volumes[index])) if self.volume_scale else sample
        return (int(index), sample, scale)

    def _batches(self, epoch: int) -> list[list[int]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[SampleRef]]:
        epoch = self.epoch
        self.epoch += 1
        for batch in self._batches(epoch):
            yield [self._ref(i, epoch) for i in batch]


def _chunks(order: Sequence[int], size: int, drop_last: bool) -> list[list[int]]:
    batches = [list(map(int, order[i : i + size])) for i in range(0, len(order), size)]
    if drop_last and batches and len(batches[-1]) < size:
        batches.pop()
    return batches


class SliceBatchSampler(_EpochBatchSampler):
    """Batches of ``batch_size`` slices, reshuffled every epoch (or in dataset order).

    Args:
        volumes: (N,) volume id of every dataset index (for per-volume zoom seeds).
        batch_size: slices per batch (the last batch may be smaller unless ``drop_last``).
        shuffle: a new permutation every epoch from ``(seed, epoch)``.
        volume_scale: draw the zoom of every slice of a volume from one seed per epoch, so
            per-volume bounds (rule ``volume3d``) stay identical across its slices.
    """

    def __init__(
        self,
        volumes: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        drop_uneven: bool = True,
        volume_scale: bool = False,
    ) -> None:
        super().__init__(volumes, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, drop_uneven=drop_uneven, volume_scale=volume_scale)
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.drop_last = bool(drop_last)

    def _batches(self, epoch: int) -> list[list[int]]:
        n = len(self.volumes)
        order = self._rng(epoch).permutation(n) if self.shuffle else np.arange(n)
        return _chunks(self._shard(order), self.batch_size, self.drop_last)

    def __len__(self) -> int:
        n = self._shard_len(len(self.volumes))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


class VolumeBatchSampler(_EpochBatchSampler):
    """One batch = every slice of one volume (the 3D regime, MedIA 2019 sec. 4.4).

    Volumes are visited once per epoch, in a new order every epoch when ``shuffle``; within a
    batch the slices keep the dataset order (sorted by slice). DDP shards whole volumes. All
    slices of a volume share one augmentation seed (same flips, rotation and zoom: a consistent
    in-plane transform of the volume, and identical per-volume bounds).

    Args:
        volumes: (N,) volume id of every dataset index.
    """

    def __init__(
        self,
        volumes: Sequence[int],
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_uneven: bool = True,
    ) -> None:
        super().__init__(volumes, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, drop_uneven=drop_uneven, volume_scale=True)
        self.ids = np.unique(self.volumes)
        self.groups = {int(v): np.flatnonzero(self.volumes == v).tolist() for v in self.ids}

    def _ref(self, index: int, epoch: int) -> SampleRef:
        seed = derive_seed(self.seed, epoch, _VOLUME, int(self.volumes[index]))
        return (int(index), seed, seed)

    def _batches(self, epoch: int) -> list[list[int]]:
        order = self.ids[self._rng(epoch).permutation(len(self.ids))] if self.shuffle else self.ids
        return [list(self.groups[int(v)]) for v in self._shard(order)]

    def __len__(self) -> int:
        return self._shard_len(len(self.ids))


def spread(full: Sequence[int], weak: Sequence[int], offset: float = 0.0) -> list[int]:
    """Merge two orders so that the ``full`` items are evenly spaced among the ``weak`` ones.

    The j-th full item goes to position ``floor((j + offset) * n / n_full)`` of the ``n`` slots:
    every run of B consecutive slots holds ``B * n_full / n`` full items, rounded down or up.
    """
    nf, n = len(full), len(full) + len(weak)
    if nf == 0:
        return [int(i) for i in weak]
    positions = np.floor((np.arange(nf) + float(offset)) * n / nf).astype(np.int64)
    is_full = np.zeros(n, dtype=bool)
    is_full[positions] = True
    out = np.empty(n, dtype=np.int64)
    out[is_full] = np.asarray(full, dtype=np.int64)
    out[~is_full] = np.asarray(weak, dtype=np.int64)
    return out.tolist()


class HybridBatchSampler(_EpochBatchSampler):
    """Batches that mix fully annotated and weakly annotated slices (MedIA 2019 sec. 4.3.3).

    The paper replaces n of the m weak training images by their full counterparts and trains
    on all m: full CE on the n, constrained partial CE on the m - n. It states no oversampling,
    so by default (``full_share=None``) an epoch visits every slice exactly once, and the full
    slices are spread evenly over the epoch's batches (each batch holds the epoch's share of
    full slices, rounded down or up) instead of clumping by chance: both kinds meet in the same
    batches wherever the share allows it.

    ``full_share=f`` (0 < f < 1) oversamples instead: every batch holds ``max(1, round(f * B))``
    full slices (drawn from reshuffled passes over the full pool, repeated as needed) and the
    rest weak; an epoch is one pass over the weak slices.

    Args:
        full: (N,) whether each dataset index is fully annotated.
        volumes: (N,) volume id of every index (per-volume zoom seeds).
        batch_size: slices per batch.
    """

    def __init__(
        self,
        full: Sequence[bool],
        volumes: Sequence[int],
        batch_size: int,
        *,
        full_share: float | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        drop_uneven: bool = True,
        volume_scale: bool = False,
    ) -> None:
        super().__init__(volumes, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size, drop_uneven=drop_uneven, volume_scale=volume_scale)
        self.full = np.asarray(full, dtype=bool)
        if self.full.shape != self.volumes.shape:
            raise ValueError(f"full ({self.full.shape}) and volumes ({self.volumes.shape}) must have one item per index")
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.drop_last = bool(drop_last)
        self.full_idx = np.flatnonzero(self.full)
        self.weak_idx = np.flatnonzero(~self.full)
        self.full_share = None if full_share is None else float(full_share)
        self.per_batch = 0
        if self.full_share is not None:
            if not 0.0 < self.full_share < 1.0:
                raise ValueError(f"full_share must lie in (0, 1) (share of each batch that is fully annotated), got {full_share}")
            self.per_batch = max(1, round(self.full_share * self.batch_size)) if len(self.full_idx) else 0
            if self.per_batch >= self.batch_size and len(self.weak_idx):
                raise ValueError(
                    f"full_share={full_share} with batch_size={batch_size} leaves no room for weak slices; use a larger batch or a smaller share"
                )

    @property
    def oversampling(self) -> bool:
        return self.per_batch > 0 and len(self.weak_idx) > 0

    def _batches(self, epoch: int) -> list[list[int]]:
        rng = self._rng(epoch)
        full = rng.permutation(self.full_idx) if self.shuffle else self.full_idx
        weak = rng.permutation(self.weak_idx) if self.shuffle else self.weak_idx
        offset = rng.uniform() if self.shuffle else 0.0
        weak = self._shard(weak)
        if not self.oversampling:
            return _chunks(spread(self._shard(full), weak, offset), self.batch_size, self.drop_last)
        pool = self._shard(full)
        if len(pool) == 0:  # fewer full slices than ranks: every rank draws from all of them
            pool = full
        n_weak = self.batch_size - self.per_batch
        batches, stream, pass_number = [], [], 0
        for start in range(0, len(weak), n_weak):
            chunk = weak[start : start + n_weak]
            if self.drop_last and len(chunk) < n_weak:
                break
            while len(stream) < self.per_batch:
                extra = self._rng(epoch, 1 + pass_number).permutation(pool) if self.shuffle else pool
                stream.extend(int(i) for i in extra)
                pass_number += 1
            picked, stream = stream[: self.per_batch], stream[self.per_batch :]
            batches.append(spread(picked, chunk, 0.5))
        return batches

    def __len__(self) -> int:
        n_weak = self._shard_len(len(self.weak_idx))
        if not self.oversampling:
            n = n_weak + self._shard_len(len(self.full_idx))
            return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        per = self.batch_size - self.per_batch
        return n_weak // per if self.drop_last else math.ceil(n_weak / per)
