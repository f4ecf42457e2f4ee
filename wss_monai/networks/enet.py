"""ENet (Paszke et al., "ENet: A Deep Neural Network Architecture for Real-Time Semantic
Segmentation", 2016), the network of the constrained-CNN papers for ACDC and vertebral body."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wss_monai.networks.prelu import PReLU

__all__ = ["ENet"]


def _bn_prelu(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels), PReLU(channels)]


class InitialBlock(nn.Module):
    """3x3 stride-2 convolution with ``16 - in_channels`` filters, concatenated with the 2x2
    max-pooled input (15 + 1 = 16 channels for one-channel images), then BN + PReLU."""

    def __init__(self, in_channels: int, out_channels: int = 16) -> None:
        super().__init__()
        if not 0 < in_channels < out_channels:
            raise ValueError(f"ENet's initial block needs 0 < in_channels < {out_channels}, got {in_channels}.")
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, stride=2, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)  # ceil: same size as the conv for odd inputs
        self.act = nn.Sequential(*_bn_prelu(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(torch.cat([self.conv(x), self.pool(x)], dim=1))


class Bottleneck(nn.Module):
    """Regular ENet bottleneck: 1x1 projection, 3x3 conv (plain, dilated, or 5x1 + 1x5
    asymmetric), 1x1 expansion, spatial dropout; added to the identity, then PReLU."""

    def __init__(self, channels: int, dilation: int = 1, asymmetric: bool = False, dropout: float = 0.1, projection: int = 4) -> None:
        super().__init__()
        inner = channels // projection
        if asymmetric:
            middle = [
                nn.Conv2d(inner, inner, (5, 1), padding=(2, 0), bias=False),
                nn.Conv2d(inner, inner, (1, 5), padding=(0, 2), bias=False),
            ]
        else:
            middle = [nn.Conv2d(inner, inner, 3, padding=dilation, dilation=dilation, bias=False)]
        self.branch = nn.Sequential(
            nn.Conv2d(channels, inner, 1, bias=False),
            *_bn_prelu(inner),
            *middle,
            *_bn_prelu(inner),
            nn.Conv2d(inner, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.Dropout2d(dropout),
        )
        self.act = PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.branch(x))


class DownsamplingBottleneck(nn.Module):
    """ENet downsampling bottleneck: the main branch max-pools (indices kept for the decoder)
    and zero-pads the channels; the other branch starts with a 2x2 stride-2 convolution.
    Odd sizes round up (ceil-mode pooling, one zero row/column for the convolution) so the
    decoder can return to the exact input size."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1, projection: int = 4) -> None:
        super().__init__()
        inner = in_channels // projection
        self.pool = nn.MaxPool2d(2, return_indices=True, ceil_mode=True)
        self.branch = nn.Sequential(
            nn.Conv2d(in_channels, inner, 2, stride=2, bias=False),
            *_bn_prelu(inner),
            nn.Conv2d(inner, inner, 3, padding=1, bias=False),
            *_bn_prelu(inner),
            nn.Conv2d(inner, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
        )
        self.extra = out_channels - in_channels
        self.act = PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        main, indices = self.pool(x)
        main = F.pad(main, (0, 0, 0, 0, 0, self.extra))
        h, w = x.shape[2:]
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2))
        return self.act(main + self.branch(x)), indices


