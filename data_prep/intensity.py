"""Robust per-volume intensity normalisation (in :mod:`wss_monai.geometry`), safe at float32's limits.

The implementation is shared with inference on raw scans, so it lives in the library; this module
keeps data_prep's names. The library computes in float32: for an image whose values come near
float32's largest value (about 3.4e38, e.g. +-3e38) the range ``high - low`` overflows to
infinity and every voxel became 0 without a word. Normalisation clips to percentiles and rescales
linearly, so it does not depend on the scale of the intensities: such an image is legal input
(a float map in unusual units) and must give what the same image scaled down gives. It is
therefore computed in float64 here, where float32 could overflow; every other image keeps the
library's float32 arithmetic, so prepared files stay byte-identical to earlier runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_prep.errors import InputError
from wss_monai.geometry import DEFAULT_PERCENTILES
from wss_monai.geometry import normalise_intensity as _normalise_float32

#: Below this magnitude the difference of any two values (``high - low``, ``value - low``, numpy's
#: percentile interpolation) is a finite float32, so the library's float32 arithmetic is exact enough.
FLOAT32_SAFE = float(np.finfo(np.float32).max) / 2


def normalise_intensity(array: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """Clip ``array`` to its ``percentiles`` and rescale linearly to [0, 1] (float32); constant -> zeros.

    >>> normalise_intensity(np.array([0.0, 5.0, 10.0]), (0, 100)).tolist()
    [0.0, 0.5, 1.0]
    >>> normalise_intensity(np.array([-3e38, 0.0, 3e38], dtype=np.float32), (0, 100)).tolist()
    [0.0, 0.5, 1.0]
    """
    values = np.asarray(array)
    if values.size == 0 or max(float(values.max()), -float(values.min())) < FLOAT32_SAFE:
        return _normalise_float32(values, percentiles)
    return _normalise_float64(values, percentiles)


def _normalise_float64(values: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """The library's rule (same percentiles, same clipping) in float64, where no difference overflows."""
    low_pct, high_pct = percentiles
    if not 0 <= low_pct < high_pct <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    wide = np.asarray(values, dtype=np.float64)
    low, high = np.percentile(wide, [low_pct, high_pct])
    if not high > low:
        return np.zeros(wide.shape, dtype=np.float32)
    return ((np.clip(wide, low, high) - low) / (high - low)).astype(np.float32)


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
