"""make_dataloader, the call the training engine makes: batch format, weak-regime guarantee, regimes.

Batch contract: image float32 (B, 1, H, W); weak int64 (B, H, W) with 255 = unannotated; label
int64 (B, H, W), the full mask only where loaded, 255 elsewhere; full bool (B,); bounds float32
(B, C, 2) with background (0, inf); volume, slice int64 (B,); spacing float32 (B, 2);
patient, volume_name lists of str.
"""

import math

import numpy as np
import pytest
import torch

from wss_monai.data import class_names, full_patients, make_dataloader, volume_ids


def epoch(loader):
    return list(loader)


def by_key(manifest, split):
    return {(e["volume"], e["slice"]): e for e in manifest[split]}


def test_training_batch_keys_shapes_and_dtypes(prepared_acdc, manifest):
    loader = make_dataloader(prepared_acdc, "training", weak="erosion", bounds="individual", batch_size=4, seed=0)
    batch = next(iter(loader))
    h, w = manifest["size"]
    c = len(class_names(prepared_acdc))
    expected = {
        "image": ((4, 1, h, w), torch.float32),
        "weak": ((4, h, w), torch.int64),
        "label": ((4, h, w), torch.int64),
        "full": ((4,), torch.bool),
        "bounds": ((4, c, 2), torch.float32),
        "volume": ((4,), torch.int64),
        "slice": ((4,), torch.int64),
        "spacing": ((4, 2), torch.float32),
    }
    for key, (shape, dtype) in expected.items():
        assert tuple(batch[key].shape) == shape and batch[key].dtype == dtype, key
    assert isinstance(batch["patient"], list) and isinstance(batch["volume_name"], list) and len(batch["patient"]) == 4
    ids = volume_ids(prepared_acdc)
    assert batch["volume"].tolist() == [ids[name] for name in batch["volume_name"]]
    assert (batch["label"] == 255).all() and not batch["full"].any()  # weak regime: no full mask
    assert set(batch["weak"].unique().tolist()) <= {0, 1, 255} and (batch["weak"] == 255).any()


def test_bounds_rows_match_dataset_json_with_an_unconstrained_background(prepared_acdc, manifest):
    entries = by_key(manifest, "training")
    for rule in ("common", "individual", "volume3d"):
        for batch in make_dataloader(prepared_acdc, "training", weak="erosion", bounds=rule, batch_size=16, shuffle=False):
            assert batch["bounds"][:, 0].tolist() == [[0.0, math.inf]] * len(batch["slice"])
            for row, name, index in zip(batch["bounds"][:, 1:], batch["volume_name"], batch["slice"].tolist()):
                entry = entries[(name, index)]
                assert torch.allclose(row, torch.tensor(entry["bounds"][rule], dtype=torch.float32))
                assert batch["spacing"].dtype == torch.float32
    unconstrained = next(iter(make_dataloader(prepared_acdc, "training", bounds=None, batch_size=3)))
    assert torch.isinf(unconstrained["bounds"][..., 1]).all() and (unconstrained["bounds"][..., 0] == 0).all()


def test_weak_labels_arrive_exactly_as_stored(prepared_acdc):
    import nibabel as nib

    batch = next(iter(make_dataloader(prepared_acdc, "training", weak="random_disc", batch_size=6, shuffle=False)))
    for weak, path in zip(batch["weak"], batch["image_path"]):
        stored = np.asanyarray(nib.load(path.replace("/image/", "/weak/random_disc/").replace(".nii", ".nii.gz")).dataobj)
        assert np.array_equal(weak.numpy(), stored)


def test_validation_loads_labels_and_weak_none_gives_all_255(prepared_acdc):
    batch = next(iter(make_dataloader(prepared_acdc, "validation", weak=None, batch_size=8)))
    assert (batch["weak"] == 255).all()
    assert set(batch["label"].unique().tolist()) <= {0, 1} and (batch["label"] == 1).any()
    assert batch["has_label"].all() and not batch["full"].any()


def test_weak_training_never_reads_a_full_mask(copy_prepared, manifest):
    """Corrupt every training label file: a weak regime still loads; validation does read its labels."""
    root = copy_prepared()
    for entry in manifest["training"]:
        (root / entry["label"]).write_bytes(b"not a nifti")
    batches = epoch(make_dataloader(root, "training", weak="erosion", bounds="common", batch_size=8, augment=True, cache=False))
    assert sum(len(b["slice"]) for b in batches) == len(manifest["training"])
    assert all((b["label"] == 255).all() for b in batches)
    with pytest.raises(OSError, match="cannot read"):
        epoch(make_dataloader(root, "training", weak="erosion", full=True, batch_size=8, cache=False))


