"""The shared pipeline: cases in, prepared dataset out.

For every case (in a worker process when ``workers > 1``): read and validate the image and label
once, map raw label values to classes 1..K, normalise intensities, resample in-plane, write the
resampled 3D volume and its 2D slices, weak labels per strategy, and return the slice sizes. The
parent then derives the common bounds from the reference patient, and writes dataset.json,
bounds.csv and prep.json. Everything is written into a temporary folder renamed to ``--out`` at
the end, so a failure leaves nothing behind.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep import manifest
from data_prep.atomic import atomic_dir, clean_stale
from data_prep.bounds import BoundOptions, class_sizes, common_range
from data_prep.errors import InputError
from data_prep.intensity import DEFAULT_PERCENTILES, normalise_intensity
from data_prep.io import COMPRESS_FLOAT_IMAGES, check_same_grid, nifti_bytes, read_volume, write_file
from data_prep.resample import apply_plan, plan_inplane, resampled_affine, resampled_spacing
from data_prep.slicing import inplane_axes, slice_affine, take_slice
from data_prep.sources import Case
from data_prep.splits import resolve_count, split_patients
from data_prep.weak_labels import STRATEGIES, UNANNOTATED, WeakOptions, weak_label
from data_prep.workers import process_pool

IMAGE_SUFFIX = ".nii.gz" if COMPRESS_FLOAT_IMAGES else ".nii"


@dataclass(frozen=True)
class PrepareOptions:
    """Everything that determines the prepared dataset (``workers`` does not, so it is not here)."""

    source: str
    name: str
    class_map: tuple[tuple[int, ...], ...]
    class_names: tuple[str, ...]
    label_values: frozenset[int]
    size: tuple[int, int] = (256, 256)
    resize: str = "stretch"
    inplane_spacing: float | None = None
    slice_axis: int = 2
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    weak: tuple[str, ...] = STRATEGIES
    weak_options: WeakOptions = WeakOptions()
    bound_options: BoundOptions = BoundOptions()
    reference_patient: str | None = None
    common_values: tuple[tuple[float, float], ...] | None = None
    val: str = "0.2"
    test: str = "0"
    val_patients: tuple[str, ...] = ()
    test_patients: tuple[str, ...] = ()
    seed: int = 0

    @property
    def n_classes(self) -> int:
        return len(self.class_map)


@dataclass
class SliceResult:
    """What the parent needs to know about one written slice."""

    index: int
    files: dict
    spacing: list[float]
    sizes: list[int]
    weak_px: dict[str, list[int]]
    annotated_px: dict[str, int]
    n_pixels: int


@dataclass
class VolumeResult:
    """What the parent needs to know about one prepared volume (no arrays: results cross processes)."""

    case: Case
    files: dict
    original_shape: list[int]
    original_spacing: list[float]
    spacing: list[float]
    plan: dict
    slices: list[SliceResult] = field(default_factory=list)
    volume_sizes: list[int] = field(default_factory=list)
    checksums: dict[str, str] = field(default_factory=dict)


def map_classes(label: np.ndarray, options: PrepareOptions, path: Path) -> np.ndarray:
    """Raw label values -> uint8 classes 0..K; values outside the declared set are an input error."""
    present = np.unique(label)
    unexpected = sorted(int(v) for v in present if int(v) not in options.label_values)
    if unexpected:
        declared = ", ".join(str(v) for v in sorted(options.label_values))
        shown = ", ".join(str(v) for v in unexpected[:10]) + (" ..." if len(unexpected) > 10 else "")
        raise InputError(path, f"label values {{{shown}}} outside the declared set {{{declared}}}")
    classes = np.zeros(label.shape, dtype=np.uint8)
    for cls, raw_values in enumerate(options.class_map, start=1):
        classes[np.isin(label, raw_values)] = cls
    return classes


def volume_rng(seed: int, volume: str) -> np.random.Generator:
    """A generator that depends only on the seed and the volume id (not on order or worker)."""
    return np.random.default_rng([int(seed), zlib.crc32(volume.encode("utf-8"))])


def prepare_volume(case: Case, options: PrepareOptions, root: Path) -> VolumeResult:
    """Read one case, write its resampled volume, slices and weak labels under ``root``."""
    image = read_volume(case.image, "image")
    label = read_volume(case.label, "label")
    check_same_grid(image, label)
    classes = map_classes(label.array, options, case.label)
    axes = inplane_axes(options.slice_axis)
    plan = plan_inplane(
        shape=tuple(image.array.shape[a] for a in axes),
        spacing=tuple(image.spacing[a] for a in axes),
        size=options.size,
        mode=options.resize,
        target_spacing=options.inplane_spacing,
    )
    volume_image = apply_plan(normalise_intensity(image.array, options.percentiles), plan, axes, order=1)
    volume_label = apply_plan(classes, plan, axes, order=0)
    affine = resampled_affine(image.affine, plan, axes)
    spacing = resampled_spacing(image.spacing, plan, axes)

    result = VolumeResult(
        case=case,
        files={"image": f"volumes/{case.volume}_image{IMAGE_SUFFIX}", "label": f"volumes/{case.volume}_label.nii.gz"},
        original_shape=[int(n) for n in image.array.shape],
        original_spacing=[float(s) for s in image.spacing],
        spacing=[float(s) for s in spacing],
        plan=plan.to_dict(),
    )
    _write(root, result, result.files["image"], nifti_bytes(volume_image.astype(np.float32), affine, COMPRESS_FLOAT_IMAGES))
    _write(root, result, result.files["label"], nifti_bytes(volume_label, affine))

    rng = volume_rng(options.seed, case.volume)
    slice_spacing = [float(spacing[a]) for a in axes]
    for index in range(volume_image.shape[options.slice_axis]):
        result.slices.append(
            _prepare_slice(root, result, options, index, volume_image, volume_label, affine, slice_spacing, rng)
        )
    result.volume_sizes = [sum(s.sizes[c] for s in result.slices) for c in range(options.n_classes)]
    return result


def _prepare_slice(root, result, options, index, volume_image, volume_label, affine, slice_spacing, rng) -> SliceResult:
    volume = result.case.volume
    image2d = take_slice(volume_image, options.slice_axis, index)
    label2d = take_slice(volume_label, options.slice_axis, index)
    affine2d = slice_affine(affine, options.slice_axis, index)
    name = f"{volume}_{index:03d}.nii.gz"
    files = {"image": f"slices/image/{volume}_{index:03d}{IMAGE_SUFFIX}", "label": f"slices/label/{name}", "weak": {}}
    _write(root, result, files["image"], nifti_bytes(image2d.astype(np.float32), affine2d, COMPRESS_FLOAT_IMAGES))
    _write(root, result, files["label"], nifti_bytes(label2d, affine2d))
    weak_px, annotated = {}, {}
    for strategy in options.weak:
        weak = weak_label(label2d, options.n_classes, strategy, rng, options.weak_options)
        path = f"slices/weak/{strategy}/{name}"
        files["weak"][strategy] = path
        _write(root, result, path, nifti_bytes(weak, affine2d))
        weak_px[strategy] = class_sizes(np.where(weak == UNANNOTATED, 0, weak), options.n_classes)
        annotated[strategy] = int(np.count_nonzero(weak != UNANNOTATED))
    return SliceResult(
        index=index,
        files=files,
        spacing=slice_spacing,
        sizes=class_sizes(label2d, options.n_classes),
        weak_px=weak_px,
        annotated_px=annotated,
        n_pixels=int(label2d.size),
    )


def _write(root: Path, result: VolumeResult, relpath: str, data: bytes) -> None:
    result.checksums[relpath] = write_file(root, relpath, data)


def run_cases(cases: list[Case], options: PrepareOptions, root: Path, workers: int = 1) -> list[VolumeResult]:
    """Prepare every case (in ``workers`` processes), in input order, with a progress bar on a terminal."""
    from tqdm import tqdm

    task = functools.partial(prepare_volume, options=options, root=root)
    executor = None
    if workers > 1 and len(cases) > 1:
        executor = process_pool(min(workers, len(cases)))  # spawned, and killed with this process
        outcomes = executor.map(task, cases, chunksize=1)
    else:
        outcomes = map(task, cases)
    results = []
    try:
        for outcome in tqdm(outcomes, total=len(cases), desc=f"prepare {options.source}", unit="volume", disable=None):
            results.append(outcome)
    finally:
        if executor is not None:
            # Wait for running workers before the temporary folder is removed, so none writes after.
            executor.shutdown(wait=True, cancel_futures=True)
    return results


def assign_splits(cases: list[Case], options: PrepareOptions) -> dict[str, str]:
    """Patient -> split, seeded, stratified by group when the source gives groups."""
    patients = sorted({c.patient for c in cases})
    groups = {c.patient: c.group for c in cases if c.group}
    fixed = {p: "validation" for p in options.val_patients}
    fixed.update({p: "test" for p in options.test_patients})
    unknown = sorted(set(fixed) - set(patients))
    if unknown:
        raise InputError(None, f"unknown patient(s) in --val-patients/--test-patients: {', '.join(unknown)}")
    try:
        n_val = resolve_count(options.val, len(patients)) if not options.val_patients else len(options.val_patients)
        n_test = resolve_count(options.test, len(patients)) if not options.test_patients else len(options.test_patients)
        return split_patients(patients, n_val, n_test, options.seed, groups=groups, fixed=fixed)
    except ValueError as err:
        raise InputError(None, f"cannot split {len(patients)} patients: {err}") from None


def reference_patient(splits: dict[str, str], options: PrepareOptions) -> str | None:
    """The patient whose full masks give the common bounds: the option, or the first training patient."""
    if options.common_values is not None:
        return None
    if options.reference_patient is not None:
        if options.reference_patient not in splits:
            raise InputError(None, f"--reference-patient {options.reference_patient} is not among the patients found")
        return options.reference_patient
    return sorted(p for p, s in splits.items() if s == "training")[0]


def common_bounds(results: list[VolumeResult], reference: str | None, options: PrepareOptions) -> list[tuple[float, float]]:
    """Per class ``(lower, upper)`` from the reference patient's slices (or the typed values)."""
    if options.common_values is not None:
        return [tuple(v) for v in options.common_values]
    bounds = []
    for cls in range(options.n_classes):
        sizes = [s.sizes[cls] for r in results if r.case.patient == reference for s in r.slices]
        try:
            bounds.append(common_range(sizes, options.bound_options))
        except ValueError:
            labels = [r.case.label for r in results if r.case.patient == reference]
            raise InputError(
                labels[0] if len(labels) == 1 else None,
                f"reference patient {reference} has no slice with class {options.class_names[cls]} "
                f"in its {len(labels)} label file(s); choose another with --reference-patient or give --common-bounds",
            ) from None
    return bounds


