"""The MONAI transforms of the data layer: loading keeps 255, bounds rows, augmentation with bounds."""

import math

import nibabel as nib
import numpy as np
import pytest
import torch

from wss_monai.data.datalist import build_datalist
from wss_monai.data.transforms import AugmentParams, FormatSampled, LoadSliced, RandWeakAffined, SizeBoundsd, scale_bounds

INF = math.inf


def disc_sample(radius=10.0, size=64, centre=None, bounds=None):
    """A synthetic sample: a disc label, its 3x3 core as weak seeds (255 elsewhere), individual-like bounds."""
    cy, cx = centre or ((size - 1) / 2, (size - 1) / 2)
    y, x = np.mgrid[:size, :size]
    label = ((y - cy) ** 2 + (x - cx) ** 2 <= radius**2).astype(np.uint8)
    weak = np.full((size, size), 255, dtype=np.uint8)
    weak[int(cy) - 1 : int(cy) + 2, int(cx) - 1 : int(cx) + 2] = 1
    area = float(label.sum())
    rows = bounds if bounds is not None else [[0.0, INF], [0.9 * area, 1.1 * area]]
    return {
        "image": torch.from_numpy(label.astype(np.float32))[None] * 0.5 + 0.25,
        "weak": torch.from_numpy(weak),
        "label": torch.from_numpy(label),
        "bounds": torch.tensor(rows, dtype=torch.float32),
        "spacing": torch.tensor([1.5, 1.5]),
    }


# -- loading ----------------------------------------------------------------------------------


def test_load_keeps_weak_labels_integer_with_255_and_never_opens_a_missing_label(prepared_acdc):
    sample = build_datalist(prepared_acdc, "training", weak="erosion")[3]
    assert sample["label"] is None  # a weak training sample carries no label path at all
    out = LoadSliced()(sample)
    stored = np.asanyarray(nib.load(sample["weak"]).dataobj)
    assert out["weak"].dtype == torch.uint8 and out["weak"].shape == stored.shape
    assert np.array_equal(out["weak"].numpy(), stored) and 255 in stored
    assert out["image"].dtype == torch.float32 and out["image"].shape == (1, *stored.shape)
    assert out["label"] is None and out["affine"].shape == (4, 4)


def test_load_rejects_a_float_label_map_with_the_file_name(prepared_acdc, tmp_path):
    sample = build_datalist(prepared_acdc, "validation", weak="erosion")[0]
    bad = tmp_path / "float_label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64), np.float32), np.eye(4)), str(bad))
    with pytest.raises(ValueError, match="float_label.nii.gz.*integers"):
        LoadSliced()(dict(sample, label=str(bad)))


# -- size bounds ------------------------------------------------------------------------------


def test_size_bounds_background_row_is_unconstrained_and_class_rows_are_the_rule():
    out = SizeBoundsd(num_classes=3)({"bounds": [[10, 20], [0, 0]]})["bounds"]
    assert out.dtype == torch.float32 and out.shape == (3, 2)
    assert out.tolist() == [[0, INF], [10, 20], [0, 0]]
    assert SizeBoundsd(num_classes=3)({"bounds": None})["bounds"].tolist() == [[0, INF]] * 3


def test_size_bounds_check_their_input():
    with pytest.raises(ValueError, match="expected 2"):
        SizeBoundsd(num_classes=3)({"bounds": [[1, 2]]})
    with pytest.raises(ValueError, match="lower <= upper"):
        SizeBoundsd(num_classes=2)({"bounds": [[5, 2]]})
    with pytest.raises(ValueError, match="num_classes"):
        SizeBoundsd(num_classes=1)


def test_scale_bounds_multiplies_finite_bounds_and_keeps_inf_and_zero():
    bounds = torch.tensor([[0, INF], [100, 200], [0, 0], [1, 4096]])
    expected = torch.tensor([[0, INF], [121, 242], [0, 0], [1.21, 4956.16]])
    assert torch.allclose(scale_bounds(bounds, 1.21), expected)
    assert torch.equal(bounds, torch.tensor([[0, INF], [100, 200], [0, 0], [1, 4096]]))  # input untouched


# -- augmentation -----------------------------------------------------------------------------