def test_hybrid_corrupted_weak_patients_still_load_and_full_flags_only_chosen_patients(copy_prepared, manifest):
    root = copy_prepared()
    chosen = full_patients(root, 1, seed=0)
    for entry in manifest["training"]:
        if entry["patient"] not in chosen:
            (root / entry["label"]).unlink()
    loader = make_dataloader(root, "training", weak="erosion", bounds="common", sampling="hybrid", full_patients=1, batch_size=4, seed=0)
    assert loader.dataset.full_patients == chosen
    batches = epoch(loader)
    assert sum(len(b["slice"]) for b in batches) == len(manifest["training"])
    for b in batches:
        is_chosen = torch.tensor([p in chosen for p in b["patient"]])
        assert torch.equal(b["full"], is_chosen)
        assert ((b["label"] != 255).all(dim=(1, 2)) == is_chosen).all()  # full masks exactly there
    mixed = [b for b in batches if b["full"].any() and not b["full"].all()]
    assert len(mixed) >= len(batches) - 1  # both kinds in (nearly) every batch


def test_full_n_keeps_only_the_chosen_patients(prepared_acdc):
    chosen = full_patients(prepared_acdc, 2, seed=5)
    batches = epoch(make_dataloader(prepared_acdc, "training", weak=None, full=True, full_patients=2, seed=5, batch_size=8))
    assert {p for b in batches for p in b["patient"]} == set(chosen)
    assert all(b["full"].all() and (b["label"] != 255).all() for b in batches)


def test_volume_sampling_each_batch_is_one_whole_volume_and_every_volume_comes_once(prepared_acdc, manifest):
    loader = make_dataloader(prepared_acdc, "training", weak="erosion", bounds="volume3d", sampling="volume", augment=True, seed=1)
    slices = {}
    for e in manifest["training"]:
        slices.setdefault(e["volume"], []).append(e["slice"])
    batches = epoch(loader)
    assert len(batches) == len(loader) == len(slices)
    seen = []
    for b in batches:
        (name,) = set(b["volume_name"])
        assert b["slice"].tolist() == sorted(slices[name])
        assert (b["bounds"] == b["bounds"][0]).all()  # per-volume bounds identical, also after a zoom
        seen.append(name)
    assert sorted(seen) == sorted(slices)


def test_volume_sampling_applies_one_transform_to_all_slices_of_a_volume(prepared_acdc):
    plain = {b["volume_name"][0]: b["image"] for b in make_dataloader(prepared_acdc, "training", sampling="volume", shuffle=False)}
    combos = {(r, c): [d for d, on in ((-2, r), (-1, c)) if on] for r in (False, True) for c in (False, True)}
    seen = set()
    for b in make_dataloader(prepared_acdc, "training", sampling="volume", augment={"rotate_prob": 0.0, "scale_prob": 0.0}, seed=3):
        original = plain[b["volume_name"][0]]
        per_slice = [{k for k, dims in combos.items() if torch.equal(img, torch.flip(orig, dims) if dims else orig)}
                     for img, orig in zip(b["image"], original)]
        common = set.intersection(*per_slice)
        assert common, "the slices of one volume were flipped differently"
        seen |= common
    zoom = {"flip_prob": 0.0, "rotate_prob": 0.0, "scale_prob": 1.0}
    for b in make_dataloader(prepared_acdc, "training", sampling="volume", augment=zoom, seed=3):
        assert (b["spacing"] == b["spacing"][0]).all()  # one zoom for the whole volume
    assert len(seen) > 1  # and volumes do get different flips


def test_zoom_augmentation_keeps_true_sizes_inside_the_scaled_individual_bounds(prepared_acdc, manifest):
    aug = dict(scale_prob=1.0, scale_range=(0.8, 1.2), rotate_prob=1.0, max_angle=15.0)
    loader = make_dataloader(prepared_acdc, "training", bounds="individual", augment=aug, batch_size=64, load_labels=True, seed=2)
    entries = by_key(manifest, "training")
    zoomed = 0
    for b in loader:
        for i, (name, index) in enumerate(zip(b["volume_name"], b["slice"].tolist())):
            lo, hi = entries[(name, index)]["bounds"]["individual"][0]
            factor = (entries[(name, index)]["spacing"][0] / b["spacing"][i, 0].item()) ** 2
            assert b["bounds"][i, 1].tolist() == pytest.approx([lo * factor, hi * factor], rel=1e-5)
            zoomed += abs(factor - 1) > 1e-3
            size = int((b["label"][i] == 1).sum())
            slack = 2 * math.sqrt(hi * factor) + 1  # nearest-neighbour resampling along the contour
            assert lo * factor - slack <= size <= hi * factor + slack, (name, index, size, lo * factor, hi * factor)
    assert zoomed > 10


