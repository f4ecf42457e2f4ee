"""The exact dense Gaussian affinity, block of rows by block of rows: the reference every fast filter is tested against."""

from __future__ import annotations

import torch

from wss_monai.losses.affinity.operator import AffinityOperator


class ExactAffinity(AffinityOperator):
    """Exact dense Gaussian affinity, formed block of rows by block of rows (O(N^2) time, O(block x N) memory)."""

    method = "exact"

    def __init__(self, features: torch.Tensor, height: int, width: int, include_self: bool = True,
                 block_elements: int = 1 << 22) -> None:
        b, _, n = features.shape
        super().__init__(b, height, width, features.dtype, features.device, include_self)
        self.features = features
        self.rows = max(1, min(n, block_elements // max(1, b * n)))

    def _filter(self, values: torch.Tensor) -> torch.Tensor:
        f = self.features
        n = f.shape[2]
        out = torch.empty_like(values)
        for r0 in range(0, n, self.rows):
            r1 = min(n, r0 + self.rows)
            d2 = (f[:, :, r0:r1, None] - f[:, :, None, :]).square_().sum(1)  # (B, R, N)
            wblock = d2.mul_(-0.5).exp_()
            out[:, :, r0:r1] = torch.bmm(values, wblock.transpose(1, 2))
        return out

    def matrix(self) -> torch.Tensor:
        """The full (B, N, N) affinity (W, or W - I without the self term); for tests on small images."""
        f = self.features
        w = torch.exp(-0.5 * (f[:, :, :, None] - f[:, :, None, :]).square().sum(1))
        if not self.include_self:
            w = w - torch.eye(f.shape[2], dtype=w.dtype, device=w.device)
        return w