def test_flips_and_quarter_turns_are_exact_and_keep_sizes_and_bounds():
    sample = disc_sample(centre=(20.0, 40.0))
    t = RandWeakAffined(rot90=True)
    out = t.apply(sample, AugmentParams(flip_rows=True, flip_cols=False, quarter_turns=1))
    expected = torch.rot90(torch.flip(sample["label"], (0,)), 1, (0, 1))
    assert torch.equal(out["label"], expected)
    assert torch.equal(out["weak"], torch.rot90(torch.flip(sample["weak"], (0,)), 1, (0, 1)))
    assert torch.equal(out["bounds"], sample["bounds"]) and torch.equal(out["spacing"], sample["spacing"])


def test_rotation_fills_weak_pixels_from_outside_with_255_and_labels_with_background():
    sample = disc_sample()
    out = RandWeakAffined().apply(sample, AugmentParams(angle=30.0))
    corner = (slice(0, 3), slice(0, 3))  # comes from outside the original square
    assert (out["weak"][corner] == 255).all() and (out["label"][corner] == 0).all()
    assert out["image"][0][corner].abs().max() == 0
    assert set(out["weak"].unique().tolist()) == {1, 255} and out["weak"].dtype == torch.uint8
    assert (out["weak"] == 1).sum() >= 5  # the seeds survive (nearest neighbour, no blending into 0)


def test_zoom_out_fills_the_border_and_a_missing_label_stays_missing():
    sample = dict(disc_sample(), label=None)
    out = RandWeakAffined().apply(sample, AugmentParams(scale=0.8))
    assert out["label"] is None
    assert (out["weak"][0] == 255).all() and (out["weak"][:, -1] == 255).all()


@pytest.mark.parametrize("scale", [0.8, 0.9, 1.1, 1.2])
def test_zoom_scales_bounds_by_s_squared_and_the_true_size_stays_inside_them(scale):
    sample = disc_sample(radius=12.0)
    out = RandWeakAffined().apply(sample, AugmentParams(scale=scale, angle=10.0))
    lo, hi = sample["bounds"][1].tolist()
    assert out["bounds"][1].tolist() == pytest.approx([lo * scale**2, hi * scale**2])
    assert out["bounds"][0].tolist() == [0, INF]
    size = int((out["label"] == 1).sum())
    assert out["bounds"][1, 0] <= size <= out["bounds"][1, 1]
    assert out["spacing"].tolist() == pytest.approx([1.5 / scale] * 2)  # bounds in mm^2 unchanged


def test_draw_is_reproducible_from_the_seed_and_covers_every_kind_of_change():
    t = RandWeakAffined(rot90=True)
    draws = [t.set_random_state(seed=s).draw() for s in range(200)]
    assert draws[:10] == [t.set_random_state(seed=s).draw() for s in range(10)]
    assert any(d.flip_rows for d in draws) and any(d.flip_cols for d in draws)
    assert {d.quarter_turns for d in draws} == {0, 1, 2, 3}
    assert all(-15 <= d.angle <= 15 for d in draws) and any(d.angle for d in draws)
    assert all(0.9 <= d.scale <= 1.1 for d in draws) and any(d.scale != 1 for d in draws)
    assert all(d.quarter_turns in (0, 2) for d in (t.set_random_state(seed=s).draw(square=False) for s in range(50)))


def test_call_follows_monai_random_state_convention():
    sample = disc_sample()
    a = RandWeakAffined(scale_range=(0.8, 1.2)).set_random_state(seed=4)(sample)
    b = RandWeakAffined(scale_range=(0.8, 1.2)).set_random_state(seed=4)(sample)
    assert all(torch.equal(a[k], b[k]) for k in ("image", "weak", "label", "bounds"))


def test_augmentation_arguments_are_checked():
    with pytest.raises(ValueError, match="flip_prob"):
        RandWeakAffined(flip_prob=2)
    with pytest.raises(ValueError, match="scale_range"):
        RandWeakAffined(scale_range=(1.2, 0.8))
    with pytest.raises(ValueError, match="fill"):
        RandWeakAffined(label_keys={"weak": 300})


def test_format_gives_batch_dtypes_and_fills_unloaded_maps_with_255():
    sample = dict(disc_sample(), label=None, full=False, volume=3, slice=2)
    out = FormatSampled()(sample)
    assert out["weak"].dtype == out["label"].dtype == torch.int64
    assert (out["label"] == 255).all() and out["label"].shape == (64, 64)
    assert out["full"].dtype == torch.bool and out["volume"].dtype == torch.int64