def test_augmentation_keeps_255_and_only_affects_training(prepared_acdc):
    batch = next(iter(make_dataloader(prepared_acdc, "training", weak="erosion", batch_size=16, augment={"max_angle": 45.0, "rotate_prob": 1.0})))
    assert set(batch["weak"].unique().tolist()) <= {0, 1, 255} and (batch["weak"] == 1).any()
    assert (batch["label"] == 255).all()
    val_aug = next(iter(make_dataloader(prepared_acdc, "validation", augment=True, batch_size=4)))
    val = next(iter(make_dataloader(prepared_acdc, "validation", batch_size=4)))
    assert torch.equal(val_aug["image"], val["image"])


def test_same_seed_same_batches_and_augmentations_with_or_without_workers(prepared_acdc):
    kwargs = dict(weak="erosion", bounds="individual", batch_size=8, augment=True, seed=3)
    a = make_dataloader(prepared_acdc, "training", **kwargs)
    b = make_dataloader(prepared_acdc, "training", num_workers=2, cache=False, **kwargs)
    for _ in range(2):  # two epochs: reshuffled, and still identical
        for x, y in zip(epoch(a), epoch(b), strict=True):
            assert x["volume_name"] == y["volume_name"] and torch.equal(x["slice"], y["slice"])
            for key in ("image", "weak", "bounds", "spacing"):
                assert torch.equal(x[key], y[key]), key
    other = epoch(make_dataloader(prepared_acdc, "training", **dict(kwargs, seed=4)))
    first = epoch(make_dataloader(prepared_acdc, "training", **kwargs))
    assert [x["volume_name"] for x in other] != [x["volume_name"] for x in first]


def test_distributed_ranks_get_disjoint_slices_and_volumes(prepared_acdc, manifest):
    def shard(rank, **kw):
        return [(n, s) for b in make_dataloader(prepared_acdc, "training", rank=rank, world_size=2, seed=0, **kw)
                for n, s in zip(b["volume_name"], b["slice"].tolist())]

    a, b = shard(0, batch_size=4), shard(1, batch_size=4)
    assert not set(a) & set(b) and len(a) == len(b) == len(manifest["training"]) // 2
    va, vb = ({n for n, _ in shard(r, sampling="volume")} for r in (0, 1))
    assert not va & vb and len(va) == len(vb)
    with pytest.raises(RuntimeError, match="process group"):
        make_dataloader(prepared_acdc, "training", distributed=True)


def test_bad_arguments_are_explained(prepared_acdc):
    with pytest.raises(ValueError, match="sampling must be one of"):
        make_dataloader(prepared_acdc, "training", sampling="random")
    with pytest.raises(ValueError, match="no weak-label strategy 'box'"):
        make_dataloader(prepared_acdc, "training", weak="box")
    with pytest.raises(ValueError, match="full=True needs the labels"):
        make_dataloader(prepared_acdc, "training", full=True, load_labels=False)


def test_batches_feed_the_regime_losses(prepared_acdc):
    """The batch dict goes straight into WeakSupervisionLoss: hybrid routing, 2D and 3D size terms."""
    from wss_monai.losses import WeakSupervisionLoss

    pce = {"name": "partial_ce", "term": "wss_monai.losses.PartialCrossEntropy"}
    hybrid = WeakSupervisionLoss([pce, {"name": "size", "weight": 0.01, "term": "wss_monai.losses.SizePenalty"}])
    for batch in make_dataloader(prepared_acdc, "training", bounds="common", sampling="hybrid", full_patients=1, batch_size=6, augment=True):
        probs = torch.softmax(torch.randn(len(batch["slice"]), 2, *batch["weak"].shape[1:]), dim=1)
        assert torch.isfinite(hybrid(probs, **batch))
    volume3d = WeakSupervisionLoss([pce, {"name": "size", "weight": 0.01, "term": {"_target_": "wss_monai.losses.SizePenalty", "per_volume": True}}])
    batch = next(iter(make_dataloader(prepared_acdc, "training", bounds="volume3d", sampling="volume", augment=True)))
    probs = torch.softmax(torch.randn(len(batch["slice"]), 2, *batch["weak"].shape[1:]), dim=1)
    assert torch.isfinite(volume3d(probs, **batch))
