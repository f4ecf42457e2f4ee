"""Segmentation networks used by the papers: ENet (ACDC, vertebral body) and the residual U-Net (prostate)."""

from wss_monai.networks.enet import ENet
from wss_monai.networks.resunet import ResUNet

__all__ = ["ENet", "ResUNet"]
