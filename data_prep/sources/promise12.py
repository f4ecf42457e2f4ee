"""PROMISE12 (prostate T2 MRI): ``CaseNN.mhd`` with ``CaseNN_segmentation.mhd``, searched recursively.

The challenge ships the training cases in three zips; wherever they were unpacked under the
source folder, every ``*.mhd`` is found. Segmentation values are 0 and 1; slices along z.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_prep.sources import Case, SourceSpec, paired_by_name

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


def find_cases(src: str | Path, labels_optional: bool = False) -> list[Case]:
    """One case per ``CaseNN.mhd`` image, paired with ``CaseNN_segmentation.mhd`` in the same folder."""
    return paired_by_name(src, "*.mhd", IMAGE_NAME, lambda m: f"{m.group(1)}_segmentation.mhd",
                          "no PROMISE12 images (CaseNN.mhd) found", labels_optional)
