"""Your own data: NIfTI, MetaImage, NRRD files or DICOM series folders, paired by a pattern or a CSV.

Pattern pairing: ``images="imagesTr/{case}.nii.gz", labels="labelsTr/{case}.nii.gz"``: every path
under the source folder (files and folders, relative, with ``/``) that matches ``images`` is an
image, and its label is ``labels`` with the same placeholders filled in. ``{case}`` is required;
``{patient}`` is optional and groups several volumes of one patient into the same split (without
it each case is its own patient). A DICOM series is a folder: ``images="{case}/t2"``.

CSV pairing: a file with columns ``image`` and ``label`` (paths relative to the source folder, or
absolute) and optionally ``patient`` and ``case``.

Full masks are optional when the user gives weak annotations (``--weak-labels``, ``--markups``,
``--points``, ``--boxes``): without ``--labels`` every case is weak-only, and with it a case whose
label file is absent is weak-only (an empty ``label`` cell in a CSV listing likewise).

See data_prep/README.md for a worked example.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_prep.errors import InputError
from data_prep.tables import Table
from data_prep.sources import Case, SourceSpec, check_unique_volumes, require_folder, require_label

SPEC = SourceSpec(
    name="custom",
    label_names={},
    label_values=frozenset({0}),
    default_targets="1",
    slice_axis=2,
    val="0.2",
    test="0",
    weak="erosion,random_disc,centroid_disc,box,scribble",
    notes="slices along the last file axis unless --slice-axis says otherwise",
)
PLACEHOLDER = re.compile(r"\{(case|patient)\}")
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
EDGES = re.compile(r"^[._]+|[._]+$")


def check_pattern(pattern: str, option: str) -> str:
    """``pattern`` if its only braces are ``{case}`` and ``{patient}``; an InputError otherwise."""
    rest = PLACEHOLDER.sub("", pattern)
    if "{" in rest or "}" in rest:
        raise InputError(None, f"{option} {pattern!r}: only the placeholders {{case}} and {{patient}} may use braces")
    return pattern


def fill_pattern(pattern: str, fields: dict[str, str]) -> str:
    """``pattern`` with its placeholders replaced by ``fields`` (plain substitution, never ``str.format``)."""
    return PLACEHOLDER.sub(lambda match: fields[match.group(1)], pattern)


def pattern_regex(pattern: str) -> re.Pattern:
    """A regex for ``pattern``: literal text, ``{case}`` and ``{patient}`` each one or more characters but '/'."""
    check_pattern(pattern, "--images")
    if "{case}" not in pattern:
        raise InputError(None, f"image pattern {pattern!r} must contain {{case}}")
    parts, seen, position = [], set(), 0
    for match in PLACEHOLDER.finditer(pattern):
        parts.append(re.escape(pattern[position : match.start()]))
        name = match.group(1)
        parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+?)")
        seen.add(name)
        position = match.end()
    parts.append(re.escape(pattern[position:]))
    return re.compile("".join(parts))


def find_cases(src: str | Path, images: str | None = None, labels: str | None = None, listing: str | Path | None = None,
               labels_optional: bool = False) -> list[Case]:
    """Cases from a pattern pair (``images`` + ``labels``) or from a CSV ``listing``; with
    ``labels_optional`` (weak annotations given) a missing label makes a weak-only case."""
    src = require_folder(src)
    if listing is not None:
        cases = _cases_from_csv(src, Path(listing), labels_optional)
    elif images and (labels or labels_optional):
        cases = _cases_from_patterns(src, images, labels, labels_optional)
    else:
        raise InputError(None, "custom data needs --images and --labels patterns, or --csv "
                         "(or --images with your own annotations: --weak-labels, --markups, --points, --boxes, --tags or --size-estimates)")
    if not cases:
        where = listing if listing is not None else src
        raise InputError(where, "no cases found" + (f" matching {images!r}" if listing is None else ""))
    return check_unique_volumes(cases, src)


def _cases_from_patterns(src: Path, images: str, labels: str | None, labels_optional: bool = False) -> list[Case]:
    regex = pattern_regex(images)
    if labels is not None:
        check_pattern(labels, "--labels")
        unknown = set(PLACEHOLDER.findall(labels)) - set(PLACEHOLDER.findall(images))
        if unknown:
            raise InputError(None, f"label pattern {labels!r} uses {{{', '.join(sorted(unknown))}}} not in the image pattern")
    matches = []
    for path in sorted(src.rglob("*")):
        relpath = path.relative_to(src).as_posix()
        match = regex.fullmatch(relpath)
        if match:
            matches.append((relpath, match.groupdict()))
    label_of = {relpath: fill_pattern(labels, fields) for relpath, fields in matches} if labels is not None else {}
    # A label pattern that the image pattern also matches ("{case}_seg.nii" vs "{case}.nii") would
    # list the label files as images too: a match that is another match's label is not an image.
    label_relpaths = set(label_of.values())
    cases = []
    for relpath, fields in matches:
        if relpath in label_relpaths:
            continue
        case_id = fields["case"]
        patient = fields.get("patient") or case_id
        volume = case_id if "patient" not in fields or case_id.startswith(patient) else f"{patient}_{case_id}"
        label = src / label_of[relpath] if relpath in label_of else None
        cases.append(_case(patient, volume, src / relpath, label, labels_optional, fields))
    return cases


def _cases_from_csv(src: Path, listing: Path, labels_optional: bool = False) -> list[Case]:
    # Table reads a byte-order mark and CRLF line ends (as spreadsheet programs write them) and
    # strips the cells; each problem names the listing and its line.
    table = Table(listing, "CSV listing", required=("image",) if labels_optional else ("image", "label"))
    cases, seen = [], {}
    for row, number in table.rows:
        label_text = row.get("label", "")
        if not row["image"] or (not label_text and not labels_optional):
            raise table.error(number, "empty image or label path")
        image = _resolve(src, row["image"])
        key = str(image.resolve()) if image.exists() else str(image)
        if key in seen:  # one scan under two case names would land in two splits (leakage)
            raise table.error(number, f"image {row['image']} is listed twice (also on line {seen[key]})")
        seen[key] = number
        label = _resolve(src, label_text) if label_text else None
        case_id = row.get("case", "") or _stem(image)
        patient = row.get("patient", "") or case_id
        cases.append(_case(patient, case_id, image, label, labels_optional, {"case": case_id, "patient": patient}))
    return cases


def _case(patient: str, volume: str, image: Path, label: Path | None, labels_optional: bool = False,
          fields: dict | None = None) -> Case:
    if not image.exists() and not image.is_symlink():  # a broken link or loop: read_volume says which
        raise InputError(image, "image file missing")
    label = None if label is None else require_label(image, label, labels_optional)
    return Case(patient=_safe(patient), volume=_safe(volume), image=image, label=label,
                info={"fields": dict(fields)} if fields else {})


def _resolve(src: Path, text: str) -> Path:
    path = Path(text.strip())
    return path if path.is_absolute() else src / path


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".mhd", ".mha", ".nrrd", ".nhdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _safe(name: str) -> str:
    """A file-name-safe id: runs of other characters (``/``, ``\\``, spaces...) become '_' and
    leading or trailing dots and '_' go, so no id is a path, ``..`` or a hidden name."""
    return EDGES.sub("", UNSAFE.sub("_", name)) or "case"