def refuse_overlap(src: Path, out: Path) -> None:
    """Stop when ``out`` is ``src``, holds it, or lies inside it (both resolved, symlinks followed).

    Replacing such an ``out`` (``--overwrite``) would delete the raw data, and an ``out`` inside
    ``src`` would be read back as raw cases by the next preparation.
    """
    src_r, out_r = src.resolve(), out.resolve()
    if out_r == src_r:
        raise InputError(out, "--out is the raw folder --src; choose a folder outside it")
    if out_r in src_r.parents:
        raise InputError(out, f"--out contains the raw folder --src {src}; choose a folder outside it")
    if src_r in out_r.parents:
        raise InputError(out, f"--out lies inside the raw folder --src {src}; choose a folder outside it")


def prepare(cases: list[Case], options: PrepareOptions, src: Path, out: Path, workers: int = 1, overwrite: bool = False) -> Path:
    """Run the whole pipeline; returns ``out``. Nothing is left under ``out`` on failure."""
    out = Path(out)
    refuse_overlap(Path(src), out)
    if not cases:
        raise InputError(src, "no cases found")
    clean_stale(out)  # temporaries of killed runs (see data_prep.atomic)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder; choose another --out")
    if out.exists() and not overwrite:
        raise InputError(out, "output folder already exists; pass --overwrite to replace it")
    splits = assign_splits(cases, options)
    reference = reference_patient(splits, options)
    with atomic_dir(out, overwrite=overwrite) as root:
        results = run_cases(cases, options, root, workers)
        common = common_bounds(results, reference, options)
        summary = manifest.write_outputs(root, src, results, splits, common, reference, options)
    manifest.print_summary(summary, out)
    return out
