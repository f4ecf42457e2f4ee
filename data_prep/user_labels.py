"""Annotation label maps drawn by the user (3D Slicer, ITK-SNAP...): read, check against the image, map values.

Any format the image reader takes (NIfTI, NRRD, MetaImage, a DICOM folder) is accepted. The
file must lie on the image's voxel grid: the same shape, spacing, orientation and origin, up to
:data:`~data_prep.io.SPACING_RTOL` on the spacing, :data:`~data_prep.io.DIRECTION_ATOL` on the
direction cosines and :data:`~data_prep.io.ORIGIN_TOL` of a voxel on the origin, the check full
label volumes get too. A file on another grid is refused (never resampled silently): a scribble
shifted by half a voxel lands on the neighbouring structure.
"""

from __future__ import annotations

import numpy as np

from data_prep.io import DIRECTION_ATOL, ORIGIN_TOL, SPACING_RTOL  # noqa: F401 - re-exported
from data_prep.io import Volume, check_same_grid, read_volume
from data_prep.user_classes import ClassVocabulary, map_values


def check_geometry(image: Volume, other: Volume, what: str = "annotation") -> None:
    """Refuse ``other`` unless it lies on ``image``'s grid (:func:`data_prep.io.check_same_grid`, as for labels)."""
    check_same_grid(image, other, what)


def read_label_map(path, image: Volume, lookup: dict[int, int] | None, vocab: ClassVocabulary) -> np.ndarray:
    """The annotation at ``path`` as uint8 classes (255 unannotated) on ``image``'s raw grid."""
    volume = read_volume(path, "annotation")
    check_geometry(image, volume)
    return map_values(volume.array, lookup, vocab, volume.path)
