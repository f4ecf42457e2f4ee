"""Batch samplers: slices, whole volumes, hybrid mixing, epochs, seeds and DDP sharding (no files)."""

import numpy as np
import pytest

from wss_monai.data.samplers import HybridBatchSampler, SliceBatchSampler, VolumeBatchSampler, spread

# 5 volumes of 3..7 slices, indices sorted by (volume, slice) as the datalist is
VOLUMES = [v for v, n in enumerate([3, 5, 7, 4, 6]) for _ in range(n)]


def indices(batches):
    return [[ref[0] for ref in batch] for batch in batches]


def flat(batches):
    return [i for batch in indices(batches) for i in batch]


def test_slice_sampler_covers_every_slice_once_per_epoch_in_a_new_order():
    sampler = SliceBatchSampler(VOLUMES, batch_size=4, seed=3)
    first, second = list(sampler), list(sampler)
    assert len(first) == len(sampler) == 7  # ceil(25 / 4)
    assert sorted(flat(first)) == sorted(flat(second)) == list(range(len(VOLUMES)))
    assert flat(first) != flat(second)  # reshuffled every epoch


def test_same_seed_same_batches_and_augmentation_seeds_every_epoch():
    a, b = SliceBatchSampler(VOLUMES, 4, seed=7), SliceBatchSampler(VOLUMES, 4, seed=7)
    for _ in range(3):
        assert list(a) == list(b)  # indices and seeds
    other = SliceBatchSampler(VOLUMES, 4, seed=8)
    assert flat(list(other)) != flat(list(SliceBatchSampler(VOLUMES, 4, seed=7)))


def test_set_epoch_replays_an_epoch():
    sampler = SliceBatchSampler(VOLUMES, 4, seed=1)
    epochs = [list(sampler) for _ in range(3)]
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1]
    assert list(sampler) == epochs[2]  # and advances


def test_unshuffled_sampler_keeps_dataset_order():
    assert flat(list(SliceBatchSampler(VOLUMES, 10, shuffle=False))) == list(range(len(VOLUMES)))


def test_volume_scale_gives_every_slice_of_a_volume_one_zoom_seed():
    refs = [ref for batch in SliceBatchSampler(VOLUMES, 5, seed=0, volume_scale=True) for ref in batch]
    zoom_seeds = {}
    for index, sample_seed, scale_seed in refs:
        zoom_seeds.setdefault(VOLUMES[index], set()).add(scale_seed)
    assert all(len(s) == 1 for s in zoom_seeds.values())
    assert len({s for (_, s, _) in refs}) == len(refs)  # flips/rotation still per slice


def test_volume_sampler_one_batch_is_exactly_one_volume_and_every_volume_comes_once():
    sampler = VolumeBatchSampler(VOLUMES, seed=0)
    for _ in range(2):
        batches = list(sampler)
        assert len(batches) == len(sampler) == 5
        seen = []
        for batch in indices(batches):
            (volume,) = {VOLUMES[i] for i in batch}
            assert batch == [i for i, v in enumerate(VOLUMES) if v == volume]  # all its slices, in order
            seen.append(volume)
        assert sorted(seen) == [0, 1, 2, 3, 4]
    orders = {tuple(VOLUMES[b[0]] for b in indices(list(sampler))) for _ in range(6)}
    assert len(orders) > 1  # volumes reshuffled per epoch


def test_volume_sampler_gives_all_slices_of_a_volume_the_same_augmentation_seeds():
    for batch in VolumeBatchSampler(VOLUMES, seed=0):
        assert len({(s, z) for (_, s, z) in batch}) == 1


def test_distributed_slices_are_disjoint_and_equal_per_rank():
    shards = [list(SliceBatchSampler(VOLUMES, 3, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    a, b = flat(shards[0]), flat(shards[1])
    assert not set(a) & set(b)
    assert len(a) == len(b) == 12  # 25 // 2: the odd one left out of this epoch
    assert len(shards[0]) == len(shards[1]) == len(SliceBatchSampler(VOLUMES, 3, rank=1, world_size=2))


def test_distributed_evaluation_serves_every_slice_once():
    shards = [flat(list(SliceBatchSampler(VOLUMES, 3, shuffle=False, rank=r, world_size=2, drop_uneven=False))) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(len(VOLUMES)))


def test_distributed_volumes_are_disjoint_whole_volumes():
    shards = [indices(list(VolumeBatchSampler(VOLUMES, seed=2, rank=r, world_size=2, drop_uneven=False))) for r in (0, 1)]
    volumes = [{VOLUMES[b[0]] for b in shard} for shard in shards]
    assert not volumes[0] & volumes[1] and volumes[0] | volumes[1] == {0, 1, 2, 3, 4}
    training = [VolumeBatchSampler(VOLUMES, seed=2, rank=r, world_size=2) for r in (0, 1)]
    assert len(list(training[0])) == len(list(training[1])) == 2  # same number of steps on every rank


def test_spread_places_full_items_evenly():
    order = spread(full=[100, 101, 102], weak=list(range(9)), offset=0.0)
    assert sorted(order) == list(range(9)) + [100, 101, 102]
    per_batch = [sum(i >= 100 for i in order[k : k + 4]) for k in range(0, 12, 4)]
    assert per_batch == [1, 1, 1]


FULL = [v in (1, 3) for v in VOLUMES]  # 9 full slices of 25


@pytest.mark.parametrize("seed", range(5))
def test_hybrid_sampler_visits_every_slice_once_and_mixes_every_batch(seed):
    sampler = HybridBatchSampler(FULL, VOLUMES, batch_size=4, seed=seed)
    batches = indices(list(sampler))
    assert sorted(i for b in batches for i in b) == list(range(len(VOLUMES)))
    share = 9 / 25 * 4
    for batch in batches[:-1]:
        n_full = sum(FULL[i] for i in batch)
        assert np.floor(share) <= n_full <= np.ceil(share)  # the epoch's share, rounded down or up
        assert 0 < n_full < 4  # both kinds in every full-sized batch


def test_hybrid_sampler_with_a_full_share_oversamples_the_full_slices():
    sampler = HybridBatchSampler(FULL, VOLUMES, batch_size=4, full_share=0.5, seed=0)
    batches = indices(list(sampler))
    weak = [i for b in batches for i in b if not FULL[i]]
    assert sorted(weak) == [i for i, f in enumerate(FULL) if not f]  # one pass over the weak slices
    assert all(sum(FULL[i] for i in b) == 2 for b in batches)
    assert len(batches) == len(sampler) == 8 and sum(len(b) for b in batches) > len(VOLUMES)


def test_hybrid_sampler_shards_both_pools_disjointly():
    shards = [indices(list(HybridBatchSampler(FULL, VOLUMES, 4, seed=0, rank=r, world_size=2))) for r in (0, 1)]
    a, b = ({i for batch in s for i in batch} for s in shards)
    assert not a & b and len(shards[0]) == len(shards[1])


def test_sampler_arguments_are_checked():
    with pytest.raises(ValueError, match="batch_size"):
        SliceBatchSampler(VOLUMES, 0)
    with pytest.raises(ValueError, match="rank"):
        SliceBatchSampler(VOLUMES, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="full_share"):
        HybridBatchSampler(FULL, VOLUMES, 4, full_share=1.0)
    with pytest.raises(ValueError, match="no room"):
        HybridBatchSampler(FULL, VOLUMES, 1, full_share=0.5)
