"""Cut a 3D volume into 2D slices along one axis, and put slices back together (in :mod:`wss_monai.geometry`).

The implementation is shared with inference on raw scans, so it lives in the library; this module
keeps data_prep's names.
"""

from wss_monai.geometry import inplane_axes, restore_volume, slice_affine, stack_slices, take_slice  # noqa: F401 - re-exported
