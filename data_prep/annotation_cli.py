"""Command-line options for the user's own annotations, and what they resolve to for each case.

Shared by every source (``acdc``, ``promise12``, ``vertebral``, ``custom``). Patterns take the
placeholders of ``--images``: ``{case}`` (the case id: ``patient001_frame01`` for ACDC,
``Case00`` for PROMISE12, the ``{case}`` match for custom data), ``{patient}``, and ``{folder}``
(the image's folder relative to ``--src``), and are filled in for each case, relative to ``--src``.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_prep.boxes import read_boxes
from data_prep.errors import InputError
from data_prep.points import SPACES, read_points_csv
from data_prep.size_knowledge import read_estimates
from data_prep.sources import Case
from data_prep.tags import read_tags
from data_prep.user_classes import ClassVocabulary, parse_value_map, value_lookup, vocabulary
from data_prep.user_weak import DEFAULT_NAME, DEFAULT_POINT_RADIUS_MM, CaseKnowledge, UserOptions
from data_prep.weak_labels import STRATEGIES

PLACEHOLDER = re.compile(r"\{(case|patient|folder)\}")
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def add_annotation_options(parser) -> None:
    group = parser.add_argument_group(
        "your own annotations (full masks become optional: a case without one is a weak-only training case)")
    group.add_argument("--weak-labels", metavar="PATTERN",
                       help="annotation label maps per case (scribbles, painted seeds), any format the image reader "
                       "takes, on the image's grid, e.g. '{folder}/{case}_scribble.nii.gz'; a strategy named --weak-name")
    group.add_argument("--weak-name", default=DEFAULT_NAME,
                       help=f"name of the strategy holding your annotations (default {DEFAULT_NAME}; bundles: --weak NAME)")
    group.add_argument("--weak-values", metavar="MAP",
                       help="file value -> raw label value, 'background' or 'none' (not annotated), e.g. the public ACDC "
                       "scribbles '0=background,1=1,2=2,3=3,4=none', ITK-SNAP '0=none,1=background,2=3'. Default: 0=none, "
                       "every other value is the raw label value it equals")
    group.add_argument("--weak-priority", metavar="LIST",
                       help="which class wins a prepared pixel covered by several annotated classes, first wins, as raw "
                       "values or 'background', e.g. '2,3,1,background' (default: --targets order, background last)")
    group.add_argument("--markups", metavar="PATTERN",
                       help="3D Slicer point lists per case (*.mrk.json, LPS or RAS), e.g. '{folder}/{case}.mrk.json'")
    group.add_argument("--markups-class-from", choices=("label", "description"), default="label",
                       help="where a control point's class is written (default label: 'LV-1' is class lv)")
    group.add_argument("--points", type=Path, metavar="CSV",
                       help="points as CSV: case,class,x,y,z (world mm, see --points-space) or case,class,i,j,k (voxels)")
    group.add_argument("--points-space", choices=SPACES, default=None,
                       help="coordinate system of the x,y,z columns of --points (required for world coordinates)")
    group.add_argument("--point-radius", type=float, default=DEFAULT_POINT_RADIUS_MM, metavar="MM",
                       help=f"radius in mm of the disc painted around each point on its slice (default {DEFAULT_POINT_RADIUS_MM})")
    group.add_argument("--boxes", type=Path, metavar="CSV",
                       help="boxes as CSV: case,class,i_min,i_max,j_min,j_max,k_min,k_max (voxels, inclusive): "
                       "background outside the boxes of each boxed slice")
    group.add_argument("--tags", type=Path, metavar="CSV",
                       help="image tags as CSV: case,class,present[,slice]: presence and stated absence per case or slice")
    group.add_argument("--size-estimates", type=Path, metavar="CSV",
                       help="estimated sizes as CSV: case,class,size,unit[,slice][,tolerance] (mm2 or px per slice: "
                       "individual; mm3, ml or px per case: volume3d)")
    group.add_argument("--annotation-classes", metavar="MAP",
                       help="names used by point labels and CSV class columns -> raw label value or 'background', e.g. "
                       "'lv=3,myo=2,rv=1,bg=background' (raw values, class names and 'background' always work)")
    group.add_argument("--every-case-annotated", action="store_true",
                       help="every case has a --weak-labels file (or --markups file): a missing one is an error")
    group.add_argument("--common-bounds-mm2", nargs="+", default=None, metavar="LO,HI",
                       help="common bounds typed in mm2, one LO,HI per target class, converted per slice to pixels")


def given(args) -> bool:
    """True when the command line gives any weak annotation or size knowledge of the user's."""
    return any(getattr(args, name, None) for name in (
        "weak_labels", "markups", "points", "boxes", "tags", "size_estimates"))


def paints(args) -> bool:
    return any(getattr(args, name, None) for name in ("weak_labels", "markups", "points", "boxes"))


