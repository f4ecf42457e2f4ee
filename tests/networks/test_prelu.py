"""wss_monai.networks.PReLU: torch's PReLU with a faster CPU backward.

It promises the same forward values, the same gradients (checked against autograd of ``F.prelu``
and by finite differences), the same parameters and state dict as ``nn.PReLU``, and plain
``F.prelu`` when nothing records gradients or when the module is traced or scripted.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from wss_monai.networks.prelu import PReLU, _PReLUFunction


def _pair(num_parameters: int, seed: int = 0) -> tuple[PReLU, nn.PReLU]:
    torch.manual_seed(seed)
    ours, reference = PReLU(num_parameters), nn.PReLU(num_parameters)
    with torch.no_grad():
        ours.weight.uniform_(-0.5, 0.9)  # negative slopes too: the gradient must not assume a > 0
        reference.weight.copy_(ours.weight)
    return ours, reference


@pytest.mark.parametrize(
    "shape, num_parameters",
    [((4, 3, 6, 5), 3), ((4, 3, 6, 5), 1), ((2, 5, 7), 5), ((2, 2, 3, 4, 5), 2), ((7,), 1)],
    ids=["2d-per-channel", "2d-one-slope", "1d", "3d", "vector"],
)
def test_values_and_gradients_equal_torch_prelu(shape, num_parameters):
    ours, reference = _pair(num_parameters)
    x = torch.randn(shape)
    x.view(-1)[:4] = 0.0  # the kink: torch takes the slope a there, and so must we
    x_ours, x_ref = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y_ours, y_ref = ours(x_ours), reference(x_ref)
    assert torch.equal(y_ours, y_ref)
    upstream = torch.randn(shape)
    (y_ours * upstream).sum().backward()
    (y_ref * upstream).sum().backward()
    assert torch.equal(x_ours.grad, x_ref.grad)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("num_parameters", [1, 3])
def test_gradients_match_finite_differences(num_parameters):
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    x[x.abs() < 1e-3] = 0.5  # keep away from the kink, where finite differences average both sides
    weight = torch.rand(num_parameters, dtype=torch.float64) - 0.3
    assert torch.autograd.gradcheck(_PReLUFunction.apply, (x.requires_grad_(True), weight.requires_grad_(True)))


def test_only_the_gradients_asked_for_are_computed():
    prelu = PReLU(3)
    prelu.weight.requires_grad_(False)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    prelu(x).sum().backward()
    assert x.grad is not None and prelu.weight.grad is None
    frozen_input = torch.randn(2, 3, 4, 4)
    PReLU(3)(frozen_input).sum().backward()  # weight only: no error, no input gradient


def test_state_dicts_are_interchangeable_with_torch_prelu():
    ours, reference = _pair(4)
    assert ours.state_dict().keys() == reference.state_dict().keys()
    fresh = nn.PReLU(4)
    fresh.load_state_dict(ours.state_dict())
    assert torch.equal(fresh.weight, ours.weight)


def test_without_gradients_and_in_torchscript_it_is_plain_prelu():
    ours, _ = _pair(3)
    x = torch.randn(2, 3, 5, 5)
    expected = F.prelu(x, ours.weight.detach())
    with torch.no_grad():
        assert torch.equal(ours(x), expected)
    scripted = torch.jit.script(ours)
    traced = torch.jit.trace(ours, x)
    assert torch.equal(scripted(x), expected) and torch.equal(traced(x), expected)
    assert "PythonOp" not in str(traced.graph)  # nothing that a saved TorchScript file could not hold