def max_unpool(values: torch.Tensor, indices: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Place ``values`` (B, C, h, w) at the flat ``indices`` of a max-pooling into a zero (B, C, *size) map.

    The same result as ``F.max_unpool2d``, written as a scatter so that the network traces and
    exports (``max_unpool2d``'s output-size check does not survive ``torch.jit.trace``).
    """
    b, c = values.shape[0], values.shape[1]
    out = values.new_zeros(b, c, size[0] * size[1])
    out = out.scatter(2, indices.flatten(2), values.flatten(2))
    return out.view(b, c, size[0], size[1])


class UpsamplingBottleneck(nn.Module):
    """ENet upsampling bottleneck: the main branch is a 1x1 convolution followed by max-unpooling
    with the encoder's indices; the other branch upsamples with a 3x3 transposed convolution."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.1, projection: int = 4) -> None:
        super().__init__()
        inner = in_channels // projection
        self.main = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.project = nn.Sequential(nn.Conv2d(in_channels, inner, 1, bias=False), *_bn_prelu(inner))
        self.up = nn.ConvTranspose2d(inner, inner, 3, stride=2, padding=1, bias=False)
        self.expand = nn.Sequential(
            *_bn_prelu(inner),
            nn.Conv2d(inner, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Dropout2d(dropout),
        )
        self.act = PReLU(out_channels)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, size: torch.Size) -> torch.Tensor:
        main = max_unpool(self.main(x), indices, [int(size[0]), int(size[1])])
        ext = self.expand(self.up(self.project(x), output_size=size))
        return self.act(main + ext)


class ENet(nn.Module):
    """ENet (Paszke et al. 2016) for 2D segmentation, returning ``num_classes`` logits per pixel.

    Architecture of the paper (table 1): initial block (16 channels: ``16 - in_channels``
    convolution filters concatenated with the max-pooled input), stage 1 (downsampling to 64
    channels + 4 bottlenecks, dropout 0.01), stages 2-3 (downsampling to 128 in stage 2 only,
    then regular, dilated 2/4/8/16 and asymmetric 5x5 bottlenecks, dropout 0.1), decoder stages
    4-5 (upsampling bottlenecks with max-unpooling to 64 then 16 channels) and a final 3x3
    transposed convolution to full resolution. PReLU everywhere; about 0.36M parameters for
    one input channel and 2 classes.

    Any input size works (odd sizes included): unpooling and transposed convolutions take the
    encoder's sizes. Input (B, in_channels, H, W) -> logits (B, num_classes, H, W).

    Args:
        in_channels: image channels (1 for the papers' MRI/CT slices).
        num_classes: output classes (logits, apply softmax for the losses).
        dropout_stage1: spatial dropout of stage 1 (0.01).
        dropout: spatial dropout of the later stages (0.1).

    Example::

        >>> import torch
        >>> ENet(1, 2)(torch.randn(1, 1, 64, 64)).shape
        torch.Size([1, 2, 64, 64])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, dropout_stage1: float = 0.01, dropout: float = 0.1) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.initial = InitialBlock(in_channels, 16)
        self.down1 = DownsamplingBottleneck(16, 64, dropout_stage1)
        self.stage1 = nn.Sequential(*[Bottleneck(64, dropout=dropout_stage1) for _ in range(4)])
        self.down2 = DownsamplingBottleneck(64, 128, dropout)
        self.stage2 = self._stage(dropout)
        self.stage3 = self._stage(dropout)
        self.up4 = UpsamplingBottleneck(128, 64, dropout)
        self.stage4 = nn.Sequential(Bottleneck(64, dropout=dropout), Bottleneck(64, dropout=dropout))
        self.up5 = UpsamplingBottleneck(64, 16, dropout)
        self.stage5 = Bottleneck(16, dropout=dropout)
        self.fullconv = nn.ConvTranspose2d(16, num_classes, 3, stride=2, padding=1)

    @staticmethod
    def _stage(dropout: float) -> nn.Sequential:
        return nn.Sequential(
            Bottleneck(128, dropout=dropout),
            Bottleneck(128, dilation=2, dropout=dropout),
            Bottleneck(128, asymmetric=True, dropout=dropout),
            Bottleneck(128, dilation=4, dropout=dropout),
            Bottleneck(128, dropout=dropout),
            Bottleneck(128, dilation=8, dropout=dropout),
            Bottleneck(128, asymmetric=True, dropout=dropout),
            Bottleneck(128, dilation=16, dropout=dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ENet expects input of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}.")
        if min(x.shape[2:]) < 8:
            raise ValueError(f"ENet downsamples 8 times: H and W must be >= 8, got {tuple(x.shape[2:])}.")
        size0 = x.shape[2:]
        x0 = self.initial(x)
        size1 = x0.shape[2:]
        x1, idx1 = self.down1(x0)
        x1 = self.stage1(x1)
        size2 = x1.shape[2:]
        x2, idx2 = self.down2(x1)
        x2 = self.stage3(self.stage2(x2))
        y = self.stage4(self.up4(x2, idx2, size2))
        y = self.stage5(self.up5(y, idx1, size1))
        return self.fullconv(y, output_size=size0)
