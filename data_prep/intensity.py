"""Robust per-volume intensity normalisation (in :mod:`wss_monai.geometry`).

The implementation is shared with inference on raw scans, so it lives in the library; this module
keeps data_prep's names.
"""

from wss_monai.geometry import DEFAULT_PERCENTILES, normalise_intensity  # noqa: F401 - re-exported
