"""DenseCRF loss: the quadratic Potts relaxation of Tang et al., "On Regularized Losses for Weakly-supervised
CNN Segmentation" (ECCV 2018), eq. 4, with its gradient eq. 11."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from wss_monai.losses.base import LossTerm, reduce
from wss_monai.losses.affinity import AffinityFilter
from wss_monai.losses.affinity.operator import AffinityOperator, autocast_off, compute_dtype, match_image_to


def prepare_maps(owner: str, probs: torch.Tensor, image: torch.Tensor, scale_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring ``image`` to the probabilities' resolution, then resize both by ``scale_factor``.

    Returns float32 (float64 for float64 inputs) probabilities and image. The image must have the
    probabilities' spatial size or an integer multiple of it (then it is average-pooled down).
    Downscaling uses area interpolation (a 2 x 2 average for 0.5), differentiable in ``probs``.
    """
    dtype = compute_dtype(probs, image)
    if image.shape[0] != probs.shape[0]:
        raise ValueError(f"{owner}: image batch {image.shape[0]} differs from probs batch {probs.shape[0]}.")
    image = match_image_to(image.detach().to(dtype), tuple(probs.shape[-2:]), owner)
    probs = probs.to(dtype)
    if scale_factor != 1.0:
        h, w = probs.shape[-2:]
        size = (max(1, round(h * scale_factor)), max(1, round(w * scale_factor)))
        probs = F.interpolate(probs, size=size, mode="area")
        image = F.interpolate(image, size=size, mode="area")
    return probs, image


def check_scale(scale_factor: float) -> float:
    scale_factor = float(scale_factor)
    if not 0.0 < scale_factor <= 1.0:
        raise ValueError(f"scale_factor must be in (0, 1] (1 = no downscaling), got {scale_factor}.")
    return scale_factor


def potts_energy(assoc: torch.Tensor, volume: torch.Tensor) -> torch.Tensor:
    """Per image ``sum_k S_k^T W (1 - S_k) = sum_k (d^T S_k - S_k^T W S_k)`` (W symmetric), shape (B,).

    ``assoc`` (B, C) is ``S_k^T W S_k`` and ``volume`` (B, C) is ``d^T S_k``, d = W 1 (see
    :meth:`~wss_monai.losses.affinity.operator.AffinityOperator.moments`).
    """
    return (volume - assoc).sum(dim=1)


