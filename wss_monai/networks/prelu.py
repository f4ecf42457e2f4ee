"""PReLU with a faster backward pass on the CPU; the same parameters, values and gradients as ``nn.PReLU``.

Why: ATen's CPU PReLU backward (``_prelu_kernel_backward``) costs about ten times its forward, and
ENet has a PReLU after nearly every layer: on a 256 x 256, batch-8 ENet training step on one core
it was 24% of the step. The same gradients written as a few vectorised tensor operations cost a
fraction of that (``python -m pipelines.benchmarks training`` measures the step).

For y = prelu(x) = x if x > 0 else a * x (``a`` one slope, or one per channel, dim 1):

- dL/dx = g if x > 0 else a * g
- dL/da = sum over every dim but the channel of g * min(x, 0)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PReLU"]


def _slope_shape(x: torch.Tensor, weight: torch.Tensor) -> tuple[int, ...]:
    """Shape that broadcasts the slopes over ``x``: (1, C, 1, ...) per channel, (1,) * dim for one slope."""
    if weight.numel() == 1:
        return (1,) * x.dim()
    return (1, weight.numel()) + (1,) * (x.dim() - 2)


class _PReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return F.prelu(x, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        slope = weight.reshape(_slope_shape(x, weight))
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            # The local slope, exactly 1 where x > 0 and exactly a elsewhere (p + (1 - p) * a with p
            # 0 or 1); built from sign() because torch.where with a mask is slow on the CPU.
            positive = x.clamp(min=0).sign_()
            grad_x = grad * torch.addcmul(positive, 1 - positive, slope)
        if ctx.needs_input_grad[1]:
            per_element = grad * x.clamp(max=0)
            if weight.numel() == 1:
                grad_weight = per_element.sum().reshape(weight.shape)
            else:
                grad_weight = per_element.sum(dim=[d for d in range(x.dim()) if d != 1])
        return grad_x, grad_weight


class PReLU(nn.PReLU):
    """``torch.nn.PReLU`` (same arguments and ``weight``, so checkpoints load either way) whose backward
    pass is computed by :class:`_PReLUFunction` when gradients are recorded.

    Without gradients (inference, ``torch.no_grad``), and when traced or scripted for export, it is
    exactly ``F.prelu``. Input (N, C, ...) with C = ``num_parameters`` (or any shape for one slope).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting() and not torch.jit.is_tracing() and torch.is_grad_enabled():
            return self._forward_with_fast_backward(x)
        return F.prelu(x, self.weight)

    @torch.jit.unused
    def _forward_with_fast_backward(self, x: torch.Tensor) -> torch.Tensor:
        if not (x.requires_grad or self.weight.requires_grad):
            return F.prelu(x, self.weight)
        return _PReLUFunction.apply(x, self.weight)
