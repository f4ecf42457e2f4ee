"""Segmentation networks used by the papers (ENet, residual U-Net)."""