class AffinityEnergyLoss(LossTerm):
    """Shared machinery of the losses built on one Gaussian affinity W (DenseCRF, normalized cut).

    Builds W from the batch key ``image`` (resized with the probabilities by ``scale_factor``),
    filters ``[S, 1]`` once, and reduces the per-image values that :meth:`energy` computes from
    the per-class forms ``S_k^T W S_k`` and ``d^T S_k`` (d = W 1). The backward pass reuses
    ``W S`` and ``d`` from the forward pass (W is symmetric): it filters nothing.
    """

    def __init__(self, sigma_xy: float = 80.0, sigma_intensity: float | Sequence[float] = 0.06,
                 filter: str = "auto", scale_factor: float = 1.0, include_self: bool = True,
                 cells_per_sigma: float = 2.0, reduction: str = "mean") -> None:
        super().__init__()
        self.affinity = AffinityFilter(sigma_xy, sigma_intensity, filter, include_self, cells_per_sigma)
        self.scale_factor = check_scale(scale_factor)
        self.reduction = self._check_reduction(reduction)

    def energy(self, assoc: torch.Tensor, volume: torch.Tensor, pixels: int) -> torch.Tensor:
        """Per-image values (B,) from ``S_k^T W S_k`` and ``d^T S_k`` (each (B, C)) on maps of ``pixels`` pixels."""
        raise NotImplementedError

    def forward(self, probs: torch.Tensor, image: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        probs = self._check_probs(probs)
        image = self._require("image", image)
        with autocast_off(probs.device):
            probs, image = prepare_maps(type(self).__name__, probs, image, self.scale_factor)
            op: AffinityOperator = self.affinity.scaled(self.scale_factor).prepare(image, probs.dtype)
            assoc, volume = op.moments(probs)
            values = self.energy(assoc, volume, probs.shape[-2] * probs.shape[-1])
        return reduce(values, self.reduction)


class DenseCRFLoss(AffinityEnergyLoss):
    """DenseCRF loss of Tang et al. (ECCV 2018) eq. 4: ``sum_k S_k^T W (1 - S_k)`` with a dense Gaussian W.

    ``W_ij = exp(-|p_i - p_j|^2 / (2 sigma_xy^2) - |I_i - I_j|^2 / (2 sigma_intensity^2))`` over
    pixel position and image intensity (see :mod:`wss_monai.losses.affinity`). Unlike the reference
    code, the constant of the relaxation is kept, so the value is non-negative (0 when every pixel
    has the same one-hot label) and is a relaxed cut cost.

    Normalisation: the energy of each image is divided by its number of pixels N (at the
    resolution where it is evaluated, i.e. after ``scale_factor``); ``reduction="mean"`` averages
    over the batch. The value is thus the mean, over pixels, of the affinity mass that lies across
    label boundaries; it does not depend on the image size for fixed sigmas.

    Gradient (eq. 11): ``dR/dS_k = d - 2 W S_k`` per image (d = W 1), divided by N (and B for
    "mean"). The paper writes ``-2 W S_k``: the ``d`` term is the same for every class k at a
    pixel, so it vanishes through the softmax (sum_k dS_k/dlogit = 0); gradients with respect to
    the logits are identical.

    Converting the reference's weight: the reference minimises ``-sum_k S_k^T W S_k / B`` with
    weight ~2e-9 (sigma_xy 80 full-resolution pixels, sigma_rgb 15 on 0-255, scale 0.5). Its
    gradient through the softmax equals ours times N, so use ``weight = 2e-9 * N`` (N = pixels at
    the evaluated resolution, e.g. 128 * 128 for a 256^2 input with ``scale_factor=0.5``: ~3.3e-5),
    ``sigma_xy=80, scale_factor=0.5`` and ``sigma_intensity=15/255`` for an image scaled to [0, 1].
    (Its permutohedral filter returns about 0.57x the exact Gaussian, so the match is approximate.)

    Args:
        sigma_xy: spatial bandwidth in pixels of the probability map (before ``scale_factor``;
            it is multiplied by ``scale_factor`` with the maps).
        sigma_intensity: intensity bandwidth in the image's units (one value or one per channel).
        filter: ``"exact"`` (O(N^2), small images), ``"fast"`` (bilateral grid) or ``"auto"``.
        scale_factor: downscale probabilities and image by this factor in (0, 1] before the loss
            (the reference uses 0.5; area interpolation).
        include_self: keep the self-affinity ``W_ii = 1`` (the reference's lattice does).
        cells_per_sigma: bilateral-grid sampling (see :class:`~wss_monai.losses.affinity.AffinityFilter`).
        reduction: ``"mean"`` (over images), ``"sum"`` or ``"none"`` (shape (B,)).

    Batch keys read: ``image`` (B, Ci, H, W) or an integer multiple of the prediction's size.

    Shapes: probs (B, C, H, W) softmax probabilities; returns a 0-d tensor (or (B,) for "none").

    Example::

        >>> import torch
        >>> loss = DenseCRFLoss(sigma_xy=10.0, sigma_intensity=0.1)
        >>> probs = torch.softmax(torch.randn(2, 4, 64, 64, requires_grad=True), dim=1)
        >>> image = torch.rand(2, 1, 64, 64)
        >>> value = loss(probs, image=image)
        >>> value.backward()
    """

    def energy(self, assoc: torch.Tensor, volume: torch.Tensor, pixels: int) -> torch.Tensor:
        return potts_energy(assoc, volume) / pixels
