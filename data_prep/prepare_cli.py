"""``python -m data_prep {acdc,promise12,vertebral,custom} --src RAW --out PREPARED [options]``.

One sub-command per source; they share every option of the pipeline (the papers' settings are
the defaults, dataset by dataset) and ``custom`` adds how to find and pair the files.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from data_prep import annotation_cli
from data_prep.bounds import BoundOptions
from data_prep.errors import InputError
from data_prep.intensity import DEFAULT_PERCENTILES
from data_prep.prepare import PrepareOptions, prepare
from data_prep.resample import MODES
from data_prep.size_knowledge import parse_mm2_bounds
from data_prep.sources import SourceSpec, acdc, custom, promise12, vertebral
from data_prep.weak_labels import STRATEGIES, WeakOptions

SOURCES = {"acdc": acdc, "promise12": promise12, "vertebral": vertebral, "custom": custom}
HELP = {
    "acdc": "ACDC cine MRI (patientNNN folders; LV = label 3 by default)",
    "promise12": "PROMISE12 prostate MRI (CaseNN.mhd + CaseNN_segmentation.mhd)",
    "vertebral": "vertebral bodies MR-T2 (Img_XX.nii + Img_XX_Labels.nii)",
    "custom": "your own NIfTI / MetaImage / NRRD / DICOM data, paired by pattern or CSV",
}


def add_parsers(subparsers) -> None:
    """Register one parser per source on ``subparsers`` (from ``python -m data_prep``)."""
    for name, module in SOURCES.items():
        spec: SourceSpec = module.SPEC
        parser = subparsers.add_parser(
            name,
            help=HELP[name],
            description=textwrap.fill(
                f"Prepare {HELP[name]} for weakly supervised training: 2D NIfTI slices, weak labels, "
                f"size bounds, splits. Defaults for {name}: {spec.notes}.",
                width=88,
            ),
            epilog=_epilog(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_io_options(parser, spec)
        if name == "custom":
            _add_custom_options(parser)
        _add_geometry_options(parser, spec)
        _add_weak_options(parser, spec)
        annotation_cli.add_annotation_options(parser)
        _add_bound_options(parser)
        _add_split_options(parser, spec)
        parser.set_defaults(func=run, source=name)


def _add_io_options(parser, spec: SourceSpec) -> None:
    group = parser.add_argument_group("input and output")
    group.add_argument("--src", required=True, type=Path, help="raw dataset folder (searched recursively)")
    group.add_argument("--out", required=True, type=Path, help="prepared dataset folder to create")
    group.add_argument("--overwrite", action="store_true", help="replace --out if it exists (only once the new one is complete)")
    targets = ", ".join(f"{v} = {long}" for v, (_, long) in sorted(spec.label_names.items()))
    group.add_argument(
        "--targets",
        default=spec.default_targets,
        help="raw label value(s) to segment, in class order: '3' (class 1 = raw 3), '3,2,1' (three classes), "
        f"'1+2,3' (raw 1 and 2 merged into class 1). Other declared label values become background. "
        f"Default {spec.default_targets}" + (f" ({targets})" if targets else ""),
    )
    group.add_argument("--name", default=None, help="dataset name in dataset.json (default: SOURCE-TARGETS, e.g. acdc-lv)")
    group.add_argument("--seed", type=int, default=0, help="seed of the split and the random weak labels (default 0)")
    group.add_argument("--workers", type=int, default=1, help="processes preparing volumes in parallel (default 1)")


def _add_custom_options(parser) -> None:
    group = parser.add_argument_group("custom data: finding and pairing files")
    group.add_argument(
        "--images",
        help="image path pattern relative to --src with {case} (and optionally {patient}), e.g. 'imagesTr/{case}.nii.gz'; "
        "a DICOM series is a folder: '{patient}/{case}/image'",
    )
    group.add_argument("--labels", help="label path pattern using the same placeholders, e.g. 'labelsTr/{case}.nii.gz'; "
                       "optional with your own annotations (a case without a label file is weak-only)")
    group.add_argument("--csv", dest="listing", type=Path, help="CSV with columns image,label[,patient][,case] instead of patterns")
    group.add_argument(
        "--label-values",
        help="every value a label file may hold, e.g. '0,1,2,3' (default: 0 and the --targets values); "
        "any other value is an error",
    )
    group.add_argument("--class-names", help="names of the classes in --targets order, e.g. 'liver,tumour'")


def _add_geometry_options(parser, spec: SourceSpec) -> None:
    group = parser.add_argument_group("geometry and intensity")
    group.add_argument("--size", default="256", help="in-plane size N or H,W of the slices (default 256, the papers')")
    group.add_argument(
        "--resize",
        choices=MODES,
        default="stretch",
        help="'stretch' resamples each axis to the size (the papers' plain resize, default); 'pad-crop' keeps "
        "the aspect ratio: one common pixel size, then zero-pad or centre-crop",
    )
    group.add_argument(
        "--inplane-spacing",
        type=float,
        default=None,
        help="pad-crop only: pixel size in mm (default: the one at which the whole field of view fits)",
    )
    group.add_argument(
        "--slice-axis",
        type=int,
        choices=(0, 1, 2),
        default=spec.slice_axis,
        help=f"file axis (i=0, j=1, k=2) to slice along (default {spec.slice_axis})",
    )
    group.add_argument(
        "--percentiles",
        default=",".join(str(p) for p in DEFAULT_PERCENTILES),
        help="per-volume intensity percentiles clipped and mapped to [0, 1] (default 0.5,99.5)",
    )


def _add_weak_options(parser, spec: SourceSpec) -> None:
    defaults = WeakOptions()
    group = parser.add_argument_group("weak labels (255 = unannotated)")
    group.add_argument(
        "--weak",
        default=spec.weak,
        help=f"strategies to write, the first is the primary one (bounds.csv weak_px); from {', '.join(STRATEGIES)} "
        f"(default {spec.weak})",
    )
    group.add_argument(
        "--erosion-iterations",
        type=int,
        default=defaults.erosion_iterations,
        help="erosion/scribble: iterations of the 3x3 erosion, fewer when the mask would vanish (default 10, the papers')",
    )
    group.add_argument(
        "--disc-radius",
        type=int,
        default=defaults.disc_radius,
        help="random_disc/centroid_disc radius in pixels (default 2: the original code's, ~0.02%% of pixels "
        "as the papers report; their text says 'up to 4')",
    )
    group.add_argument(
        "--box-margin", type=int, default=defaults.box_margin, help="box: margin in pixels around the object (default 5)"
    )
    group.add_argument(
        "--background-scribble",
        action="store_true",
        help="also annotate a background scribble (for regularized losses); default: foreground seeds only (the papers')",
    )
    group.add_argument(
        "--background-margin",
        type=int,
        default=defaults.background_margin,
        help="background scribble: minimum distance in pixels from the targets and the border (default 5)",
    )


def _add_bound_options(parser) -> None:
    group = parser.add_argument_group("size bounds (pixels on the resampled slice)")
    group.add_argument(
        "--reference-patient",
        default=None,
        help="patient(s) whose full masks give the common bounds, e.g. 'p1' or 'p1,p2' (default: the first training "
        "patient with full masks by ID; none when no training patient has them)",
    )
    group.add_argument(
        "--common-margins", default="0.9,1.1", help="factors on the reference's min and max size (default 0.9,1.1, eq. 6)"
    )
    group.add_argument(
        "--common-percentiles",
        default=None,
        help="use these percentiles of the reference's sizes instead of min and max, e.g. '5,95'",
    )
    group.add_argument(
        "--common-bounds",
        nargs="+",
        default=None,
        metavar="LO,HI",
        help="typed common bounds, one LO,HI per target class, instead of a reference patient "
        "(the papers' ACDC values are 60,2000 at 256x256)",
    )
    group.add_argument(
        "--individual-margins",
        default="0.9,1.1",
        help="factors on each slice's true size (individual, eq. 7) and on each volume's (volume3d) (default 0.9,1.1)",
    )


def _add_split_options(parser, spec: SourceSpec) -> None:
    group = parser.add_argument_group("splits (by patient, seeded)")
    group.add_argument(
        "--val", default=spec.val, help=f"validation patients: a count ('25') or a fraction ('0.25') (default {spec.val})"
    )
    group.add_argument("--test", default=spec.test, help=f"test patients: count or fraction (default {spec.test})")
    group.add_argument("--val-patients", default=None, help="comma-separated patient IDs for validation (overrides --val)")
    group.add_argument("--test-patients", default=None, help="comma-separated patient IDs for test (overrides --test)")


def _epilog(name: str) -> str:
    if name == "custom":
        return (
            "example:\n"
            "  python -m data_prep custom --src my_data --out prepared --images 'images/{case}.nii.gz' \\\n"
            "      --labels 'labels/{case}_seg.nii.gz' --targets 1 --class-names liver --size 256\n"
            "see data_prep/README.md for DICOM folders, CSV listings and label mapping."
        )
    return f"example:\n  python -m data_prep {name} --src RAW --out PREPARED --workers 2"


def run(args) -> int:
    """Entry point of the four sub-commands."""
    module = SOURCES[args.source]
    options = build_options(args, module.SPEC)
    if args.workers < 1:
        raise InputError(None, "--workers must be at least 1")
    labels_optional = annotation_cli.given(args)
    if args.source == "custom":
        cases = custom.find_cases(args.src, args.images, args.labels, args.listing, labels_optional=labels_optional)
    else:
        cases = module.find_cases(args.src, labels_optional=labels_optional)
    knowledge = None
    if options.user is not None:
        knowledge = annotation_cli.case_knowledge(args, options.user, cases, args.src)
    prepare(cases, options, args.src, args.out, workers=args.workers, overwrite=args.overwrite, knowledge=knowledge)
    return 0


def build_options(args, spec: SourceSpec) -> PrepareOptions:
    """PrepareOptions from the parsed command line; a bad option value is an InputError (exit 2)."""
    class_map = parse_targets(args.targets)
    label_values = spec.label_values
    class_names = [_class_name(spec, raws) for raws in class_map]
    short_names = [_short_name(spec, raws) for raws in class_map]
    if args.source == "custom":
        raw = {v for raws in class_map for v in raws}
        label_values = frozenset(_ints(args.label_values, "--label-values")) if args.label_values else frozenset({0} | raw)
        if args.class_names:
            class_names = [n.strip() for n in args.class_names.split(",")]
            if len(class_names) != len(class_map):
                raise InputError(None, f"--class-names gives {len(class_names)} names for {len(class_map)} target classes")
            short_names = [_slug(n) for n in class_names]
    outside = sorted({v for raws in class_map for v in raws} - set(label_values))
    if outside:
        raise InputError(None, f"--targets value(s) {outside} are not label values of {spec.name} {sorted(label_values)}")
    user = annotation_cli.user_options(args, class_map, label_values, class_names, short_names)
    user_name = user.name if user is not None and user.paints else None
    weak = tuple(s.strip() for s in args.weak.split(",") if s.strip())
    unknown = [s for s in weak if s not in STRATEGIES and s != user_name]
    if unknown:
        hint = "" if user_name else " (your own annotations: --weak-labels, --markups, --points or --boxes)"
        raise InputError(None, f"unknown --weak strategy {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}"
                         + (f" or {user_name}" if user_name else "") + hint)
    if user_name and user_name not in weak:
        weak = (user_name, *weak)  # the user's annotations are the primary strategy
    common_values = None
    if args.common_bounds:
        common_values = tuple(_pair(v, "--common-bounds") for v in args.common_bounds)
        if len(common_values) != len(class_map):
            raise InputError(None, f"--common-bounds gives {len(common_values)} pairs for {len(class_map)} target classes")
    common_mm2 = parse_mm2_bounds(args.common_bounds_mm2, len(class_map))
    if common_mm2 is not None and common_values is not None:
        raise InputError(None, "give common bounds once: --common-bounds (px) or --common-bounds-mm2, not both")
    if common_mm2 is not None and args.reference_patient:
        raise InputError(None, "give common bounds once: --reference-patient or --common-bounds-mm2, not both")
    return PrepareOptions(
        source=spec.name,
        name=args.name or f"{spec.name}-{'-'.join(short_names)}",
        class_map=class_map,
        class_names=tuple(class_names),
        label_values=frozenset(label_values),
        size=_size(args.size),
        resize=args.resize,
        inplane_spacing=args.inplane_spacing,
        slice_axis=args.slice_axis,
        percentiles=_pair(args.percentiles, "--percentiles"),
        weak=weak,
        weak_options=WeakOptions(
            erosion_iterations=_non_negative(args.erosion_iterations, "--erosion-iterations"),
            disc_radius=_non_negative(args.disc_radius, "--disc-radius"),
            box_margin=_non_negative(args.box_margin, "--box-margin"),
            background_scribble=args.background_scribble,
            background_margin=_non_negative(args.background_margin, "--background-margin"),
        ),
        bound_options=BoundOptions(
            common_margins=_pair(args.common_margins, "--common-margins"),
            individual_margins=_pair(args.individual_margins, "--individual-margins"),
            common_percentiles=_pair(args.common_percentiles, "--common-percentiles") if args.common_percentiles else None,
        ),
        reference_patient=args.reference_patient,
        common_values=common_values,
        common_mm2=common_mm2,
        user=user,
        val=args.val,
        test=args.test,
        val_patients=_names(args.val_patients),
        test_patients=_names(args.test_patients),
        seed=args.seed,
    )


def parse_targets(text: str) -> tuple[tuple[int, ...], ...]:
    """'3,2,1' -> ((3,), (2,), (1,)); '1+2,3' -> ((1, 2), (3,))."""
    try:
        classes = tuple(tuple(int(v) for v in group.split("+")) for group in text.split(","))
    except ValueError:
        raise InputError(None, f"--targets {text!r}: expected raw label values like '3' or '3,2,1' or '1+2,3'") from None
    flat = [v for group in classes for v in group]
    if len(flat) != len(set(flat)) or 0 in flat:
        raise InputError(None, f"--targets {text!r}: each raw value at most once, and never 0 (background)")
    return classes


def _class_name(spec: SourceSpec, raws: tuple[int, ...]) -> str:
    return " + ".join(spec.label_names.get(v, ("", f"label {v}"))[1] for v in raws)


def _short_name(spec: SourceSpec, raws: tuple[int, ...]) -> str:
    return "+".join(spec.label_names.get(v, (f"label{v}", ""))[0] for v in raws)


def _slug(name: str) -> str:
    return "-".join(name.lower().split())


def _size(text: str) -> tuple[int, int]:
    values = _ints(text, "--size")
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 8:
        raise InputError(None, f"--size {text!r}: expected N or H,W with at least 8 pixels")
    return (values[0], values[1])


def _pair(text: str, option: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(None, f"{option} {text!r}: expected two numbers LO,HI") from None
    if not low <= high:
        raise InputError(None, f"{option} {text!r}: LO must not exceed HI")
    return (low, high)


def _ints(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        raise InputError(None, f"{option} {text!r}: expected integers separated by commas") from None


def _non_negative(value: int, option: str) -> int:
    if value < 0:
        raise InputError(None, f"{option} must be >= 0, got {value}")
    return value


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip()) if text else ()
