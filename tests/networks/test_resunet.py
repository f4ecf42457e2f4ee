"""ResUNet: shapes, averaged skip connections, gradients, input checks, size."""

from __future__ import annotations

import pytest
import torch

from wss_monai.networks.resunet import ResUNet, SkipAverage, count_parameters


@pytest.mark.parametrize(
    "in_channels, num_classes, channels, depth, size",
    [(1, 2, 8, 4, (32, 48)), (3, 4, 4, 2, (8, 12)), (1, 1, 4, 1, (6, 10))],
)
def test_output_shape(in_channels, num_classes, channels, depth, size):
    net = ResUNet(in_channels=in_channels, num_classes=num_classes, channels=channels, depth=depth)
    out = net(torch.randn(2, in_channels, *size))
    assert out.shape == (2, num_classes, *size)
    assert out.dtype == torch.float32


def test_skips_are_averaged_not_concatenated():
    torch.manual_seed(0)
    net = ResUNet(num_classes=3, channels=4, depth=3).eval()
    assert net.skip_merge == "average"
    assert all(isinstance(stage.merge, SkipAverage) for stage in net.decoder)
    # the decoder block at each level takes the level's width, not twice it (as concatenation would)
    for level, stage in enumerate(net.decoder):
        assert stage.block.conv_in[0].in_channels == 4 * 2**level

    a, b = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(SkipAverage()(a, b), (a + b) / 2)

    # in a real forward pass, what enters each decoder block is (upsampled + encoder output) / 2
    seen = {}
    for level in range(3):
        net.encoder[level].register_forward_hook(lambda m, i, o, level=level: seen.__setitem__(("skip", level), o))
        net.decoder[level].up.register_forward_hook(lambda m, i, o, level=level: seen.__setitem__(("up", level), o))
        net.decoder[level].block.register_forward_hook(
            lambda m, i, o, level=level: seen.__setitem__(("merged", level), i[0])
        )
    with torch.no_grad():
        net(torch.randn(1, 1, 32, 32))
    for level in range(3):
        expected = (seen[("up", level)] + seen[("skip", level)]) / 2
        torch.testing.assert_close(seen[("merged", level)], expected)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    net = ResUNet(num_classes=2, channels=4, depth=3)
    x = torch.randn(2, 1, 16, 16, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(net(x), torch.randint(0, 2, (2, 16, 16)))
    loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_inputs_give_clear_errors():
    net = ResUNet(channels=4, depth=4)
    with pytest.raises(ValueError, match=r"divisible by 16, got \(250, 256\).*DivisiblePad\(k=16\)"):
        net(torch.zeros(1, 1, 250, 256))
    with pytest.raises(ValueError, match="1 input channel"):
        net(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        net(torch.zeros(1, 32, 32))
    with pytest.raises(ValueError, match="depth"):
        ResUNet(depth=0)
    with pytest.raises(ValueError, match="norm"):
        ResUNet(norm="layer")


def test_parameter_count_is_reported():
    net = ResUNet()  # the paper's configuration: 1 input channel, 32 channels, depth 4
    total = sum(p.numel() for p in net.parameters())
    assert net.num_parameters == count_parameters(net) == total
    print(f"ResUNet(channels=32, depth=4, num_classes=2): {total:,} parameters")
    # each extra level roughly quadruples the size; halving the width roughly quarters it
    assert count_parameters(ResUNet(channels=16)) < total / 3.5
    assert ResUNet(depth=3).num_parameters < total / 3.5


def test_eval_mode_runs_on_a_single_slice():
    net = ResUNet(channels=4, depth=2, norm="instance").eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 8, 8)).shape == (1, 2, 8, 8)
