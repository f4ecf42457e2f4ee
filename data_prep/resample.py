"""In-plane resampling of a 3D volume to the network's grid, and back (in :mod:`wss_monai.geometry`).

The implementation is shared with inference on raw scans, so it lives in the library; this module
keeps data_prep's names.
"""

from wss_monai.geometry import (  # noqa: F401 - re-exported
    MODES,
    InplanePlan,
    apply_plan,
    invert_plan,
    place_axis,
    plan_inplane,
    resample_axis,
    resampled_affine,
    resampled_spacing,
)
