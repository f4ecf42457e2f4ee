"""What every wss-monai loss term shares: the call contract and its argument checks (``docs/ARCHITECTURE.md``).

Every term is called as ``term(probs, weak=..., bounds=..., image=..., volume=...)`` and returns
a 0-d tensor. ``probs`` are softmax probabilities of shape (B, C, H, W) (a term that needs
logits says so). The keywords are named tensors of the batch:

- ``weak``: (B, H, W) integer class index on annotated pixels, 255 on unannotated ones;
- ``bounds``: (B, C, 2) lower and upper size in pixels per class ((0, inf) = unconstrained);
- ``image``: (B, Ci, H, W) the network input;
- ``volume``: (B,) integer id of the volume each slice comes from.

A term ignores the keywords it does not need and raises a clear error naming the one it needs
and did not get.
"""

from __future__ import annotations

import torch
from torch import nn

UNANNOTATED = 255
"""Weak-label value of pixels nobody annotated (the prepared-dataset contract)."""

REDUCTIONS = ("mean", "sum", "none")


class LossTerm(nn.Module):
    """Base class of the loss terms: keyword checks and reductions shared by all of them."""

    def _require(self, name: str, value: torch.Tensor | None) -> torch.Tensor:
        if value is None:
            raise ValueError(
                f"{type(self).__name__} needs the batch key '{name}' (call it as term(probs, {name}=...))."
            )
        return value

    @staticmethod
    def _check_reduction(reduction: str) -> str:
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
        return reduction

    def _check_probs(self, probs: torch.Tensor) -> torch.Tensor:
        if probs.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} expects probs of shape (B, C, H, W), got {tuple(probs.shape)}."
            )
        return probs


def reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply a MONAI-style reduction; the mean of an empty tensor is 0, not NaN."""
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    if values.numel() == 0:
        return values.sum()
    return values.mean()
