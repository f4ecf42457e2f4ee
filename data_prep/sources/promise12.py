"""PROMISE12 (prostate T2 MRI): ``CaseNN.mhd`` with ``CaseNN_segmentation.mhd``, searched recursively.

The challenge ships the training cases in three zips; wherever they were unpacked under the
source folder, every ``*.mhd`` is found. Segmentation values are 0 and 1; slices along z.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_prep.errors import InputError
from data_prep.sources import Case, SourceSpec, check_unique_volumes, require_folder, require_label

SPEC = SourceSpec(
    name="promise12",
    label_names={1: ("prostate", "prostate")},
    label_values=frozenset({0, 1}),
    default_targets="1",
    slice_axis=2,
    val="0.2",
    test="0",
    weak="random_disc,erosion,centroid_disc,box,scribble",
    notes="40/10 training/validation cases as in the papers; slices along z (transversal)",
)
IMAGE_NAME = re.compile(r"(Case\d+)\.mhd", re.IGNORECASE)


def find_cases(src: str | Path) -> list[Case]:
    """One case per ``CaseNN.mhd`` image, paired with ``CaseNN_segmentation.mhd`` in the same folder."""
    src = require_folder(src)
    images = sorted((p for p in src.rglob("*.mhd") if IMAGE_NAME.fullmatch(p.name)), key=lambda p: (p.name, str(p)))
    if not images:
        raise InputError(src, "no PROMISE12 images (CaseNN.mhd) found")
    cases = []
    for image in images:
        case_id = IMAGE_NAME.fullmatch(image.name).group(1)
        label = require_label(image, image.with_name(f"{case_id}_segmentation.mhd"))
        cases.append(Case(patient=case_id, volume=case_id, image=image, label=label))
    return check_unique_volumes(cases, src)
