"""ACDC (cardiac cine MRI): patient folders ``patientNNN`` anywhere under the source folder.

Each folder holds ``Info.cfg`` and two frames ``patientNNN_frameYY.nii.gz`` with labels
``patientNNN_frameYY_gt.nii.gz`` (ED and ES); the whole cine ``patientNNN_4d.nii.gz`` is skipped.
Labels: 0 background, 1 right-ventricle cavity, 2 myocardium, 3 left-ventricle cavity; the
size-loss papers segment the LV (3). The pathology group from Info.cfg stratifies the split.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_prep.errors import InputError
from data_prep.sources import Case, SourceSpec, check_unique_volumes, require_folder, require_label

SPEC = SourceSpec(
    name="acdc",
    label_names={1: ("rv", "right ventricle"), 2: ("myo", "myocardium"), 3: ("lv", "left ventricle")},
    label_values=frozenset({0, 1, 2, 3}),
    default_targets="3",
    slice_axis=2,
    val="0.25",
    test="0",
    weak="erosion,random_disc,centroid_disc,box,scribble",
    notes="75/25 training/validation patients as in the papers; slices along the last axis (short axis)",
)
PATIENT_FOLDER = re.compile(r"patient\d{3}")
FRAME_IMAGE = re.compile(r"(patient\d{3})_frame(\d+)\.nii(\.gz)?")


def parse_info_cfg(path: Path) -> dict[str, str]:
    """``Key: value`` lines, tolerant of spaces around the colon, blank lines and odd lines."""
    info: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise InputError(path, f"cannot read Info.cfg ({err.strerror})") from None
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip():
            info[key.strip()] = value.strip()
    return info


def find_cases(src: str | Path, labels_optional: bool = False) -> list[Case]:
    """One case per (patient, frame) with a label (or without, when ``labels_optional``), sorted by patient then frame."""
    src = require_folder(src)
    folders = sorted(
        (p for p in src.rglob("patient*") if p.is_dir() and PATIENT_FOLDER.fullmatch(p.name)), key=lambda p: (p.name, str(p))
    )
    if not folders:
        raise InputError(src, "no ACDC patient folders (patientNNN) found")
    cases: list[Case] = []
    for folder in folders:
        cases.extend(_patient_cases(folder, labels_optional))
    return check_unique_volumes(cases, src)


def _patient_cases(folder: Path, labels_optional: bool = False) -> list[Case]:
    info_path = folder / "Info.cfg"
    info = parse_info_cfg(info_path) if info_path.exists() else {}
    phases = {_frame_number(info.get("ED")): "ED", _frame_number(info.get("ES")): "ES"}
    frames = []
    for path in sorted(folder.iterdir()):
        match = FRAME_IMAGE.fullmatch(path.name)
        if match and match.group(1) == folder.name:
            frames.append((int(match.group(2)), path))
    if not frames:
        raise InputError(folder, "patient folder holds no patientNNN_frameYY.nii.gz image")
    cases = []
    for number, image in frames:
        suffix = ".nii.gz" if image.name.endswith(".gz") else ".nii"
        label = require_label(image, image.with_name(image.name[: -len(suffix)] + "_gt" + suffix), labels_optional)
        cases.append(
            Case(
                patient=folder.name,
                volume=f"{folder.name}_frame{number:02d}",
                image=image,
                label=label,
                group=info.get("Group") or None,
                info={"phase": phases.get(number)} if number in phases else {},
            )
        )
    return cases


def _frame_number(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None
