"""Corpus cases: files that cannot be read, or hold impossible values (truncated, wrong magic, NaN, 4D...)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from pipelines.testkit.bad_inputs.corpus import SHAPE, SIZE, Setup, case
from pipelines.testkit.bad_inputs.raw_data import (
    _all_absent,
    acdc_frame,
    acdc_raw,
    acdc_setup,
    custom_raw,
    custom_setup,
    dicom_series,
    intensities,
    prepared_problems,
    promise12_raw,
    promise12_setup,
    rings,
    save_nifti,
)


# --- the corpus: broken files ------------------------------------------------------------------


@case("truncated-image", "an image .nii.gz cut to half its bytes")
def _truncated_image(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return acdc_setup(work, names=str(path), problem="unreadable or truncated image file")


@case("truncated-label", "a label .nii.gz cut after 100 bytes")
def _truncated_label(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 1, 3, gt=True)
    path.write_bytes(path.read_bytes()[:100])
    return acdc_setup(work, names=str(path), problem="unreadable or truncated label file")


@case("not-gzip", "a .nii.gz that holds plain text")
def _not_gzip(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 1)
    path.write_text("this is not a NIfTI volume\n")
    return acdc_setup(work, names=str(path), problem="not a gzip file")


@case("wrong-magic", "a NIfTI whose header magic number is 'XXXX' instead of 'n+1'")
def _wrong_magic(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2, 3)
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[344:348] = b"XXXX"
    path.write_bytes(gzip.compress(bytes(data), mtime=0))
    return acdc_setup(work, names=str(path), problem="bad NIfTI-1 magic number 'XXXX'")


@case("zero-byte-file", "an image file of 0 bytes")
def _zero_bytes(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2)
    path.write_bytes(b"")
    return acdc_setup(work, names=str(path), problem="image file is empty (0 bytes)")


@case("zero-length-axis", "a volume of shape (20, 22, 0)")
def _zero_axis(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    save_nifti(acdc_frame(raw, 2, gt=True), np.zeros(SHAPE[:2] + (0,), dtype=np.uint8))
    path = save_nifti(acdc_frame(raw, 2), np.zeros(SHAPE[:2] + (0,), dtype=np.int16))
    return acdc_setup(work, names=str(path), problem="zero-length axis")


@case("image-2d", "a 2D image where a 3D volume is expected")
def _image_2d(work: Path) -> Setup:
    path = save_nifti(acdc_frame(acdc_raw(work / "raw"), 1), np.zeros(SHAPE[:2], dtype=np.int16))
    return acdc_setup(work, names=str(path), problem="is 2D")


@case("image-4d", "a 4D image (two time points) where a 3D volume is expected")
def _image_4d(work: Path) -> Setup:
    path = save_nifti(acdc_frame(acdc_raw(work / "raw"), 1), np.zeros(SHAPE + (2,), dtype=np.int16))
    return acdc_setup(work, names=str(path), problem="is 4D")


@case("label-4d-singleton", "legal: a label stored 4D with a last axis of length 1")
def _label_4d_singleton(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    path = acdc_frame(raw, 2, gt=True)
    save_nifti(path, rings(shift=0)[..., None])
    return acdc_setup(work, code=0, verify=lambda out: prepared_problems(out, volumes=4))


@case("nan-intensity", "an image with one NaN voxel")
def _nan(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2)
    values = intensities(rings(), 0).astype(np.float32)
    values[3, 4, 1] = np.nan
    save_nifti(path, values)
    return acdc_setup(work, names=str(path), problem="1 NaN or infinite intensities")


@case("inf-intensity", "an image with +inf and -inf voxels")
def _inf(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 1, 3)
    values = intensities(rings(), 0).astype(np.float32)
    values[1, 1, 0], values[2, 2, 2] = np.inf, -np.inf
    save_nifti(path, values)
    return acdc_setup(work, names=str(path), problem="2 NaN or infinite intensities")


@case("zero-spacing", "a header with voxel size 0 (nibabel would silently read it as 1 mm)")
def _zero_spacing(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2)
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[80:84] = np.float32(0).tobytes()  # pixdim[1]
    path.write_bytes(gzip.compress(bytes(data), mtime=0))
    return acdc_setup(work, names=str(path), problem="invalid voxel spacing")


@case("shape-mismatch", "a label with one slice more than its image")
def _shape_mismatch(work: Path) -> Setup:
    path = save_nifti(acdc_frame(acdc_raw(work / "raw"), 2, gt=True), rings(SHAPE[:2] + (4,)))
    return acdc_setup(work, names=str(path), problem="label shape (20, 22, 4) differs from image shape (20, 22, 3)")


@case("spacing-mismatch", "a label with 5 mm slices for an image with 10 mm slices")
def _spacing_mismatch(work: Path) -> Setup:
    path = save_nifti(acdc_frame(acdc_raw(work / "raw"), 2, gt=True), rings(), spacing=(1.5, 1.5, 5.0))
    return acdc_setup(work, names=str(path), problem="label spacing")


@case("label-outside-declared-set", "a label voxel of 7 where ACDC declares 0-3")
def _label_outside(work: Path) -> Setup:
    values = rings()
    values[0, 0, 1] = 7
    path = save_nifti(acdc_frame(acdc_raw(work / "raw"), 1, 3, gt=True), values)
    return acdc_setup(work, names=str(path), problem="label values {7} outside the declared set {0, 1, 2, 3}")


@case("float-labels", "a float label file with a voxel of 0.5")
def _float_labels(work: Path) -> Setup:
    values = rings().astype(np.float32)
    values[5, 5, 1] = 0.5
    path = save_nifti(acdc_frame(acdc_raw(work / "raw"), 2, gt=True), values)
    return acdc_setup(work, names=str(path), problem="non-integer values")


@case("whole-float-labels", "legal: a float32 label file holding whole numbers")
def _whole_float_labels(work: Path) -> Setup:
    save_nifti(acdc_frame(acdc_raw(work / "raw"), 2, gt=True), rings().astype(np.float32))
    return acdc_setup(work, code=0, verify=lambda out: prepared_problems(out, volumes=4))


@case("all-background-volume", "legal: one volume whose label is all background (tags say absent)")
def _all_background_volume(work: Path) -> Setup:
    raw = acdc_raw(work / "raw")
    save_nifti(acdc_frame(raw, 2, 3, gt=True), np.zeros(SHAPE, dtype=np.uint8))
    verify = lambda out: prepared_problems(out, volumes=4) + _all_absent(out, "patient002_frame03")  # noqa: E731
    return acdc_setup(work, code=0, verify=verify)


@case("all-background-dataset", "legal: every label all background, with typed --common-bounds")
def _all_background_dataset(work: Path) -> Setup:
    custom_raw(work / "raw", label_of=lambda name: np.zeros(SHAPE, dtype=np.uint8))
    verify = lambda out: prepared_problems(out, volumes=2) + _all_absent(out)  # noqa: E731
    return custom_setup(work, "--common-bounds", "10,100", code=0, verify=verify)


@case("all-background-reference", "every label all background, no --common-bounds: no reference size")
def _all_background_reference(work: Path) -> Setup:
    raw = custom_raw(work / "raw", label_of=lambda name: np.zeros(SHAPE, dtype=np.uint8))
    return custom_setup(work, names=str(raw / "labels" / "a.nii.gz"), problem="reference patient a has no slice with class")


@case("metaimage-missing-data-file", "a PROMISE12 .mhd whose .raw voxel file is gone")
def _missing_raw(work: Path) -> Setup:
    raw = promise12_raw(work / "raw")
    (raw / "Case01.raw").unlink()
    problem = "data file missing (named by ElementDataFile in Case01.mhd)"
    return promise12_setup(work, names=str(raw / "Case01.raw"), problem=problem)


@case("metaimage-garbage-header", "a .mhd header that is not a MetaImage header")
def _garbage_mhd(work: Path) -> Setup:
    raw = promise12_raw(work / "raw")
    (raw / "Case00_segmentation.mhd").write_text("this is not a MetaImage header\n")
    return promise12_setup(work, names=str(raw / "Case00_segmentation.mhd"), problem="unreadable or truncated label file")


@case("dicom-mixed-series", "a DICOM folder holding two series (two SeriesInstanceUIDs)")
def _dicom_mixed(work: Path) -> Setup:
    raw = work / "raw"
    for number, name in enumerate(("a", "b")):
        label = (rings(shift=number) == 3).astype(np.uint8)
        series = "1.2.826.0.1.3680043.2.1125.1." + str(1000 + number)
        dicom_series(raw / name / "dicom", intensities(label, number).transpose(2, 1, 0), series)
        save_nifti(raw / name / "mask.nii.gz", label)
    dicom_series(raw / "b" / "dicom", intensities(rings(), 5).transpose(2, 1, 0), "1.2.826.0.1.3680043.2.1125.1.2002")
    out = work / "prepared" / "out"
    out.parent.mkdir(parents=True)
    argv = ["custom", "--src", raw, "--out", out, "--images", "{case}/dicom", "--labels", "{case}/mask.nii.gz",
            *SIZE, "--val", "0"]  # fmt: skip
    return Setup(argv, out, names=str(raw / "b" / "dicom"), problem="folder holds 2 DICOM series")


@case("worker-error", "a broken image read by a worker process (--workers 2)")
def _worker_error(work: Path) -> Setup:
    path = acdc_frame(acdc_raw(work / "raw"), 2, 3)
    path.write_bytes(gzip.compress(b"not a nifti file", mtime=0))
    setup = acdc_setup(work, names=str(path), problem="unreadable or truncated image file")
    setup.argv += ["--workers", "2"]
    return setup
