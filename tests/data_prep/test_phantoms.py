"""The phantoms are the real datasets' layouts: read them the way the real files are read.

Every fact checked here is one of the project's shared/reference/datasets.md; the converters rely on
them. Small phantoms come from the session fixtures (tests/conftest.py); a few checks write one
real-size case. The realism checks are cheap proxies for "hard like real images".
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from pipelines.testkit.phantoms import acdc, promise12, vertebral
from pipelines.testkit.phantoms.runner import case_rng

# ------------------------------------------------------------------------------------------------
# ACDC
# ------------------------------------------------------------------------------------------------

INFO_KEYS = {"ED", "ES", "Group", "Height", "NbFrame", "Weight"}


def read_info(path: Path) -> dict[str, str]:
    """Parse Info.cfg tolerantly (spaces around the colon vary), as a converter must."""
    pairs = (line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def patients(root: Path) -> list[Path]:
    return sorted(p for p in (root / "training").iterdir() if p.is_dir())


def test_acdc_tree_has_one_folder_per_patient_with_exactly_the_six_files(acdc_raw):
    folders = patients(acdc_raw)
    assert [p.name for p in folders] == [f"patient{i:03d}" for i in range(1, 6)]
    for folder in folders:
        info = read_info(folder / "Info.cfg")
        name = folder.name
        expected = {"Info.cfg", f"{name}_4d.nii.gz"}
        for key in ("ED", "ES"):
            frame = int(info[key])
            expected |= {f"{name}_frame{frame:02d}.nii.gz", f"{name}_frame{frame:02d}_gt.nii.gz"}
        assert {p.name for p in folder.iterdir()} == expected


def test_acdc_info_cfg_has_the_six_keys_and_groups_cycle(acdc_raw):
    groups = []
    for folder in patients(acdc_raw):
        text = (folder / "Info.cfg").read_text()
        assert all(re.fullmatch(r"\w+ ?: .+", line) for line in text.splitlines())
        info = read_info(folder / "Info.cfg")
        assert set(info) == INFO_KEYS
        ed, es, n = int(info["ED"]), int(info["ES"]), int(info["NbFrame"])
        assert 1 <= ed < es <= n
        assert 140 <= float(info["Height"]) <= 200 and 40 <= float(info["Weight"]) <= 120
        groups.append(info["Group"])
    assert groups == ["NOR", "MINF", "DCM", "HCM", "RV"]


def test_acdc_some_info_cfg_files_space_the_colon_differently(acdc_raw):
    texts = [(folder / "Info.cfg").read_text() for folder in patients(acdc_raw)]
    assert any("ED : " in t for t in texts) and any("ED: " in t for t in texts)


def test_acdc_frames_are_the_4d_cine_at_ed_and_es(acdc_raw):
    for folder in patients(acdc_raw):
        info = read_info(folder / "Info.cfg")
        cine = nib.load(folder / f"{folder.name}_4d.nii.gz")
        data = np.asarray(cine.dataobj)
        assert data.ndim == 4 and data.shape[3] == int(info["NbFrame"])
        for key in ("ED", "ES"):
            frame = int(info[key])
            image = nib.load(folder / f"{folder.name}_frame{frame:02d}.nii.gz")
            assert image.get_data_dtype() == cine.get_data_dtype()
            np.testing.assert_array_equal(np.asarray(image.dataobj), data[..., frame - 1])
        assert cine.header.get_zooms()[:3] == image.header.get_zooms()


def test_acdc_images_are_int16_and_labels_uint8_with_the_four_classes(acdc_raw):
    for folder in patients(acdc_raw):
        for path in folder.glob("*_frame??.nii.gz"):
            image = nib.load(path)
            label = nib.load(str(path).replace(".nii.gz", "_gt.nii.gz"))
            assert image.get_data_dtype() in (np.int16, np.float32)
            assert label.get_data_dtype() == np.uint8
            values = np.unique(np.asarray(label.dataobj))
            assert set(values) <= {0, 1, 2, 3} and {0, 1, 2, 3} <= set(values) | {1}  # RV may end early at ES
            assert image.shape == label.shape and image.ndim == 3  # (X, Y, Z): slices last


def test_acdc_some_patients_are_float32():
    # About one patient in seven, as in the real set; the file keeps the dtype.
    flags = [acdc.sample_patient(case_rng("acdc", 0, i), i, acdc.Config.small()).as_float for i in range(1, 61)]
    assert 2 <= sum(flags) <= 20


def test_acdc_quirk_nibabel_affine_is_unit_sform_zooms_are_real_spacing(acdc_raw):
    path = next(acdc_raw.glob("training/patient001/patient001_frame01.nii.gz"))
    image = nib.load(path)
    header = image.header
    np.testing.assert_array_equal(image.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))  # sform wins: 1 mm voxels
    assert int(header["sform_code"]) > 0 and int(header["qform_code"]) > 0
    zooms = header.get_zooms()
    assert zooms[0] == zooms[1] > 1.0 and zooms[2] > 4.0
    np.testing.assert_allclose(np.abs(np.diag(header.get_qform())[:3]), zooms, rtol=1e-6)
    assert np.diag(header.get_qform())[:2].tolist() == [-zooms[0], -zooms[1]]


def test_acdc_quirk_simpleitk_warns_about_the_sform_and_takes_the_qform_spacing(acdc_raw, capfd):
    # Observed with SimpleITK 2.5 / ITK 5.4: a warning "has unexpected scales in sform" on stderr,
    # then the qform is used, so the spacing is right. (Some older SimpleITK versions refuse the
    # file; the converter takes the spacing from nibabel's header zooms and needs neither.)
    path = acdc_raw / "training/patient002/patient002_frame01.nii.gz"
    zooms = nib.load(path).header.get_zooms()
    image = sitk.ReadImage(str(path))
    np.testing.assert_allclose(image.GetSpacing(), zooms, rtol=1e-5)
    np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-6)  # diag(-1,-1,1) RAS = identity LPS
    assert "unexpected scales in sform" in capfd.readouterr().err


@pytest.fixture(scope="module")
def acdc_real_size(tmp_path_factory) -> Path:
    """One patient at the default (real) size, written as the generator writes it."""
    root = tmp_path_factory.mktemp("acdc_real")
    acdc.write_case(root, 3, case_rng("acdc", 0, 3), acdc.Config())
    return acdc.case_dir(root, 3)


def test_acdc_default_sizes_match_the_real_ranges(acdc_real_size):
    ed = int(read_info(acdc_real_size / "Info.cfg")["ED"])
    image = nib.load(acdc_real_size / f"patient003_frame{ed:02d}.nii.gz")
    x, y, z = image.shape
    sx, sy, sz = image.header.get_zooms()
    assert 154 <= x <= 256 and 224 <= y <= 256 and 6 <= z <= 18
    assert 1.3 <= sx == sy <= 1.8 and 5 <= sz <= 10
    for i in range(1, 101):  # the drawn sizes of a whole default dataset, without rendering it
        p = acdc.sample_patient(case_rng("acdc", 0, i), i, acdc.Config())
        assert 154 <= p.shape[0] <= 256 and 224 <= p.shape[1] <= 256 and 6 <= p.shape[2] <= 18
        assert 1.3 <= p.spacing[0] <= 1.8 and 5 <= p.spacing[2] <= 10
        assert 12 <= p.n_frames <= 35 and 1 <= p.ed < p.es <= p.n_frames


def acdc_frames(root: Path):
    """(patient folder, ED image, ED label, ES image, ES label) for each patient."""
    for folder in patients(root):
        info = read_info(folder / "Info.cfg")
        out = [folder]
        for key in ("ED", "ES"):
            stem = folder / f"{folder.name}_frame{int(info[key]):02d}"
            out += [np.asarray(nib.load(f"{stem}.nii.gz").dataobj, dtype=float),
                    np.asarray(nib.load(f"{stem}_gt.nii.gz").dataobj)]
        yield out


def test_acdc_lv_shrinks_from_base_to_apex_and_some_slices_have_no_lv(acdc_raw, acdc_real_size):
    roots = [acdc_raw, acdc_real_size.parent.parent]
    for _, _, ed_label, _, _ in (f for root in roots for f in acdc_frames(root)):
        areas = (ed_label == 3).sum(axis=(0, 1))
        present = np.flatnonzero(areas)
        assert present.size >= 3 and present.size < areas.size  # LV-free slices above base / below apex
        lv = areas[present[0] : present[-1] + 1]
        assert np.corrcoef(np.arange(lv.size), lv)[0, 1] < -0.5  # base (small z) larger than apex


def test_acdc_end_systole_has_a_smaller_cavity_and_a_thicker_myocardium(acdc_raw):
    for _, _, ed_label, _, es_label in acdc_frames(acdc_raw):
        assert (es_label == 3).sum() < 0.92 * (ed_label == 3).sum()
        for k in np.flatnonzero((es_label == 3).any(axis=(0, 1)) & (ed_label == 3).any(axis=(0, 1))):
            # Mean wall thickness ~ myocardial area / perimeter: compare ring area to cavity size.
            ed_ring, es_ring = (ed_label[..., k] == 2).sum(), (es_label[..., k] == 2).sum()
            ed_r, es_r = np.sqrt((ed_label[..., k] >= 2).sum()), np.sqrt((es_label[..., k] >= 2).sum())
            assert es_ring / es_r >= 0.9 * ed_ring / ed_r


def test_acdc_blood_pools_are_alike_and_the_myocardium_is_darker(acdc_raw, acdc_real_size):
    roots = [acdc_raw, acdc_real_size.parent.parent]
    for _, ed_image, ed_label, es_image, es_label in (f for root in roots for f in acdc_frames(root)):
        for image, label in ((ed_image, ed_label), (es_image, es_label)):
            both = (label == 1).any(axis=(0, 1)) & (label == 3).any(axis=(0, 1))
            rv, myo, lv = (image[..., both][label[..., both] == c].mean() for c in (1, 2, 3))
            assert 0.8 <= rv / lv <= 1.25  # the RV is as bright as the LV: intensity alone cannot tell them
            assert myo < 0.7 * lv


def test_acdc_bright_structures_besides_the_lv_compete_with_it(acdc_raw):
    # RV, atria, aorta and fat: a threshold near the LV's own level finds about as much again.
    for _, image, label, _, _ in acdc_frames(acdc_raw):
        bright = image > 0.8 * np.median(image[label == 3])
        assert (bright & (label != 3)).sum() > 0.6 * (bright & (label == 3)).sum()


def test_acdc_patients_differ_in_intensity_scale_and_heart_size(acdc_raw):
    scales, sizes = [], []
    for _, image, label, _, _ in acdc_frames(acdc_raw):
        scales.append(np.median(image[label == 3]))
        sizes.append((label == 3).sum())
    assert max(scales) > 2 * min(scales) and max(sizes) > 2 * min(sizes)


# ------------------------------------------------------------------------------------------------
# PROMISE12
# ------------------------------------------------------------------------------------------------

MHD_FIELDS = ["ObjectType", "NDims", "BinaryData", "BinaryDataByteOrderMSB", "CompressedData", "TransformMatrix",
              "Offset", "CenterOfRotation", "AnatomicalOrientation", "ElementSpacing", "DimSize", "ElementType",
              "ElementDataFile"]


def read_mhd(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    pairs = [line.split(" = ", 1) for line in lines]
    assert [k for k, _ in pairs] == MHD_FIELDS, f"{path}: fields or order differ"
    return dict(pairs)


def test_promise12_tree_spreads_cases_over_three_parts(promise12_raw):
    files = sorted(p.relative_to(promise12_raw).as_posix() for p in promise12_raw.rglob("*") if p.is_file())
    parts = {Path(f).parent.name for f in files}
    assert parts == {"TrainingData_Part1", "TrainingData_Part2", "TrainingData_Part3"}
    names = sorted(Path(f).name for f in files)
    expected = sorted(f"Case{i:02d}{suffix}" for i in range(4) for suffix in
                      (".mhd", ".raw", "_segmentation.mhd", "_segmentation.raw"))
    assert names == expected


def test_promise12_headers_have_exactly_the_real_fields(promise12_raw):
    for mhd in promise12_raw.rglob("*.mhd"):
        h = read_mhd(mhd)
        assert (h["ObjectType"], h["NDims"], h["BinaryData"], h["BinaryDataByteOrderMSB"], h["CompressedData"]) == (
            "Image", "3", "True", "False", "False")
        assert h["AnatomicalOrientation"] == "RAI" and h["CenterOfRotation"] == "0 0 0"
        assert h["ElementType"] == ("MET_CHAR" if "_segmentation" in mhd.name else "MET_SHORT")
        assert h["ElementDataFile"] == mhd.with_suffix(".raw").name
        matrix = np.array(h["TransformMatrix"].split(), dtype=float).reshape(3, 3)
        assert not np.allclose(matrix, np.eye(3)) and np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-9)
        assert any(abs(float(v)) > 1 for v in h["Offset"].split())


def test_promise12_simpleitk_reads_z_y_x_with_header_geometry(promise12_raw):
    for mhd in sorted(promise12_raw.rglob("Case??.mhd")):
        h = read_mhd(mhd)
        image = sitk.ReadImage(str(mhd))
        seg = sitk.ReadImage(str(mhd.with_name(mhd.stem + "_segmentation.mhd")))
        array, labels = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(seg)
        nx, ny, nz = (int(v) for v in h["DimSize"].split())
        assert array.shape == labels.shape == (nz, ny, nx) and nx == ny
        assert array.dtype == np.int16 and labels.dtype == np.int8
        assert set(np.unique(labels)) == {0, 1}
        np.testing.assert_allclose(image.GetSpacing(), np.array(h["ElementSpacing"].split(), dtype=float))
        np.testing.assert_allclose(image.GetOrigin(), np.array(h["Offset"].split(), dtype=float))
        assert seg.GetSpacing() == image.GetSpacing() and seg.GetDirection() == image.GetDirection()


def test_promise12_default_sizes_match_the_real_ranges(tmp_path):
    for i in range(50):
        case = promise12.sample_case(case_rng("promise12", 0, i), i, promise12.Config())
        nx, ny, nz = case.shape
        assert nx == ny and nx in (256, 320, 384, 512) and 15 <= nz <= 54
        assert 0.27 <= case.spacing[0] == case.spacing[1] <= 0.75 and 2.2 <= case.spacing[2] <= 4.0
    # One real-size case on disk (the smallest matrix keeps this quick).
    index = next(i for i in range(50) if promise12.sample_case(case_rng("promise12", 0, i), i, promise12.Config()).shape[0] == 256)
    promise12.write_case(tmp_path, index, case_rng("promise12", 0, index), promise12.Config())
    image = sitk.ReadImage(str(next(tmp_path.rglob(f"Case{index:02d}.mhd"))))
    assert image.GetSize()[:2] == (256, 256) and 15 <= image.GetSize()[2] <= 54


def promise12_cases(root: Path):
    for mhd in sorted(root.rglob("Case??.mhd")):
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(mhd))).astype(float)
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(mhd.with_name(mhd.stem + "_segmentation.mhd"))))
        yield image, label


def test_promise12_gland_only_in_middle_slices_and_its_size_changes(promise12_raw):
    for _, label in promise12_cases(promise12_raw):
        areas = label.sum(axis=(1, 2))
        assert areas[0] == 0 and areas[-1] == 0
        present = areas[areas > 0]
        assert present.max() > 2 * present.min()


def test_promise12_gland_contrast_is_low(promise12_raw):
    # Gland vs an in-plane ring of ~5 mm around it: the mean differs by less than the gland's own
    # spread (a threshold cannot separate them).
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    for mhd, (image, label) in zip(sorted(promise12_raw.rglob("Case??.mhd")), promise12_cases(promise12_raw)):
        pixel = sitk.ReadImage(str(mhd)).GetSpacing()[0]
        gland = label.astype(bool)
        ring = ndimage.binary_dilation(gland, in_plane, iterations=max(1, round(5 / pixel))) & ~gland
        assert abs(image[gland].mean() - image[ring].mean()) < image[gland].std()


def test_promise12_intensity_scale_differs_strongly_between_cases():
    highs = []
    for i in range(10):
        rng = case_rng("promise12", 0, i)
        image, _ = promise12.render(rng, promise12.sample_case(rng, i, promise12.Config.small()))
        highs.append(np.percentile(image, 99))
    assert max(highs) > 4 * min(highs)


# ------------------------------------------------------------------------------------------------
# Vertebral bodies
# ------------------------------------------------------------------------------------------------


def test_vertebral_tree_is_flat_uncompressed_nifti(vertebral_raw):
    names = sorted(p.name for p in vertebral_raw.iterdir())
    assert names == sorted(f"Img_{i:02d}{s}.nii" for i in range(1, 4) for s in ("", "_Labels"))


@pytest.fixture(scope="module")
def vertebral_real_size(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vertebral_real")
    vertebral.write_case(root, 1, case_rng("vertebral", 0, 1), vertebral.Config())
    return root


def test_vertebral_default_geometry_is_the_real_one(vertebral_real_size):
    image = nib.load(vertebral_real_size / "Img_01.nii")
    assert image.shape == (39, 305, 305) and image.get_data_dtype() == np.int16
    assert image.header.get_zooms() == (2.0, 1.25, 1.25)


def read_label_bytes(path: Path) -> tuple[bytes, np.ndarray]:
    """The header bytes and the voxels read at byte 352, ignoring what vox_offset says."""
    raw = path.read_bytes()
    header = nib.Nifti1Header.from_fileobj(open(path, "rb"))
    shape = header.get_data_shape()
    data = np.frombuffer(raw, dtype=np.uint8, offset=352, count=int(np.prod(shape)))
    return raw[:352], data.reshape(shape, order="F")


def test_vertebral_label_header_quirks(vertebral_real_size, vertebral_raw):
    for path in [vertebral_real_size / "Img_01_Labels.nii", *vertebral_raw.glob("*_Labels.nii")]:
        header_bytes, data = read_label_bytes(path)
        assert struct.unpack("<i", header_bytes[:4])[0] == 348 and header_bytes[344:348] == b"n+1\x00"
        assert struct.unpack("<f", header_bytes[108:112])[0] == 0.0  # vox_offset stored as 0
        header = nib.load(path).header
        assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 0
        np.testing.assert_allclose(header.get_qform()[:3, :3], np.diag(header.get_zooms()))  # identity rotation
        assert header.get_data_dtype() == np.uint8
        assert set(np.unique(data)) == {0, 1}


def test_vertebral_labels_load_with_nibabel_once_the_offset_is_restored(vertebral_real_size):
    # What a converter must do: readers disagree about vox_offset = 0 (nibabel 5 reads from byte 0,
    # i.e. the header; SimpleITK 2.5 from byte 348), so put the offset back to 352 before reading.
    path = vertebral_real_size / "Img_01_Labels.nii"
    _, expected = read_label_bytes(path)
    image = nib.load(path)
    assert not np.array_equal(np.asarray(image.dataobj), expected)  # naive read: wrong voxels
    header = image.header.copy()
    header.set_data_offset(352)
    np.testing.assert_array_equal(np.asarray(nib.arrayproxy.ArrayProxy(str(path), header)), expected)
    naive_sitk = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)
    assert not np.array_equal(naive_sitk, expected)


def test_vertebral_seven_separate_bodies_in_the_middle_sagittal_slices(vertebral_real_size, vertebral_raw):
    paths = [vertebral_real_size / "Img_01_Labels.nii", *sorted(vertebral_raw.glob("*_Labels.nii"))]
    for path in paths:
        _, label = read_label_bytes(path)
        assert ndimage.label(label)[1] == 7
        assert ndimage.label(label, structure=np.ones((3, 3, 3)))[1] == 7
        per_slice = label.sum(axis=(1, 2))
        assert per_slice[:2].sum() == 0 and per_slice[-2:].sum() == 0  # lateral slices: no body
        assert (per_slice > 0).sum() >= label.shape[0] // 2


def test_vertebral_bodies_look_like_their_surroundings(vertebral_real_size):
    image = np.asarray(nib.load(vertebral_real_size / "Img_01.nii").dataobj, dtype=float)
    _, label = read_label_bytes(vertebral_real_size / "Img_01_Labels.nii")
    body = image[label == 1].mean()
    inside = image[image > np.percentile(image, 30)]  # the body, not the air around it
    assert np.percentile(inside, 10) < body < np.percentile(inside, 90)
