"""Residual U-Net with averaged skip connections (the prostate network of the size-loss papers).

Kervadec et al., "Constrained-CNN losses for weakly supervised segmentation", MedIA 2019, used
for PROMISE12 a U-Net whose encoder and decoder stages are residual blocks and whose skip
connections are *averaged* with the upsampled decoder features instead of concatenated: the
decoder stage at each level sees ``(upsampled + skip) / 2``, which keeps its width equal to
the encoder's and makes the network lighter than a concatenating U-Net of the same width.

Layout for ``depth=4``, ``channels=32`` (channels per level 32, 64, 128, 256, bridge 512)::

    x -> enc0 -> pool -> enc1 -> pool -> enc2 -> pool -> enc3 -> pool -> bridge
          |               |               |               |                |
         avg <- up <---- avg <- up <---- avg <- up <---- avg <- up <-------+
          |  dec0         |  dec1         |  dec2         |  dec3
          v
         head (1x1 conv) -> logits (B, num_classes, H, W)

Following the authors' network: LeakyReLU(0.2) in the encoder and the bridge, ReLU in the
decoder, max pooling down, 3x3 stride-2 transposed convolutions up, batch normalisation.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResUNet", "ResidualBlock", "SkipAverage", "count_parameters"]

NORMS = ("batch", "instance", "none")


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def _activation(negative_slope: float) -> nn.Module:
    return nn.LeakyReLU(negative_slope, inplace=True) if negative_slope > 0 else nn.ReLU(inplace=True)


def _conv_norm_act(in_channels: int, out_channels: int, norm: str, negative_slope: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=norm == "none"),
        _norm(norm, out_channels),
        _activation(negative_slope),
    )


class ResidualBlock(nn.Module):
    """Convolution, a residual stack of convolutions, convolution: (B, Cin, H, W) -> (B, Cout, H, W).

    ``y = conv_out(x0 + body(x0))`` with ``x0 = conv_in(x)``; every convolution is 3x3 with
    padding 1, so the spatial size is kept. The last convolution of ``body`` has no activation,
    so the residual sum is taken before the non-linearity, as in a ResNet block.

    Args:
        in_channels: input channels Cin.
        out_channels: output channels Cout.
        body_convs: convolutions in the residual branch (the authors used 3).
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        negative_slope: LeakyReLU slope, 0 for ReLU.
        dropout: dropout probability applied at the output (0 = none).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        body_convs: int = 3,
        norm: str = "batch",
        negative_slope: float = 0.2,
        dropout: float = 0.0,
    ):
        super().__init__()
        if body_convs < 1:
            raise ValueError(f"body_convs must be >= 1, got {body_convs}.")
        self.conv_in = _conv_norm_act(in_channels, out_channels, norm, negative_slope)
        body: list[nn.Module] = [
            _conv_norm_act(out_channels, out_channels, norm, negative_slope) for _ in range(body_convs - 1)
        ]
        body += [nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=norm == "none"), _norm(norm, out_channels)]
        self.body = nn.Sequential(*body)
        self.conv_out = _conv_norm_act(out_channels, out_channels, norm, negative_slope)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.conv_in(x)
        return self.dropout(self.conv_out(x0 + self.body(x0)))


class SkipAverage(nn.Module):
    """Merge a skip connection by averaging: ``(upsampled + skip) / 2`` (shapes must match)."""

    mode = "average"

    def forward(self, upsampled: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return (upsampled + skip) * 0.5


class _UpStage(nn.Module):
    """Upsample x2 with a transposed convolution, average with the skip, residual block."""

    def __init__(self, in_channels: int, out_channels: int, body_convs: int, norm: str, dropout: float):
        super().__init__()
        self.up = nn.Sequential(
            # kernel 3, stride 2, padding 1, output_padding 1: exactly doubles H and W
            nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1, bias=norm == "none"),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )
        self.merge = SkipAverage()
        self.block = ResidualBlock(out_channels, out_channels, body_convs, norm, negative_slope=0.0, dropout=dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(self.merge(self.up(x), skip))


class ResUNet(nn.Module):
    """Residual U-Net with averaged skip connections, for 2D slices.

    Args:
        in_channels: input channels (1 for a grey-level MR slice).
        num_classes: output channels: one logit map per class, background included.
        channels: channels of the first level; level ``i`` has ``channels * 2**i`` and the
            bridge ``channels * 2**depth``.
        depth: number of down-sampling steps; H and W must be multiples of ``2**depth``.
        body_convs: convolutions in the residual branch of each block.
        norm: ``"batch"`` (the authors'), ``"instance"`` or ``"none"``.
        dropout: dropout probability after the bridge and the decoder blocks (0 = none).

    Shapes:
        input (B, in_channels, H, W) -> logits (B, num_classes, H, W), H and W multiples of
        ``2**depth`` (16 by default; use ``monai.transforms.DivisiblePad(k=16)`` otherwise).

    Example::

        >>> net = ResUNet(in_channels=1, num_classes=2, channels=8, depth=3)
        >>> net(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 2, 64, 64])
        >>> net.skip_merge
        'average'
    """

    skip_merge = "average"

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        channels: int = 32,
        depth: int = 4,
        body_convs: int = 3,
        norm: str = "batch",
        dropout: float = 0.0,
    ):
        super().__init__()
        if in_channels < 1 or num_classes < 1 or channels < 1:
            raise ValueError(
                f"in_channels, num_classes and channels must be >= 1, got {in_channels}, {num_classes}, {channels}."
            )
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}.")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}.")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        widths = [channels * 2**i for i in range(depth + 1)]  # last = bridge
        encoder_widths = [in_channels, *widths[:-1]]
        self.encoder = nn.ModuleList(
            ResidualBlock(encoder_widths[i], widths[i], body_convs, norm, negative_slope=0.2) for i in range(depth)
        )
        self.pool = nn.MaxPool2d(2)
        self.bridge = ResidualBlock(widths[-2], widths[-1], body_convs, norm, negative_slope=0.2, dropout=dropout)
        # decoder[i] brings level i+1 up to level i; run from the deepest level up
        self.decoder = nn.ModuleList(_UpStage(widths[i + 1], widths[i], body_convs, norm, dropout) for i in range(depth))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    @property
    def divisor(self) -> int:
        """H and W must be multiples of this."""
        return 2**self.depth

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return count_parameters(self)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"ResUNet expects input of shape (B, C, H, W), got {tuple(x.shape)}.")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"ResUNet was built for {self.in_channels} input channel(s), got {x.shape[1]}.")
        h, w = x.shape[-2:]
        if h % self.divisor or w % self.divisor:
            raise ValueError(
                f"ResUNet with depth={self.depth} needs H and W divisible by {self.divisor}, got ({h}, {w}); "
                f"pad or crop the input (e.g. monai.transforms.DivisiblePad(k={self.divisor}))."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bridge(x)
        for stage, skip in zip(reversed(self.decoder), reversed(skips)):
            x = stage(x, skip)
        return self.head(x)
