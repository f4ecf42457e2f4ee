"""Unit tests of the shared preparation steps on small arrays built here."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_prep.bounds import BoundOptions, class_sizes, common_range, slice_bounds
from data_prep.errors import InputError
from data_prep.intensity import normalise_intensity, refuse_constant_foreground
from data_prep.io import Volume, check_same_grid, nifti_bytes, read_volume
from data_prep.resample import apply_plan, invert_plan, plan_inplane, resampled_affine, resampled_spacing
from data_prep.slicing import inplane_axes, restore_volume, slice_affine, take_slice
from data_prep.splits import resolve_count, split_patients
from data_prep.weak_labels import (
    UNANNOTATED,
    WeakOptions,
    background_scribble,
    erosion_seed,
    random_disc_seed,
    weak_label,
)


def blob(shape=(64, 64), centre=(30, 34), radius=12) -> np.ndarray:
    x, y = np.mgrid[: shape[0], : shape[1]]
    return np.hypot(x - centre[0], y - centre[1]) < radius


# --- intensity -------------------------------------------------------------------------------


def test_normalise_clips_outliers_to_unit_range():
    values = np.concatenate([np.linspace(0, 100, 1000), [1e6]]).astype(np.float32)
    out = normalise_intensity(values, (0.5, 99.5))
    assert out.dtype == np.float32 and out.min() == 0 and out.max() == 1
    assert out[500] == pytest.approx(0.5, abs=0.02)  # the hot voxel did not squash the rest


def test_normalise_constant_volume_is_zero():
    assert not normalise_intensity(np.full((3, 3, 3), 7.0)).any()


@pytest.mark.parametrize("scale", [2.5e36, 1e30])
def test_normalise_near_float32_limits_matches_the_scaled_down_image(scale):
    """Values near +-3e38 overflowed float32's high - low and became all zeros; the result must not depend on scale."""
    ordinary = np.random.default_rng(0).uniform(-130, 130, (16, 16, 4)).astype(np.float32)
    extreme = ordinary * np.float32(scale)
    assert np.all(np.isfinite(extreme))
    out = normalise_intensity(extreme)
    assert out.dtype == np.float32 and out.min() == pytest.approx(0, abs=1e-6) and out.max() == pytest.approx(1)
    np.testing.assert_allclose(out, normalise_intensity(ordinary), atol=1e-6)


def test_normalise_huge_constant_volume_is_zero():
    assert not normalise_intensity(np.full((3, 3, 3), -3e38, dtype=np.float32)).any()


def _volume(affine, shape=(4, 5, 3), spacing=(1.5, 1.5, 10.0), name="x.nii.gz") -> Volume:
    return Volume(array=np.zeros(shape, dtype=np.int16), spacing=spacing, affine=np.asarray(affine, float), path=Path(name))


def test_label_grid_tolerates_rounding_and_refuses_flips_and_shifts():
    image = _volume(np.diag([-1.5, -1.5, 10.0, 1.0]), name="img.nii.gz")
    rounded = np.diag([-1.5, -1.5, 10.0, 1.0])
    rounded[:3, 3] = (1e-4, -1e-4, 1e-5)  # float32 qoffset of another writer
    rounded[0, 1] = 1e-6
    check_same_grid(image, _volume(rounded))
    flipped = np.diag([1.5, -1.5, 10.0, 1.0])
    with pytest.raises(InputError, match=r"label orientation differs from the image's \(img.nii.gz\): axes RPS vs LPS"):
        check_same_grid(image, _volume(flipped))
    shifted = np.diag([-1.5, -1.5, 10.0, 1.0])
    shifted[:3, 3] = (0.0, 0.2, 0.0)  # 0.13 voxel
    with pytest.raises(InputError, match=r"label origin is 0.2 mm away .* tolerance 0.15 mm"):
        check_same_grid(image, _volume(shifted))


