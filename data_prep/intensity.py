"""Robust per-volume intensity normalisation.

MR intensities have no absolute scale and PROMISE12's centres differ wildly, so each volume is
clipped to two of its own percentiles and mapped to [0, 1]: a few hot voxels (endorectal coil,
flow artefacts) no longer squash the contrast of the rest.
"""

from __future__ import annotations

import numpy as np

#: Lower and upper percentiles (in %) used by default.
DEFAULT_PERCENTILES = (0.5, 99.5)


def normalise_intensity(array: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> np.ndarray:
    """Clip ``array`` to its ``percentiles`` and rescale linearly to [0, 1] (float32).

    A constant volume maps to all zeros rather than dividing by zero.

    >>> normalise_intensity(np.array([0.0, 5.0, 10.0]), (0, 100)).tolist()
    [0.0, 0.5, 1.0]
    """
    low_pct, high_pct = percentiles
    if not 0 <= low_pct < high_pct <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    values = np.asarray(array, dtype=np.float32)
    low, high = np.percentile(values, [low_pct, high_pct])
    if not high > low:
        return np.zeros_like(values, dtype=np.float32)
    scaled = (np.clip(values, low, high) - np.float32(low)) / np.float32(high - low)
    return scaled.astype(np.float32, copy=False)
