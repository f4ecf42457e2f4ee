"""Vertebral bodies, MR-T2 (Chu et al. 2015, Zenodo 22304): ``Img_XX.nii`` with ``Img_XX_Labels.nii``.

Volumes are (39, 305, 305) with axis 0 (2 mm) the sagittal slice axis; labels {0, 1} with the
seven vertebral bodies T11-L5 as separate components of label 1. The label files' header says
vox_offset 0; :mod:`data_prep.io` reads their data at byte 352 as other readers do.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_prep.errors import InputError
from data_prep.sources import Case, SourceSpec, check_unique_volumes, require_folder, require_label

SPEC = SourceSpec(
    name="vertebral",
    label_names={1: ("vb", "vertebral body")},
    label_values=frozenset({0, 1}),
    default_targets="1",
    slice_axis=0,
    val="0.2",
    test="0.15",
    weak="random_disc,erosion,centroid_disc,box,scribble",
    notes="of 23 scans: 15 training and 5 validation as in the papers, the other 3 as test; sagittal slices (axis 0)",
)
IMAGE_NAME = re.compile(r"(Img_\d+)\.nii(\.gz)?", re.IGNORECASE)


def find_cases(src: str | Path) -> list[Case]:
    """One case per ``Img_XX.nii`` image, paired with ``Img_XX_Labels.nii`` in the same folder."""
    src = require_folder(src)
    images = sorted((p for p in src.rglob("Img_*") if IMAGE_NAME.fullmatch(p.name)), key=lambda p: (p.name, str(p)))
    if not images:
        raise InputError(src, "no vertebral-body images (Img_XX.nii) found")
    cases = []
    for image in images:
        match = IMAGE_NAME.fullmatch(image.name)
        case_id, gz = match.group(1), match.group(2) or ""
        label = require_label(image, image.with_name(f"{case_id}_Labels.nii{gz}"))
        cases.append(Case(patient=case_id, volume=case_id, image=image, label=label))
    return check_unique_volumes(cases, src)