def test_constant_image_with_foreground_is_refused_not_with_background():
    classes = np.zeros((4, 5, 3), dtype=np.uint8)
    refuse_constant_foreground(np.full((4, 5, 3), 3.0), "img.nii", classes, "lab.nii")  # empty label: consistent
    classes[1, 1, 1] = 1
    partly = np.random.default_rng(0).normal(size=(4, 5, 3))
    partly[:, :, 0] = 0
    refuse_constant_foreground(partly, "img.nii", classes, "lab.nii")  # constant on one slice only
    with pytest.raises(InputError, match=r"image is constant \(every voxel 3\) but its label marks foreground in 1 voxels"):
        refuse_constant_foreground(np.full((4, 5, 3), 3.0), "img.nii", classes, "lab.nii")


# --- resampling ------------------------------------------------------------------------------


@pytest.mark.parametrize("original", [(20, 28), (40, 33), (64, 64)])
@pytest.mark.parametrize("mode", ["stretch", "pad-crop"])
def test_labels_round_trip_through_resampling(original, mode):
    label = np.zeros(original + (3,), dtype=np.uint8)
    label[original[0] // 5 : 3 * original[0] // 4, original[1] // 4 : 4 * original[1] // 5, :] = 1
    label[original[0] // 3 : original[0] // 2, original[1] // 3 : original[1] // 2, 1] = 2
    plan = plan_inplane(original, (1.2, 0.9), (32, 32), mode=mode)
    forward = apply_plan(label, plan, (0, 1), order=0)
    assert forward.shape == (32, 32, 3) and forward.dtype == np.uint8
    assert set(np.unique(forward)) <= {0, 1, 2}  # nearest neighbour never invents classes
    back = invert_plan(forward, plan, (0, 1), order=0)
    assert back.shape == label.shape
    dice = 2 * np.sum((back > 0) & (label > 0)) / (np.sum(back > 0) + np.sum(label > 0))
    assert dice > 0.95


def test_upsampling_by_nearest_round_trips_exactly():
    label = (np.random.default_rng(0).random((16, 12, 2)) > 0.5).astype(np.uint8)
    plan = plan_inplane((16, 12), (1, 1), (64, 48))
    assert np.array_equal(invert_plan(apply_plan(label, plan, (0, 1), 0), plan, (0, 1), 0), label)


def test_pad_crop_keeps_aspect_ratio():
    plan = plan_inplane((100, 50), (1.0, 1.0), (64, 64), mode="pad-crop")
    assert plan.scaled == (64, 32) and plan.offset == (0, 16)
    spacing = resampled_spacing((1.0, 1.0, 5.0), plan, (0, 1))
    assert spacing[0] == pytest.approx(spacing[1]) and spacing[2] == 5.0
    cropped = plan_inplane((100, 50), (1.0, 1.0), (64, 64), mode="pad-crop", target_spacing=1.0)
    assert cropped.scaled == (100, 50) and cropped.offset == (-18, 7)


def test_resampled_affine_keeps_world_positions():
    """The centre of the field of view and its extent stay where they were in mm."""
    affine = np.diag([-1.5, -1.5, 10.0, 1.0])
    affine[:3, 3] = (10, 20, 30)
    plan = plan_inplane((40, 48), (1.5, 1.5), (64, 64))
    new = resampled_affine(affine, plan, (0, 1))
    centre_old = affine @ np.array([19.5, 23.5, 0, 1])
    centre_new = new @ np.array([31.5, 31.5, 0, 1])
    assert np.allclose(centre_old, centre_new)
    assert np.allclose(np.abs(np.diag(new)[:3]), resampled_spacing((1.5, 1.5, 10.0), plan, (0, 1)))


def test_linear_resampling_of_images_is_smooth_and_in_range():
    image = np.linspace(0, 1, 20 * 20, dtype=np.float32).reshape(20, 20, 1)
    out = apply_plan(image, plan_inplane((20, 20), (1, 1), (37, 37)), (0, 1), order=1)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    assert np.all(np.diff(out[:, 0, 0]) >= 0)


# --- slicing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_stack_back_to_the_original_volume(axis):
    volume = (np.random.default_rng(1).random((6, 7, 8)) * 3).astype(np.uint8)
    slices = [take_slice(volume, axis, k) for k in range(volume.shape[axis])]
    info = {"slice_axis": axis, "plan": plan_inplane(slices[0].shape, (1, 1), slices[0].shape).to_dict()}
    assert np.array_equal(restore_volume(slices, info), volume)


def test_slice_affine_places_the_slice_inside_the_volume():
    affine = np.diag([2.0, 1.25, 1.25, 1.0])
    affine[:3, 3] = (-5, 3, 7)
    for index in (0, 17):
        slice_aff = slice_affine(affine, 0, index)
        assert np.allclose(slice_aff @ [3, 4, 0, 1], affine @ [index, 3, 4, 1])
    assert inplane_axes(0) == (1, 2)


# --- weak labels -----------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["erosion", "random_disc", "centroid_disc", "box", "scribble"])
@pytest.mark.parametrize("background", [False, True])
def test_every_annotated_pixel_has_its_true_class(strategy, background):
    label = np.zeros((64, 64), dtype=np.uint8)
    label[blob()] = 1
    label[blob(centre=(50, 10), radius=6)] = 2
    options = WeakOptions(background_scribble=background)
    weak = weak_label(label, 2, strategy, np.random.default_rng(0), options)
    annotated = weak != UNANNOTATED
    assert weak.dtype == np.uint8 and annotated.any()
    assert np.array_equal(weak[annotated], label[annotated])
    if strategy != "box":
        assert set(np.unique(weak[annotated & (label > 0)])) == {1, 2}  # every class got its seed
    if not background and strategy != "box":
        assert np.all(weak[label == 0] == UNANNOTATED)  # foreground seeds only: background all 255


def test_erosion_is_ten_3x3_iterations_and_retries_when_empty():
    mask = blob(radius=20)
    seed = erosion_seed(mask, 10)
    # 10 erosions by a 3x3 square shrink a disc by 10 pixels (chessboard distance) all round.
    from scipy import ndimage

    assert np.array_equal(seed, ndimage.binary_erosion(mask, np.ones((3, 3)), iterations=10))
    small = blob(radius=4)  # erodes away after ~3 iterations: the last non-empty erosion stays
    kept = erosion_seed(small, 10)
    assert kept.any() and not ndimage.binary_erosion(kept, np.ones((3, 3))).any()
    line = np.zeros((9, 9), dtype=bool)
    line[4, 1:8] = True  # 1 px thin: a single deepest pixel
    assert erosion_seed(line, 10).sum() == 1


def test_random_disc_is_seeded_clipped_and_small():
    mask = blob()
    first = random_disc_seed(mask, np.random.default_rng(5), radius=2)
    again = random_disc_seed(mask, np.random.default_rng(5), radius=2)
    assert np.array_equal(first, again) and 1 <= first.sum() <= 13 and not (first & ~mask).any()
    edge = np.zeros((10, 10), dtype=bool)
    edge[0:2, 0:2] = True
    assert not (random_disc_seed(edge, np.random.default_rng(0), radius=4) & ~edge).any()


def test_empty_slice_has_no_seed_and_box_marks_it_all_background():
    empty = np.zeros((16, 16), dtype=np.uint8)
    assert np.all(weak_label(empty, 1, "erosion", np.random.default_rng(0)) == UNANNOTATED)
    assert np.all(weak_label(empty, 1, "box", np.random.default_rng(0)) == 0)


def test_background_scribble_keeps_its_margin():
    foreground = blob()
    line = background_scribble(foreground, margin=5)
    from scipy import ndimage

    assert line.any() and ndimage.distance_transform_edt(~foreground)[line].min() > 5


# --- bounds ----------------------------------------------------------------------------------


def test_bounds_follow_the_papers_equations():
    assert class_sizes(np.array([[0, 1], [1, 2]], dtype=np.uint8), 2) == [2, 1]
    assert common_range([0, 100, 50, 0, 2000]) == pytest.approx((45.0, 2200.0))
    assert common_range([10, 20, 30, 40], BoundOptions(common_percentiles=(0, 100))) == pytest.approx((9.0, 44.0))
    rules = slice_bounds([300, 0], 4096, [(60.0, 2000.0), (5.0, 50.0)], [900, 12])
    assert rules["tags"] == [[1, 4096], [0, 0]]
    assert rules["common"] == [[60.0, 2000.0], [0, 0]]
    assert rules["individual"] == [[0.9 * 300, 1.1 * 300], [0, 0]]
    assert rules["upper"] == [[1, 2000.0], [0, 0]]
    assert rules["volume3d"] == [[0.9 * 900, 1.1 * 900], [0.9 * 12, 1.1 * 12]]
    with pytest.raises(ValueError):
        common_range([0, 0])


# --- splits ----------------------------------------------------------------------------------


def test_split_is_seeded_disjoint_and_stratified():
    patients = [f"patient{i:03d}" for i in range(1, 101)]
    groups = {p: ["DCM", "HCM", "MINF", "NOR", "RV"][(i) // 20] for i, p in enumerate(patients)}
    split = split_patients(patients, resolve_count("0.25", 100), 10, seed=3, groups=groups)
    assert split == split_patients(patients, 25, 10, seed=3, groups=groups)
    assert split != split_patients(patients, 25, 10, seed=4, groups=groups)
    validation = [p for p, s in split.items() if s == "validation"]
    assert len(validation) == 25 and sum(s == "test" for s in split.values()) == 10
    per_group = {g: sum(groups[p] == g for p in validation) for g in set(groups.values())}
    assert set(per_group.values()) == {5}


def test_split_counts_and_fixed_patients():
    assert resolve_count("5", 23) == 5 and resolve_count("0.2", 23) == 5 and resolve_count("0.15", 23) == 3
    split = split_patients(["a", "b", "c", "d"], 1, 1, seed=0, fixed={"c": "test"})
    assert split["c"] == "test" and sorted(split.values()).count("training") == 2
    with pytest.raises(ValueError):
        split_patients(["a", "b"], 1, 1, seed=0)


# --- I/O -------------------------------------------------------------------------------------


def test_nifti_bytes_are_deterministic_and_keep_spacing(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    affine = np.diag([0.7, 0.8, 5.0, 1.0])
    first, second = nifti_bytes(array, affine), nifti_bytes(array, affine)
    assert first == second and gzip.decompress(first)[:4] != b""
    path = tmp_path / "slice.nii.gz"
    path.write_bytes(first)
    image = nib.load(str(path))
    assert image.header.get_zooms() == pytest.approx((0.7, 0.8))
    assert np.array_equal(np.asanyarray(image.dataobj), array)


def test_acdc_spacing_comes_from_the_qform_not_the_unit_sform(tmp_path, raw_builders):
    path = raw_builders.save_acdc_nifti(tmp_path / "p.nii.gz", np.zeros((4, 5, 3), dtype=np.int16), spacing=(1.3, 1.3, 8.0))
    assert nib.load(str(path)).affine[0, 0] == -1.0  # nibabel's affine is the unit sform
    volume = read_volume(path)
    assert volume.spacing == pytest.approx((1.3, 1.3, 8.0))
    assert np.allclose(np.abs(np.diag(volume.affine))[:3], (1.3, 1.3, 8.0))


def test_label_file_with_zero_vox_offset_is_read_at_byte_352(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) % 2
    image = nib.Nifti1Image(array, np.eye(4))
    data = bytearray(image.to_bytes())
    data[108:112] = struct.pack("<f", 0.0)
    path = tmp_path / "Img_01_Labels.nii"
    path.write_bytes(bytes(data))
    assert np.array_equal(read_volume(path, "label").array, array)


def test_input_errors_cross_process_boundaries_intact():
    error = pickle.loads(pickle.dumps(InputError("a.nii", "broken")))
    assert (error.path, error.problem, error.line()) == ("a.nii", "broken", "a.nii: broken")