def user_options(args, class_map, label_values, class_names, short_names) -> UserOptions | None:
    """The run's UserOptions (None when nothing of the user's is given)."""
    if not given(args):
        for option in ("weak_values", "weak_priority", "annotation_classes"):
            if getattr(args, option, None):
                raise InputError(None, f"--{option.replace('_', '-')} needs --weak-labels, --markups, --points, --boxes, "
                                 "--tags or --size-estimates")
        return None
    vocab = vocabulary(class_map, label_values, class_names, short_names, args.annotation_classes)
    for option in ("weak_labels", "markups"):
        if getattr(args, option):
            check_pattern(getattr(args, option), "--" + option.replace("_", "-"))
    if not NAME.fullmatch(args.weak_name) or args.weak_name in STRATEGIES:
        raise InputError(None, f"--weak-name {args.weak_name!r}: a name of letters, digits, '_' and '-', other than "
                         f"the generated strategies ({', '.join(STRATEGIES)})")
    if args.point_radius < 0:
        raise InputError(None, f"--point-radius must be >= 0, got {args.point_radius}")
    pairs = parse_value_map(args.weak_values)
    lookup = value_lookup(pairs, vocab)
    return UserOptions(
        vocab=vocab,
        name=args.weak_name,
        label_pattern=args.weak_labels,
        value_lookup=None if lookup is None else tuple(sorted(lookup.items())),
        values_text=args.weak_values,
        priority=priority(args.weak_priority, vocab, len(class_map)),
        markups_pattern=args.markups,
        markups_class_from=args.markups_class_from,
        point_radius_mm=float(args.point_radius),
        points_csv=None if args.points is None else str(args.points),
        points_space=args.points_space,
        boxes_csv=None if args.boxes is None else str(args.boxes),
        tags_csv=None if args.tags is None else str(args.tags),
        estimates_csv=None if args.size_estimates is None else str(args.size_estimates),
        every_case=args.every_case_annotated,
    )


def priority(text: str | None, vocab: ClassVocabulary, n_classes: int) -> tuple[int, ...]:
    """Classes in priority order, every class 0..K once (default: 1..K then background)."""
    if not text:
        return tuple(range(1, n_classes + 1)) + (0,)
    order = []
    for token in (t for t in text.split(",") if t.strip()):
        cls = vocab.token_to_class(token)
        if cls is None or cls == 255:
            raise InputError(None, f"--weak-priority {text!r}: {token.strip()!r} is not a declared label value or 'background'")
        if cls not in order:
            order.append(cls)
    missing = [c for c in range(n_classes + 1) if c not in order]
    if missing:
        raise InputError(None, f"--weak-priority {text!r} leaves out class(es) {missing}; list every class and background")
    return tuple(order)


def check_pattern(pattern: str, option: str) -> str:
    rest = PLACEHOLDER.sub("", pattern)
    if "{" in rest or "}" in rest:
        raise InputError(None, f"{option} {pattern!r}: only the placeholders {{case}}, {{patient}} and {{folder}} may use braces")
    return pattern


def fill(pattern: str, case: Case, src: Path) -> Path:
    """The pattern filled in for ``case`` (plain substitution, never ``str.format``), under ``src``."""
    fields = {"case": case.volume, "patient": case.patient}
    fields.update(case.info.get("fields") or {})
    try:
        fields["folder"] = case.image.parent.relative_to(src).as_posix()
    except ValueError:
        fields["folder"] = "."
    return src / PLACEHOLDER.sub(lambda m: fields.get(m.group(1)) or fields["case"], pattern)


def case_knowledge(args, options: UserOptions, cases: list[Case], src: Path) -> dict[str, CaseKnowledge]:
    """Per case: its annotation files (checked to exist) and its rows of the CSV files."""
    volumes = {c.volume for c in cases}
    vocab = options.vocab
    points = read_points_csv(args.points, vocab, volumes, args.points_space) if args.points else {}
    boxes = read_boxes(args.boxes, vocab, volumes) if args.boxes else {}
    tags = read_tags(args.tags, vocab, volumes) if args.tags else {}
    estimates = read_estimates(args.size_estimates, vocab, volumes) if args.size_estimates else {}
    found = {}
    for case in cases:
        label_map = _existing(options.label_pattern, case, src)
        markups = _existing(options.markups_pattern, case, src)
        knowledge = CaseKnowledge(
            label_map=label_map, markups=markups, points=tuple(points.get(case.volume, ())),
            boxes=tuple(boxes.get(case.volume, ())), tags=tuple(tags.get(case.volume, ())),
            estimates=tuple(estimates.get(case.volume, ())),
        )
        if options.every_case and options.label_pattern and label_map is None:
            raise InputError(fill(options.label_pattern, case, src),
                             f"annotation file missing for case {case.volume} (--every-case-annotated)")
        if options.every_case and options.markups_pattern and not options.label_pattern and markups is None:
            raise InputError(fill(options.markups_pattern, case, src),
                             f"markups file missing for case {case.volume} (--every-case-annotated)")
        if options.every_case and not knowledge.paints:
            raise InputError(case.image, f"case {case.volume} has no annotation (--every-case-annotated)")
        found[case.volume] = knowledge
    return found


def _existing(pattern: str | None, case: Case, src: Path) -> Path | None:
    if not pattern:
        return None
    path = fill(pattern, case, src)
    return path if path.exists() or path.is_symlink() else None
