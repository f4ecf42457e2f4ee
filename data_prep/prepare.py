"""The shared pipeline: cases in, prepared dataset out.

For every case (in a worker process when ``workers > 1``): read and validate the image and, when
the case has one, its full mask once, map raw label values to classes 1..K, normalise
intensities, resample in-plane, write the resampled 3D volume and its 2D slices, weak labels per
strategy (generated from the mask, and the user's own annotations, see :mod:`data_prep.user_weak`),
and return the slice sizes and what is known about each slice. A case without a full mask is a
weak-only training case. The parent then derives the common bounds from the reference patients,
and writes dataset.json, bounds.csv and prep.json. Everything is written into a temporary folder renamed to ``--out`` at
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
from data_prep.intensity import DEFAULT_PERCENTILES, normalise_intensity, refuse_constant_foreground
from data_prep.io import COMPRESS_FLOAT_IMAGES, check_same_grid, nifti_bytes, read_volume, write_file
from data_prep.resample import apply_plan, plan_inplane, resampled_affine, resampled_spacing
from data_prep.slicing import inplane_axes, slice_affine, take_slice
from data_prep.size_knowledge import spacing_declared
from data_prep.sources import Case
from data_prep.splits import resolve_count, split_patients
from data_prep.user_weak import CaseKnowledge, UserOptions, annotate_case
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
    reference_patient: str | None = None  # one patient, or several separated by commas
    common_values: tuple[tuple[float, float], ...] | None = None
    common_mm2: tuple[tuple[float, float], ...] | None = None
    user: UserOptions | None = None
    val: str = "0.2"
    test: str = "0"
    val_patients: tuple[str, ...] = ()
    test_patients: tuple[str, ...] = ()
    seed: int = 0

    @property
    def n_classes(self) -> int:
        return len(self.class_map)

    @property
    def generated(self) -> tuple[str, ...]:
        """The strategies generated from full masks (``weak`` minus the user's strategy)."""
        return tuple(s for s in self.weak if s in STRATEGIES)

    @property
    def reference_patients(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in (self.reference_patient or "").split(",") if p.strip())


@dataclass
class SliceResult:
    """What the parent needs to know about one written slice."""

    index: int
    files: dict
    spacing: list[float]
    sizes: list[int] | None  # None: no full mask
    weak_px: dict[str, list[int]]
    annotated_px: dict[str, int]
    n_pixels: int
    known: list[int | None] | None = None  # per class: 1 present, 0 absent, None unknown (no full mask)
    estimates: list[list[float] | None] | None = None  # per class: (lo, hi) estimated size in px, or None


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
    volume_sizes: list[int] | None = field(default_factory=list)  # None: no full mask
    checksums: dict[str, str] = field(default_factory=dict)
    volume_estimates: list[list[float] | None] | None = None  # per class (lo, hi) px, from --size-estimates
    user_stats: dict = field(default_factory=dict)
    raw_weak: str | None = None
    spacing_declared: bool = True


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


def prepare_volume(case: Case, options: PrepareOptions, root: Path, knowledge: CaseKnowledge | None = None) -> VolumeResult:
    """Read one case, write its resampled volume, slices and weak labels under ``root``."""
    image = read_volume(case.image, "image")
    classes = None
    if case.label is not None:
        label = read_volume(case.label, "label")
        check_same_grid(image, label)
        classes = map_classes(label.array, options, case.label)
        refuse_constant_foreground(image.array, case.image, classes, case.label)
    axes = inplane_axes(options.slice_axis)
    plan = plan_inplane(
        shape=tuple(image.array.shape[a] for a in axes),
        spacing=tuple(image.spacing[a] for a in axes),
        size=options.size,
        mode=options.resize,
        target_spacing=options.inplane_spacing,
    )
    volume_image = apply_plan(normalise_intensity(image.array, options.percentiles), plan, axes, order=1)
    volume_label = None if classes is None else apply_plan(classes, plan, axes, order=0)
    affine = resampled_affine(image.affine, plan, axes)
    spacing = resampled_spacing(image.spacing, plan, axes)
    files = {"image": f"volumes/{case.volume}_image{IMAGE_SUFFIX}"}
    if volume_label is not None:
        files["label"] = f"volumes/{case.volume}_label.nii.gz"

    result = VolumeResult(
        case=case,
        files=files,
        original_shape=[int(n) for n in image.array.shape],
        original_spacing=[float(s) for s in image.spacing],
        spacing=[float(s) for s in spacing],
        plan=plan.to_dict(),
    )
    slice_spacing = [float(spacing[a]) for a in axes]
    annotation = None
    if options.user is not None:
        knowledge = knowledge or CaseKnowledge()
        annotation = annotate_case(knowledge, options.user, image, options.n_classes, plan, axes, options.slice_axis,
                                   slice_spacing, case.volume, mask_classes=classes)
        result.user_stats = annotation.stats
        if annotation.weak is not None:
            painted = (annotation.weak != UNANNOTATED) & (annotation.weak != 0)
            refuse_constant_foreground(image.array, case.image, painted, knowledge.label_map or "points, markups or boxes",
                                       "annotation")
        if knowledge.label_map is not None:
            result.raw_weak = str(knowledge.label_map)
        if knowledge.estimates:
            result.volume_estimates = _volume_estimates(knowledge, options, slice_spacing, float(spacing[options.slice_axis]))
    if _needs_mm(options, knowledge):
        result.spacing_declared = spacing_declared(case.image)
        if not result.spacing_declared:
            raise InputError(case.image, "a bound in mm² needs the pixel size, but the image header declares no spacing "
                             "(give bounds in pixels with --common-bounds, or fix the header)")
    _write(root, result, result.files["image"], nifti_bytes(volume_image.astype(np.float32), affine, COMPRESS_FLOAT_IMAGES))
    if volume_label is not None:
        _write(root, result, result.files["label"], nifti_bytes(volume_label, affine))

    rng = volume_rng(options.seed, case.volume)
    for index in range(volume_image.shape[options.slice_axis]):
        item = _prepare_slice(root, result, options, index, volume_image, volume_label, affine, slice_spacing, rng,
                              annotation)
        if annotation is not None and volume_label is None:
            item.estimates = _slice_estimates(knowledge, options, index, slice_spacing)
            item.known = _with_stated_absence(annotation.known[index], item.estimates, knowledge, index, case.volume)
        result.slices.append(item)
    if volume_label is None:
        result.volume_sizes = None
    else:
        result.volume_sizes = [sum(s.sizes[c] for s in result.slices) for c in range(options.n_classes)]
    return result


def _needs_mm(options: PrepareOptions, knowledge: CaseKnowledge | None) -> bool:
    """True when a bound given in mm² or mm³ must be converted with this image's pixel size."""
    if options.common_mm2 is not None:
        return True
    return bool(knowledge and any(e.unit != "px" for e in knowledge.estimates))


def _with_stated_absence(known: list, estimates: list | None, knowledge: CaseKnowledge, index: int, volume: str) -> list:
    """An estimated size of 0 states that the class is absent from the slice (a painted class contradicts it)."""
    known = list(known)
    for estimate in knowledge.estimates:
        if estimate.slice == index and estimate.size == 0:
            if known[estimate.cls - 1] == 1:
                raise InputError(estimate.path, f"{estimate.where}: estimates class {estimate.cls} absent (size 0) on "
                                 f"slice {index} of {volume}, where it is annotated or tagged present")
            known[estimate.cls - 1] = 0
    return known


def _estimate_bounds(estimate, pixels: float, options: PrepareOptions) -> list[float]:
    margins = estimate.margins or options.bound_options.individual_margins
    return [0, 0] if pixels <= 0 else [margins[0] * pixels, margins[1] * pixels]


def _slice_estimates(knowledge: CaseKnowledge, options: PrepareOptions, index: int, spacing2d) -> list | None:
    found: list[list[float] | None] = [None] * options.n_classes
    for estimate in knowledge.estimates:
        if estimate.slice == index:
            found[estimate.cls - 1] = _estimate_bounds(estimate, estimate.pixels(spacing2d[0] * spacing2d[1], 0.0), options)
    return found if any(v is not None for v in found) else None


def _volume_estimates(knowledge: CaseKnowledge, options: PrepareOptions, spacing2d, slice_mm: float) -> list | None:
    found: list[list[float] | None] = [None] * options.n_classes
    for estimate in knowledge.estimates:
        if estimate.slice is None:
            pixels = estimate.pixels(spacing2d[0] * spacing2d[1], slice_mm)
            found[estimate.cls - 1] = _estimate_bounds(estimate, pixels, options)
    return found if any(v is not None for v in found) else None


def _prepare_slice(root, result, options, index, volume_image, volume_label, affine, slice_spacing, rng,
                   annotation=None) -> SliceResult:
    volume = result.case.volume
    image2d = take_slice(volume_image, options.slice_axis, index)
    affine2d = slice_affine(affine, options.slice_axis, index)
    name = f"{volume}_{index:03d}.nii.gz"
    files = {"image": f"slices/image/{volume}_{index:03d}{IMAGE_SUFFIX}", "weak": {}}
    _write(root, result, files["image"], nifti_bytes(image2d.astype(np.float32), affine2d, COMPRESS_FLOAT_IMAGES))
    label2d = None
    if volume_label is not None:
        label2d = take_slice(volume_label, options.slice_axis, index)
        files["label"] = f"slices/label/{name}"
        _write(root, result, files["label"], nifti_bytes(label2d, affine2d))
        files = {"image": files["image"], "label": files["label"], "weak": {}}  # the historical key order
    weak_px, annotated = {}, {}
    for strategy in options.weak:
        if strategy in STRATEGIES:
            if label2d is None:
                continue  # generated strategies need the full mask
            weak = weak_label(label2d, options.n_classes, strategy, rng, options.weak_options)
        elif annotation is not None and annotation.weak is not None:
            weak = take_slice(annotation.weak, options.slice_axis, index)
        else:
            continue
        path = f"slices/weak/{strategy}/{name}"
        files["weak"][strategy] = path
        _write(root, result, path, nifti_bytes(weak, affine2d))
        weak_px[strategy] = class_sizes(np.where(weak == UNANNOTATED, 0, weak), options.n_classes)
        annotated[strategy] = int(np.count_nonzero(weak != UNANNOTATED))
    return SliceResult(
        index=index,
        files=files,
        spacing=slice_spacing,
        sizes=None if label2d is None else class_sizes(label2d, options.n_classes),
        weak_px=weak_px,
        annotated_px=annotated,
        n_pixels=int(image2d.size),
    )


def _write(root: Path, result: VolumeResult, relpath: str, data: bytes) -> None:
    result.checksums[relpath] = write_file(root, relpath, data)


def run_cases(cases: list[Case], options: PrepareOptions, root: Path, workers: int = 1,
              knowledge: dict[str, CaseKnowledge] | None = None) -> list[VolumeResult]:
    """Prepare every case (in ``workers`` processes), in input order, with a progress bar on a terminal."""
    from tqdm import tqdm

    task = functools.partial(_prepare_pair, options=options, root=root)
    given = [(case, (knowledge or {}).get(case.volume)) for case in cases]
    executor = None
    if workers > 1 and len(cases) > 1:
        executor = process_pool(min(workers, len(cases)))  # spawned, and killed with this process
        outcomes = executor.map(task, given, chunksize=1)
    else:
        outcomes = map(task, given)
    results = []
    try:
        for outcome in tqdm(outcomes, total=len(cases), desc=f"prepare {options.source}", unit="volume", disable=None):
            results.append(outcome)
    finally:
        if executor is not None:
            # Wait for running workers before the temporary folder is removed, so none writes after.
            executor.shutdown(wait=True, cancel_futures=True)
    return results


def _prepare_pair(pair: tuple[Case, CaseKnowledge | None], options: PrepareOptions, root: Path) -> VolumeResult:
    """:func:`prepare_volume` on one (case, knowledge) pair (a top-level function: workers pickle it)."""
    return prepare_volume(pair[0], options, root, pair[1])


def assign_splits(cases: list[Case], options: PrepareOptions) -> dict[str, str]:
    """Patient -> split, seeded, stratified by group when the source gives groups.

    Only patients whose every volume has a full mask can be scored, so only they go to
    validation and test; the others (weak-only) are training patients.
    """
    patients = sorted({c.patient for c in cases})
    groups = {c.patient: c.group for c in cases if c.group}
    fixed = {p: "validation" for p in options.val_patients}
    fixed.update({p: "test" for p in options.test_patients})
    unknown = sorted(set(fixed) - set(patients))
    if unknown:
        raise InputError(None, f"unknown patient(s) in --val-patients/--test-patients: {', '.join(unknown)}")
    weak_only = sorted({c.patient for c in cases if c.label is None})
    unscorable = sorted(p for p in fixed if p in weak_only)
    if unscorable:
        raise InputError(None, f"patient(s) {', '.join(unscorable)} in --val-patients/--test-patients have no full mask "
                         "to score against; only patients with full masks can be validation or test patients")
    try:
        n_val = resolve_count(options.val, len(patients)) if not options.val_patients else len(options.val_patients)
        n_test = resolve_count(options.test, len(patients)) if not options.test_patients else len(options.test_patients)
        if weak_only:
            masked = len(patients) - len(weak_only)
            if n_val + n_test > masked:
                raise InputError(None, f"--val/--test need {n_val} validation + {n_test} test patients with full masks, "
                                 f"but only {masked} of the {len(patients)} patients have them; lower --val/--test")
            fixed.update({p: "training" for p in weak_only})
        return split_patients(patients, n_val, n_test, options.seed, groups=groups, fixed=fixed)
    except ValueError as err:
        raise InputError(None, f"cannot split {len(patients)} patients: {err}") from None


def reference_patient(splits: dict[str, str], options: PrepareOptions, cases: list[Case] | None = None) -> str | None:
    """The patient(s) whose full masks give the common bounds: the option, or the first training patient
    with full masks; None when the bounds are typed, or when no training patient has full masks."""
    if options.common_values is not None or options.common_mm2 is not None:
        return None
    masked = {c.patient for c in cases or [] if c.label is not None} if cases is not None else set(splits)
    weak_only = {c.patient for c in cases or [] if c.label is None}
    if options.reference_patients:
        for patient in options.reference_patients:
            if patient not in splits:
                raise InputError(None, f"--reference-patient {patient} is not among the patients found")
            if patient in weak_only:
                raise InputError(None, f"--reference-patient {patient} has no full mask for every volume; "
                                 "choose patients with full masks or type the bounds (--common-bounds-mm2)")
        return options.reference_patient
    training = sorted(p for p, s in splits.items() if s == "training" and p in masked and p not in weak_only)
    return training[0] if training else None


def common_bounds(results: list[VolumeResult], reference: str | None, options: PrepareOptions) -> list[tuple[float, float]] | None:
    """Per class ``(lower, upper)`` from the reference patients' slices (or the typed values in px);
    None when the bounds are typed in mm² (converted per slice) or nobody gave them."""
    if options.common_values is not None:
        return [tuple(v) for v in options.common_values]
    if reference is None:
        return None
    patients = set(reference.split(","))
    bounds = []
    for cls in range(options.n_classes):
        sizes = [s.sizes[cls] for r in results if r.case.patient in patients for s in r.slices]
        try:
            bounds.append(common_range(sizes, options.bound_options))
        except ValueError:
            labels = [r.case.label for r in results if r.case.patient in patients]
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


def prepare(cases: list[Case], options: PrepareOptions, src: Path, out: Path, workers: int = 1, overwrite: bool = False,
            knowledge: dict[str, CaseKnowledge] | None = None) -> Path:
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
    reference = reference_patient(splits, options, cases)
    with atomic_dir(out, overwrite=overwrite) as root:
        results = run_cases(cases, options, root, workers, knowledge)
        common = common_bounds(results, reference, options)
        summary = manifest.write_outputs(root, src, results, splits, common, reference, options)
    manifest.print_summary(summary, out)
    return out
