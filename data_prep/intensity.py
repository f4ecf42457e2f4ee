"""Intensity rules of data preparation: the normalisation and the constant-image check.

The normalisation (percentile clipping and linear rescaling, safe at float32's limits) is shared
with inference on raw scans, so it lives in :mod:`wss_monai.geometry`; this module keeps
data_prep's names for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_prep.errors import InputError
from wss_monai.geometry import DEFAULT_PERCENTILES, FLOAT32_SAFE, normalise_intensity  # noqa: F401  (data_prep's names)


def refuse_constant_foreground(image: np.ndarray, image_path: str | Path, classes: np.ndarray, label_path: str | Path,
                               what: str = "label") -> None:
    """Refuse an image whose voxels all hold one value when its ``classes`` (0 background) mark foreground.

    Such an image normalises to all-zero slices, which would be prepared as flat inputs labelled
    foreground: the network learns to draw the structure on a blank picture, and the sizes feed
    the bounds. No real scan is uniform with a structure drawn on it; it is a wrong file (a blank
    placeholder, a failed export or anonymisation that zeroed the voxels). So this is an error,
    not a warning. Left alone on purpose: a constant image whose label is all background (consistent,
    e.g. an empty volume), and an image constant on some slices only (padding slices, a saturated
    slab): normalisation is per volume, so the other slices keep their contrast.
    """
    if image.size == 0 or image.min() != image.max():
        return
    marked = int(np.count_nonzero(classes))
    if marked:
        raise InputError(image_path, f"image is constant (every voxel {float(image.flat[0]):g}) but its {what} marks "
                                     f"foreground in {marked} voxels ({label_path}): a wrong or blank image file?")
