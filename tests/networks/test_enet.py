"""ENet: the network of the constrained-CNN papers (Paszke et al. 2016)."""

import pytest
import torch

from wss_monai.networks import ENet


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return ENet(in_channels=1, num_classes=2)


@pytest.mark.parametrize("size", [(64, 64), (96, 128), (33, 17), (8, 8)])
def test_output_has_one_logit_map_per_class_at_input_size(net, size):
    out = net(torch.randn(2, 1, *size))
    assert out.shape == (2, 2, *size)


def test_initial_block_concatenates_15_conv_channels_with_the_pooled_input(net):
    assert net.initial.conv.out_channels == 15
    x = torch.randn(1, 1, 32, 32)
    assert net.initial(x).shape == (1, 16, 16, 16)


def test_parameter_count_matches_the_original_enet():
    count = sum(p.numel() for p in ENet(1, 2).parameters())
    assert 350_000 <= count <= 370_000, count
    assert sum(p.numel() for p in ENet(1, 4).parameters()) > count  # only the last layer grows


def test_gradient_reaches_every_parameter(net):
    net.train()
    out = net(torch.randn(2, 1, 32, 32))
    torch.log_softmax(out, dim=1)[:, 1].mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert any(p.grad.abs().sum() > 0 for p in net.parameters())
    net.zero_grad()


def test_eval_mode_is_deterministic(net):
    net.eval()
    x = torch.randn(2, 1, 48, 40)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    net.train()


def test_bad_input_is_reported_with_the_expected_shape(net):
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=">= 8"):
        net(torch.randn(1, 1, 4, 4))


def test_scatter_unpooling_equals_max_unpool2d_values_and_gradients():
    import torch.nn.functional as F

    from wss_monai.networks.enet import max_unpool

    x = torch.randn(2, 3, 9, 11)
    pooled, indices = F.max_pool2d(x, 2, return_indices=True, ceil_mode=True)
    values = pooled.detach().requires_grad_(True)
    reference = values.detach().clone().requires_grad_(True)
    ours = max_unpool(values, indices, [9, 11])
    expected = F.max_unpool2d(reference, indices, 2, output_size=(9, 11))
    assert torch.equal(ours, expected)
    weights = torch.randn_like(ours)
    (ours * weights).sum().backward()
    (expected * weights).sum().backward()
    assert torch.equal(values.grad, reference.grad)


def test_enet_traces_to_torchscript_with_the_same_outputs():
    net = ENet(1, 2).eval()
    x = torch.randn(1, 1, 40, 48)
    traced = torch.jit.trace(net, x)
    assert torch.allclose(traced(x), net(x), atol=1e-5)
