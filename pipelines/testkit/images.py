"""Small synthetic 2D images and probability maps for the affinity-loss tests and benchmarks.

MR-like in about [0, 1]: a gradient background, a disc with an inner disc (placed at random per
channel, so the channels of a multi-channel image differ), Gaussian noise. The probability maps
are smooth (cumulative sums of noise), like a network's early predictions.
"""

from __future__ import annotations

import torch


def smooth_phantom(batch: int, size: int, channels: int = 1, noise: float = 0.05, seed: int = 0) -> torch.Tensor:
    """Images (batch, channels, size, size), seeded."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    images = []
    for _ in range(batch):
        chans = []
        for c in range(channels):
            cy, cx = (0.3 * torch.randn(2, generator=g)).tolist()
            r = ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt()
            img = 0.3 + 0.2 * xx + (0.5 - 0.1 * c) * (r < 0.4).float() + 0.2 * (r < 0.15).float()
            chans.append(img + noise * torch.randn(size, size, generator=g))
        images.append(torch.stack(chans))
    return torch.stack(images)


def smooth_logits(batch: int, classes: int, size: int, seed: int = 1) -> torch.Tensor:
    """Spatially smooth logits (batch, classes, size, size), seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, classes, size, size, generator=g).cumsum(-1).cumsum(-2) / 6


def smooth_probs(batch: int, classes: int, size: int, seed: int = 1) -> torch.Tensor:
    """The softmax of :func:`smooth_logits`."""
    return torch.softmax(smooth_logits(batch, classes, size, seed), dim=1)
