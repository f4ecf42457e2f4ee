"""Partial cross-entropy on the annotated pixels only (Kervadec et al., MedIA 2019, sec. 4.3.1).

Also home of the small helpers every term of this package uses to read its inputs: float
precision for sums (:func:`as_float`) and label-map checks (:func:`check_label_map`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from wss_monai.losses.base import UNANNOTATED, LossTerm

__all__ = ["PartialCrossEntropy", "CrossEntropy", "as_float", "check_label_map"]


def as_float(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or float64 when it already is: sums and logs never run in half precision.

    Under ``torch.autocast`` the network's probabilities may arrive as float16/bfloat16; every
    term reduces over tens of thousands of pixels, so it casts first.
    """
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def check_label_map(owner: str, key: str, label: torch.Tensor, probs: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """Check an integer label map against ``probs`` (B, C, H, W) and return it as (B, H, W) int64.

    Accepts (B, H, W) or MONAI's channel-first (B, 1, H, W). Every value must be a class index
    ``0 <= v < C`` or ``ignore_index``; the error names the owner term and the batch key.
    """
    if not isinstance(label, torch.Tensor):
        raise TypeError(f"{owner}: batch key '{key}' must be a tensor, got {type(label).__name__}.")
    if label.dim() == 4 and label.shape[1] == 1:
        label = label[:, 0]
    b, c, h, w = probs.shape
    if tuple(label.shape) != (b, h, w):
        raise ValueError(
            f"{owner}: batch key '{key}' must have shape (B, H, W) = {(b, h, w)} to match probs "
            f"{tuple(probs.shape)}, got {tuple(label.shape)}."
        )
    if label.is_floating_point():
        if label.numel() and not torch.equal(label, label.round()):
            raise ValueError(f"{owner}: batch key '{key}' must hold integer class indices, got fractional values.")
    label = label.long()
    if label.numel():
        bad = (label < 0) | (label >= c)
        if ignore_index is not None:
            bad &= label != ignore_index
        if bool(bad.any()):
            value = int(label[bad][0])
            allowed = f"0..{c - 1}" + (f" or {ignore_index} (unannotated)" if ignore_index is not None else "")
            raise ValueError(f"{owner}: batch key '{key}' holds the value {value}; expected {allowed}.")
    return label


class PartialCrossEntropy(LossTerm):
    r"""Cross-entropy on the annotated pixels of weak labels (partial CE; MedIA 2019 sec. 4.3.1).

    .. math:: H(S) = -\frac{1}{|\Omega_L|} \sum_{p \in \Omega_L} \log S_p^{y_p}

    where :math:`\Omega_L` is the set of annotated pixels (label != ``ignore_index``) of the
    whole batch whose label is one of ``classes``. Given a full mask (no pixel ignored) it is the
    ordinary cross-entropy: :class:`CrossEntropy` is this module reading the batch key ``label``.

    Shapes: ``probs`` (B, C, H, W) softmax probabilities; the label key (``weak`` by default)
    (B, H, W) or (B, 1, H, W) integer, 255 on unannotated pixels. Returns a 0-d tensor for
    ``reduction="mean"`` (mean over the selected annotated pixels of the batch, the papers'
    normalisation) or ``"sum"``; ``"none"`` returns the (B, H, W) per-pixel loss, 0 where a pixel
    is not selected.

    Numerics: ``log`` reads ``probs.clamp_min(eps)``, so probabilities that are exactly 0 (logits
    of +-1e4) give a finite loss; a batch without a selected pixel gives 0 with a zero gradient.
    Sums run in float32 (float64 stays float64), also under autocast.

    Args:
        classes: class indices whose annotated pixels are supervised; ``None`` (default) = every
            annotated class. The papers annotate foreground seeds only (background pixels are
            255), so the default and ``classes=[1]`` coincide on their weak labels.
        label_key: batch key of the label map: ``"weak"`` (partial CE) or ``"label"`` (full CE).
        ignore_index: label value of unannotated pixels (255, the prepared-dataset contract).
        eps: lower clamp of the probabilities inside ``log``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Example::

        >>> import torch
        >>> probs = torch.softmax(torch.randn(2, 2, 8, 8), dim=1)
        >>> weak = torch.full((2, 8, 8), 255); weak[:, 3:5, 3:5] = 1
        >>> PartialCrossEntropy()(probs, weak=weak).shape
        torch.Size([])
    """

    def __init__(
        self,
        classes: Sequence[int] | None = None,
        label_key: str = "weak",
        ignore_index: int = UNANNOTATED,
        eps: float = 1e-10,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.classes = None if classes is None else [int(c) for c in classes]
        if self.classes is not None and any(c < 0 for c in self.classes):
            raise ValueError(f"classes must be non-negative class indices, got {list(classes)}.")
        if not isinstance(label_key, str) or not label_key:
            raise ValueError(f"label_key must be a non-empty string, got {label_key!r}.")
        if eps <= 0:
            raise ValueError(f"eps must be positive, got {eps}.")
        self.label_key = label_key
        self.ignore_index = int(ignore_index)
        self.eps = float(eps)
        self.reduction = self._check_reduction(reduction)

    def forward(self, probs: torch.Tensor, **batch) -> torch.Tensor:
        probs = self._check_probs(probs)
        owner = type(self).__name__
        label = check_label_map(owner, self.label_key, self._require(self.label_key, batch.get(self.label_key)), probs, self.ignore_index)
        if self.classes is not None and any(c >= probs.shape[1] for c in self.classes):
            raise ValueError(f"{owner}: classes {self.classes} out of range for {probs.shape[1]} classes in probs.")
        annotated = label != self.ignore_index
        if self.classes is not None:
            annotated &= torch.isin(label, torch.tensor(self.classes, device=label.device))
        safe = torch.where(annotated, label, torch.zeros_like(label))
        picked = as_float(probs).gather(1, safe.unsqueeze(1)).squeeze(1)
        nll = -torch.log(picked.clamp_min(self.eps)) * annotated.to(picked.dtype)
        if self.reduction == "none":
            return nll
        if self.reduction == "sum":
            return nll.sum()
        return nll.sum() / annotated.sum().clamp_min(1).to(nll.dtype)


class CrossEntropy(PartialCrossEntropy):
    """Full cross-entropy against the full mask in the batch key ``label``.

    The same computation as :class:`PartialCrossEntropy` (mean of -log p over the labelled
    pixels) reading ``label`` (B, H, W) instead of ``weak``; pixels equal to ``ignore_index`` are
    still skipped. Used for fully annotated samples (regime ``full`` and hybrid batches).

    Example::

        >>> import torch
        >>> probs = torch.softmax(torch.randn(2, 3, 8, 8), dim=1)
        >>> CrossEntropy()(probs, label=torch.randint(0, 3, (2, 8, 8))).shape
        torch.Size([])
    """

    def __init__(
        self,
        classes: Sequence[int] | None = None,
        label_key: str = "label",
        ignore_index: int = UNANNOTATED,
        eps: float = 1e-10,
        reduction: str = "mean",
    ) -> None:
        super().__init__(classes=classes, label_key=label_key, ignore_index=ignore_index, eps=eps, reduction=reduction)

