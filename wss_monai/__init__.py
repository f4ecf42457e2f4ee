"""wss-monai: weakly supervised medical image segmentation on MONAI.

Sub-packages: ``losses`` (constrained-CNN size losses, priors, CRF-type regularizers),
``networks`` (ENet, residual U-Net).
"""

__version__ = "0.1.0"
