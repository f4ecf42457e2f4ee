"""wss_monai.metrics against slow, obvious formulas (explicit loops and pixel sets)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from wss_monai.metrics import VolumeScores, dice_2d, dice_3d, hd95_mm

# --------------------------------------------------------------------------------------------
# slow references


def slow_dice(pred: np.ndarray, target: np.ndarray, c: int, empty: str) -> float:
    """Dice of class c from pixel sets, with the empty-mask convention spelt out."""
    p = {idx for idx in itertools.product(*map(range, pred.shape)) if pred[idx] == c}
    g = {idx for idx in itertools.product(*map(range, target.shape)) if target[idx] == c}
    if empty == "skip" and not g:
        return math.nan
    if not p and not g:
        return 1.0 if empty == "one" else math.nan
    return 2 * len(p & g) / (len(p) + len(g))


def slow_surface(mask: np.ndarray) -> list[tuple[int, ...]]:
    """Voxels of the mask with a face neighbour outside it (or outside the array)."""
    surface = []
    for idx in zip(*np.nonzero(mask)):
        for axis in range(mask.ndim):
            for step in (-1, 1):
                nb = list(idx)
                nb[axis] += step
                if not (0 <= nb[axis] < mask.shape[axis]) or not mask[tuple(nb)]:
                    surface.append(tuple(int(i) for i in idx))
                    break
            else:
                continue
            break
    return surface


def slow_hd95(pred: np.ndarray, target: np.ndarray, spacing) -> float:
    """max of the two directed 95th percentiles of nearest-surface distances, by brute force."""
    a = np.array(slow_surface(pred), dtype=float) * spacing
    b = np.array(slow_surface(target), dtype=float) * spacing
    dist = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(dist.min(axis=1), 95), np.percentile(dist.min(axis=0), 95))


def random_labels(rng, shape, num_classes, p_empty=0.3):
    """Blobby random label maps where some slices lack some classes."""
    labels = rng.integers(0, num_classes, size=shape)
    for n in range(shape[0]):
        for c in range(1, num_classes):
            if rng.random() < p_empty:
                labels[n][labels[n] == c] = 0
    return labels


# --------------------------------------------------------------------------------------------
# 2D Dice


@pytest.mark.parametrize("empty", ["one", "nan", "skip"])
def test_dice_2d_matches_pixel_sets(empty):
    rng = np.random.default_rng(0)
    pred = random_labels(rng, (6, 7, 5), 3)
    target = random_labels(rng, (6, 7, 5), 3)
    target[0] = 0  # an empty slice in the target, with a non-empty prediction
    pred[1] = target[1] = 0  # a slice empty in both
    got = dice_2d(pred, target, num_classes=3, empty=empty)
    assert got.shape == (6, 3)
    expected = [[slow_dice(pred[n], target[n], c, empty) for c in range(3)] for n in range(6)]
    np.testing.assert_allclose(got, expected, equal_nan=True)


def test_dice_2d_empty_conventions_differ_only_where_stated():
    target = np.zeros((3, 4, 4), int)
    target[0, :2, :2] = 1
    pred = np.zeros_like(target)
    pred[0, :2, :2] = 1
    pred[2, 0, 0] = 1  # false positive on a slice without the class
    one = dice_2d(pred, target, 2, empty="one")[:, 1]
    nan = dice_2d(pred, target, 2, empty="nan")[:, 1]
    skip = dice_2d(pred, target, 2, empty="skip")[:, 1]
    np.testing.assert_array_equal(one, [1.0, 1.0, 0.0])  # the empty slice inflates the mean
    np.testing.assert_array_equal(nan, [1.0, np.nan, 0.0])
    np.testing.assert_array_equal(skip, [1.0, np.nan, np.nan])  # the false positive is not seen
    assert np.nanmean(one) == pytest.approx(2 / 3)
    assert np.nanmean(nan) == pytest.approx(1 / 2)


def test_dice_perfect_and_disjoint():
    target = np.zeros((2, 8, 8), int)
    target[:, 2:5, 2:5] = 1
    np.testing.assert_array_equal(dice_2d(target, target, 2)[:, 1], [1.0, 1.0])
    disjoint = np.zeros_like(target)
    disjoint[:, 6:, 6:] = 1
    np.testing.assert_array_equal(dice_2d(disjoint, target, 2)[:, 1], [0.0, 0.0])


def test_dice_accepts_torch_channel_first_and_single_slice():
    rng = np.random.default_rng(1)
    pred, target = random_labels(rng, (3, 6, 6), 3), random_labels(rng, (3, 6, 6), 3)
    expected = dice_2d(pred, target, 3)
    got = dice_2d(torch.from_numpy(pred)[:, None].float(), torch.from_numpy(target)[:, None], 3)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(dice_2d(pred[0], target[0], 3), expected[:1])


def test_dice_rejects_bad_inputs():
    labels = np.zeros((2, 4, 4), int)
    weak = labels.copy()
    weak[0, 0, 0] = 255
    with pytest.raises(ValueError, match="outside the class range"):
        dice_2d(labels, weak, 2)
    with pytest.raises(ValueError, match="same shape"):
        dice_2d(labels, labels[:1], 2)
    with pytest.raises(ValueError, match="empty must be one of"):
        dice_2d(labels, labels, 2, empty="zero")
    with pytest.raises(TypeError, match="integer label map"):
        dice_2d(labels + 0.5, labels, 2)


# --------------------------------------------------------------------------------------------
# 3D Dice


@pytest.mark.parametrize("empty", ["one", "nan"])
def test_dice_3d_matches_pixel_sets_per_volume(empty):
    rng = np.random.default_rng(2)
    pred, target = random_labels(rng, (9, 5, 6), 4), random_labels(rng, (9, 5, 6), 4)
    volume = np.array(["b", "a", "b", "c", "a", "b", "c", "c", "a"])  # interleaved slices
    target[volume == "c"] = np.where(target[volume == "c"] == 3, 0, target[volume == "c"])
    pred[volume == "c"] = np.where(pred[volume == "c"] == 3, 0, pred[volume == "c"])  # class 3 absent in c
    ids, got = dice_3d(pred, target, volume, num_classes=4, empty=empty)
    assert list(ids) == ["a", "b", "c"]
    for v, vid in enumerate(ids):
        sel = volume == vid
        expected = [slow_dice(pred[sel], target[sel], c, empty) for c in range(4)]
        np.testing.assert_allclose(got[v], expected, equal_nan=True)
    assert np.isnan(got[2, 3]) if empty == "nan" else got[2, 3] == 1.0


def test_dice_3d_is_not_the_mean_of_2d():
    target = np.zeros((2, 4, 4), int)
    target[0] = 1  # 16 pixels on slice 0, nothing on slice 1
    pred = target.copy()
    pred[1, 0, 0] = 1  # one false-positive pixel
    _, d3 = dice_3d(pred, target, [0, 0], 2)
    assert d3[0, 1] == pytest.approx(32 / 33)
    assert np.nanmean(dice_2d(pred, target, 2)[:, 1]) == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------
# HD95


def cube(shape, start, size):
    mask = np.zeros(shape, int)
    mask[tuple(slice(s, s + size) for s in start)] = 1
    return mask


@pytest.mark.parametrize(
    "axis, shift, spacing, expected_mm",
    [
        (0, 1, (3.0, 0.7, 0.7), 3.0),  # one slice apart, 3 mm slices
        (2, 2, (3.0, 0.5, 0.7), 1.4),  # two columns apart, 0.7 mm columns
        (1, 3, (2.5, 1.25, 0.8), 3.75),
    ],
)
def test_hd95_of_a_shifted_cube_in_mm(axis, shift, spacing, expected_mm):
    target = cube((12, 14, 14), (3, 3, 3), 5)
    pred = np.roll(target, shift, axis=axis)
    got = hd95_mm(pred, target, spacing, num_classes=2)
    assert np.isnan(got[0])  # background is not scored by default
    assert got[1] == pytest.approx(expected_mm)
    assert got[1] == pytest.approx(slow_hd95(pred, target, np.array(spacing)))


def test_hd95_matches_brute_force_on_irregular_shapes():
    rng = np.random.default_rng(3)
    spacing = np.array([2.0, 0.6, 0.9])
    for _ in range(3):
        target = (rng.random((5, 9, 8)) < 0.35).astype(int)
        pred = (rng.random((5, 9, 8)) < 0.35).astype(int) * 2  # class 2; class 1 via target only
        pred[target == 1] = np.where(rng.random((5, 9, 8)) < 0.7, 1, pred)[target == 1]
        got = hd95_mm(pred, target, spacing, num_classes=3)
        assert got[1] == pytest.approx(slow_hd95(pred == 1, target == 1, spacing), rel=1e-6)
        assert np.isnan(got[2])  # class 2 absent from the target


def test_hd95_perfect_is_zero_and_empty_is_explicit():
    target = cube((6, 8, 8), (1, 2, 2), 3)
    assert hd95_mm(target, target, (1.0, 1.0, 1.0), 2)[1] == 0.0
    empty = np.zeros_like(target)
    assert np.isnan(hd95_mm(empty, target, (1.0, 1.0, 1.0), 2)[1])
    assert np.isnan(hd95_mm(target, empty, (1.0, 1.0, 1.0), 2)[1])
    diagonal = math.sqrt((6 * 3.0) ** 2 + (8 * 0.5) ** 2 + (8 * 0.5) ** 2)
    assert hd95_mm(empty, target, (3.0, 0.5, 0.5), 2, missing="diagonal")[1] == pytest.approx(diagonal)
    assert np.isnan(hd95_mm(empty, empty, (3.0, 0.5, 0.5), 2, missing="diagonal")[1])
    with pytest.raises(ValueError, match="spacing"):
        hd95_mm(target, target, (1.0, 1.0), 2)


# --------------------------------------------------------------------------------------------
# VolumeScores


def make_volumes(rng, n_volumes=3, depth=5, size=12, num_classes=3):
    volumes = {}
    for v in range(n_volumes):
        target = np.zeros((depth, size, size), int)
        target[1:4, 3:9, 3:9] = 1
        target[1:3, 4:7, 4:7] = 2
        pred = np.roll(target, rng.integers(-1, 2), axis=2)
        pred[rng.random(pred.shape) < 0.05] = 0
        spacing = (0.8 + 0.1 * v, 0.8 + 0.1 * v, 2.0 + v)  # (row, col, slice distance)
        volumes[f"case{v}"] = (pred, target, spacing)
    return volumes


def feed_shuffled(scores, volumes, rng, batch=4, as_torch=False):
    items = [(vid, i) for vid, (pred, _, _) in volumes.items() for i in range(pred.shape[0])]
    order = rng.permutation(len(items))
    for start in range(0, len(items), batch):
        chunk = [items[k] for k in order[start : start + batch]]
        pred = np.stack([volumes[vid][0][i] for vid, i in chunk])
        target = np.stack([volumes[vid][1][i] for vid, i in chunk])
        spacing = np.array([volumes[vid][2] for vid, _ in chunk])
        if as_torch:  # what a MONAI DataLoader hands over: (B, 1, H, W), collated spacing
            pred, target = torch.from_numpy(pred)[:, None], torch.from_numpy(target)[:, None]
            spacing = [torch.from_numpy(spacing[:, k]) for k in range(3)]
        scores.update(pred, target, volume=[vid for vid, _ in chunk], slice=[i for _, i in chunk], spacing=spacing)


@pytest.mark.parametrize("as_torch", [False, True])
def test_volume_scores_match_direct_computation(as_torch):
    rng = np.random.default_rng(4)
    volumes = make_volumes(rng)
    scores = VolumeScores(num_classes=3, class_names={"0": "background", "1": "myo", "2": "lv"})
    feed_shuffled(scores, volumes, rng, as_torch=as_torch)
    summary = scores.aggregate()

    preds = np.concatenate([v[0] for v in volumes.values()])
    targets = np.concatenate([v[1] for v in volumes.values()])
    for convention in ("one", "nan"):
        per_class = np.nanmean(dice_2d(preds, targets, 3, empty=convention), axis=0)
        assert summary[f"dice_2d_{convention}_myo"] == pytest.approx(per_class[1])
        assert summary[f"dice_2d_{convention}_lv"] == pytest.approx(per_class[2])
        assert summary[f"dice_2d_{convention}_mean"] == pytest.approx(per_class[1:].mean())
    # empty slices (0 and 4 of every volume) make the reference convention larger
    assert summary["dice_2d_one_lv"] > summary["dice_2d_nan_lv"]

    d3 = [[slow_dice(p, t, c, "nan") for c in (1, 2)] for p, t, _ in volumes.values()]
    assert summary["dice_3d_myo"] == pytest.approx(np.mean([d[0] for d in d3]))
    assert summary["dice_3d_mean"] == pytest.approx(np.mean(d3))
    hd = [[slow_hd95(p == c, t == c, np.array([s[2], s[0], s[1]])) for c in (1, 2)] for p, t, s in volumes.values()]
    assert summary["hd95_lv"] == pytest.approx(np.mean([h[1] for h in hd]))
    assert summary["hd95_mean"] == pytest.approx(np.mean(hd))
    assert summary["n_slices"] == 15 and summary["n_volumes"] == 3
    assert "dice_3d_background" not in summary


def test_volume_scores_perfect_prediction_and_reset():
    rng = np.random.default_rng(5)
    volumes = {vid: (t, t, s) for vid, (_, t, s) in make_volumes(rng, n_volumes=2).items()}
    scores = VolumeScores(num_classes=3)
    feed_shuffled(scores, volumes, rng, batch=3)
    summary = scores.aggregate()
    for key in ("dice_2d_one_mean", "dice_2d_nan_mean", "dice_3d_c1", "dice_3d_c2"):
        assert summary[key] == 1.0
    assert summary["hd95_mean"] == 0.0
    scores.reset()
    with pytest.raises(ValueError, match="before any update"):
        scores.aggregate()


def test_volume_scores_empty_volume_and_errors():
    scores = VolumeScores(num_classes=2, hd95_missing="nan")
    empty = np.zeros((2, 8, 8), int)
    scores.update(empty, empty, volume=[0, 0], slice=[1, 0], spacing=(1.0, 1.0, 2.0))
    summary = scores.aggregate()
    assert summary["dice_2d_one_c1"] == 1.0  # the reference convention calls nothing-to-find perfect
    assert math.isnan(summary["dice_2d_nan_c1"]) and math.isnan(summary["dice_3d_c1"])
    assert math.isnan(summary["hd95_c1"])
    with pytest.raises(ValueError, match="given twice"):
        scores.update(empty[:1], empty[:1], volume=[0], slice=[0])
    with pytest.raises(ValueError, match="one value per slice"):
        scores.update(empty, empty, volume=[0], slice=[5, 6])


def test_volume_scores_warns_on_gaps_and_missing_spacing():
    target = cube((4, 8, 8), (0, 2, 2), 3)
    scores = VolumeScores(num_classes=2)
    scores.update(target[[0, 2]], target[[0, 2]], volume=[0, 0], slice=[0, 2])
    with pytest.warns(UserWarning) as record:
        summary = scores.aggregate()
    messages = " ".join(str(w.message) for w in record)
    assert "lacks 1 slice" in messages and "1 mm was assumed" in messages
    assert summary["n_slices"] == 2 and summary["dice_2d_nan_c1"] == 1.0


def test_volume_scores_per_volume_table():
    rng = np.random.default_rng(6)
    volumes = make_volumes(rng, n_volumes=2)
    scores = VolumeScores(num_classes=3)
    feed_shuffled(scores, volumes, rng)
    table = scores.scores()
    assert list(table["volume"]) == ["case0", "case1"]
    assert table["dice_3d"].shape == table["hd95"].shape == (2, 3)
    assert table["dice_2d_one"].shape == (10, 3) and list(table["slice_index"][:5]) == [0, 1, 2, 3, 4]
    pred, target, _ = volumes["case1"]
    np.testing.assert_allclose(table["dice_2d_nan"][5:], dice_2d(pred, target, 3, empty="nan"), equal_nan=True)
    np.testing.assert_allclose(table["dice_3d"][1], dice_3d(pred, target, [0] * 5, 3)[1][0], equal_nan=True)
