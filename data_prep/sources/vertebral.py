"""Vertebral bodies, MR-T2 (Chu et al. 2015, Zenodo 22304): ``Img_XX.nii`` with ``Img_XX_Labels.nii``.

Volumes are (39, 305, 305) with axis 0 (2 mm) the sagittal slice axis; labels {0, 1} with the
seven vertebral bodies T11-L5 as separate components of label 1. The label files' header says
vox_offset 0; :mod:`data_prep.io` reads their data at byte 352 as other readers do.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_prep.sources import Case, SourceSpec, paired_by_name

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


def find_cases(src: str | Path, labels_optional: bool = False) -> list[Case]:
    """One case per ``Img_XX.nii`` image, paired with ``Img_XX_Labels.nii`` in the same folder."""
    return paired_by_name(src, "Img_*", IMAGE_NAME, lambda m: f"{m.group(1)}_Labels.nii{m.group(2) or ''}",
                          "no vertebral-body images (Img_XX.nii) found", labels_optional)
