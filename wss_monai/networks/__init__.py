"""Segmentation networks used by the papers (ENet, residual U-Net)."""

from wss_monai.networks.enet import ENet

__all__ = ["ENet"]
