"""Annotation label maps drawn by the user (3D Slicer, ITK-SNAP...): read, check against the image, map values.

Any format the image reader takes (NIfTI, NRRD, MetaImage, a DICOM folder) is accepted. The
file must lie on the image's voxel grid: the same shape, spacing, orientation and origin, up to
:data:`SPACING_RTOL` on the spacing, :data:`DIRECTION_ATOL` on the direction cosines and
:data:`ORIGIN_TOL` of a voxel on the origin. A file on another grid is refused (never resampled
silently): a scribble shifted by half a voxel lands on the neighbouring structure.
"""

from __future__ import annotations

import numpy as np

from data_prep.errors import InputError
from data_prep.io import Volume, read_volume
from data_prep.user_classes import ClassVocabulary, map_values

SPACING_RTOL = 1e-3
DIRECTION_ATOL = 1e-3
#: Origin tolerance, as a fraction of the smallest voxel size.
ORIGIN_TOL = 0.1


def check_geometry(image: Volume, other: Volume, what: str = "annotation") -> None:
    """Refuse ``other`` unless it lies on ``image``'s grid (shape, spacing, orientation, origin)."""
    name = image.path.name
    if image.array.shape != other.array.shape:
        raise InputError(other.path, f"{what} shape {other.array.shape} differs from image shape {image.array.shape} ({name})")
    if not np.allclose(image.spacing, other.spacing, rtol=SPACING_RTOL, atol=1e-5):
        raise InputError(other.path, f"{what} spacing {_fmt(other.spacing)} differs from image spacing {_fmt(image.spacing)} ({name})")
    spacing = np.asarray(image.spacing, dtype=np.float64)
    directions = [np.asarray(v.affine, dtype=np.float64)[:3, :3] / spacing for v in (image, other)]
    if not np.allclose(directions[0], directions[1], atol=DIRECTION_ATOL):
        raise InputError(other.path, f"{what} orientation differs from the image's ({name}): "
                         f"axes {_axes(directions[1])} vs {_axes(directions[0])}")
    shift = np.asarray(other.affine, dtype=np.float64)[:3, 3] - np.asarray(image.affine, dtype=np.float64)[:3, 3]
    if np.abs(shift).max() > ORIGIN_TOL * spacing.min():
        raise InputError(other.path, f"{what} origin is {np.abs(shift).max():.3g} mm away from the image's ({name}); "
                         f"tolerance {ORIGIN_TOL * spacing.min():.3g} mm")


def read_label_map(path, image: Volume, lookup: dict[int, int] | None, vocab: ClassVocabulary) -> np.ndarray:
    """The annotation at ``path`` as uint8 classes (255 unannotated) on ``image``'s raw grid."""
    volume = read_volume(path, "annotation")
    check_geometry(image, volume)
    return map_values(volume.array, lookup, vocab, volume.path)


def _axes(direction: np.ndarray) -> str:
    names = []  # the RAS+ direction each voxel axis points to, e.g. 'LPS'
    for column in direction.T:
        axis = int(np.argmax(np.abs(column)))
        names.append(("R", "A", "S")[axis] if column[axis] > 0 else ("L", "P", "I")[axis])
    return "".join(names)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"
