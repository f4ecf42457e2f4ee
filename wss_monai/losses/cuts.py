"""Normalized cut and kernel cut losses of Tang et al., "On Regularized Losses for Weakly-supervised CNN
Segmentation" (ECCV 2018), eq. 5 and eq. 6, gradient eq. 12."""

from __future__ import annotations

from typing import Sequence

import torch

from wss_monai.losses.base import LossTerm, reduce
from wss_monai.losses.dense_crf import AffinityEnergyLoss, check_scale, potts_energy, prepare_maps
from wss_monai.losses.affinity import AffinityFilter
from wss_monai.losses.affinity.operator import autocast_off

EPS = 1e-12
"""Added to each class's weighted size d^T S_k; its square stays representable in float32."""


def normalized_cut(assoc: torch.Tensor, volume: torch.Tensor) -> torch.Tensor:
    """Per image ``sum_k [1 - S_k^T W S_k / (d^T S_k)]`` = eq. 5 (W symmetric), shape (B,).

    ``assoc`` (B, C) is ``S_k^T W S_k`` and ``volume`` (B, C) is ``d^T S_k``, d = W 1. A class
    absent from an image (``d^T S_k = 0``) contributes its limit 1 and no gradient, instead of 0/0.
    """
    return (1.0 - assoc / (volume + EPS)).sum(dim=1)


class NormalizedCutLoss(AffinityEnergyLoss):
    """Normalized cut loss, Tang et al. (ECCV 2018) eq. 5: ``sum_k S_k^T W (1 - S_k) / (d^T S_k)``, d = W 1.

    Each class has its own denominator (its weighted size). It is computed in the equivalent
    constant form ``K - sum_k S_k^T W S_k / (d^T S_k)`` (W symmetric), which also gives the limit
    for a class absent from an image (it contributes 1). The value per image lies in [0, K] and
    is already independent of image size: it is not divided by the number of pixels.
    ``reduction="mean"`` averages it over images.

    Gradient (eq. 12, normalized-cut part, exact):
    ``dR/dS_k = (S_k^T W S_k / (d^T S_k)^2) d - 2 W S_k / (d^T S_k)``.

    W is the dense Gaussian over position and intensity of :mod:`wss_monai.losses.affinity`.

    Args:
        sigma_xy: spatial bandwidth in pixels of the probability map (scaled with ``scale_factor``).
        sigma_intensity: intensity bandwidth in the image's units (one value or one per channel).
        filter: ``"exact"``, ``"fast"`` (bilateral grid) or ``"auto"``.
        scale_factor: downscale probabilities and image by this factor in (0, 1] first.
        include_self: keep the self-affinity ``W_ii = 1`` (also in d).
        cells_per_sigma: bilateral-grid sampling.
        reduction: ``"mean"`` (over images), ``"sum"`` or ``"none"`` (shape (B,)).

    Batch keys read: ``image`` (B, Ci, H, W) or an integer multiple of the prediction's size.

    Example::

        >>> import torch
        >>> loss = NormalizedCutLoss(sigma_xy=10.0, sigma_intensity=0.1)
        >>> probs = torch.softmax(torch.randn(2, 4, 64, 64), dim=1)
        >>> value = loss(probs, image=torch.rand(2, 1, 64, 64))
    """

    def energy(self, assoc: torch.Tensor, volume: torch.Tensor, pixels: int) -> torch.Tensor:
        return normalized_cut(assoc, volume)


class KernelCutLoss(LossTerm):
    """Kernel cut loss, Tang et al. (ECCV 2018) eq. 6: ``sum_k S_k^T W (1 - S_k) + gamma * sum_k S_k^T W^ (1 - S_k) / (d^T S_k)``.

    As the paper writes it, the kernel cut loss is a linear combination of the CRF loss (eq. 4,
    affinity W) and the normalized cut loss (eq. 5, affinity W^ "which can be different from W",
    d = W^ 1): the normalized cut term is the balanced "colour clustering" term and the CRF term
    the pairwise edge alignment; there is no further term. Eq. 6 prints the second affinity as
    W-dot and eq. 5/12 as W-hat: both are read as the same matrix W^. Here:

    ``value = DenseCRFLoss(W) + gamma * NormalizedCutLoss(W^)``

    with the normalisations of those two classes (the CRF energy per pixel, the normalized cut
    per image), so ``gamma`` here equals the paper's gamma divided by N (pixels per image at the
    evaluated resolution). ``nc_sigma_xy`` / ``nc_sigma_intensity`` set W^; left as None they
    equal W's, and one filtering serves both terms.

    Gradient (eq. 12): ``dR/dS_k = -2 W S_k + gamma (S_k^T W^ S_k / (d^T S_k)^2) d - gamma 2 W^ S_k / (d^T S_k)``;
    as for eq. 11 the exact gradient of the CRF part has an extra ``W 1`` (divided by N), equal for
    every class, that vanishes through the softmax.

    Args:
        sigma_xy, sigma_intensity: bandwidths of the CRF affinity W (pixels of the probability
            map; image intensity units).
        gamma: weight of the normalized cut term (>= 0).
        nc_sigma_xy, nc_sigma_intensity: bandwidths of W^ (None: same as W).
        filter: ``"exact"``, ``"fast"`` (bilateral grid) or ``"auto"``.
        scale_factor: downscale probabilities and image by this factor in (0, 1] first.
        include_self: keep the self-affinity ``W_ii = 1`` in both affinities.
        cells_per_sigma: bilateral-grid sampling.
        reduction: ``"mean"`` (over images), ``"sum"`` or ``"none"`` (shape (B,)).

    Batch keys read: ``image`` (B, Ci, H, W) or an integer multiple of the prediction's size.

    Example::

        >>> import torch
        >>> loss = KernelCutLoss(sigma_xy=10.0, sigma_intensity=0.1, gamma=1.0)
        >>> probs = torch.softmax(torch.randn(2, 4, 64, 64), dim=1)
        >>> value = loss(probs, image=torch.rand(2, 1, 64, 64))
    """

    def __init__(self, sigma_xy: float = 80.0, sigma_intensity: float | Sequence[float] = 0.06,
                 gamma: float = 1.0, nc_sigma_xy: float | None = None,
                 nc_sigma_intensity: float | Sequence[float] | None = None, filter: str = "auto",
                 scale_factor: float = 1.0, include_self: bool = True, cells_per_sigma: float = 2.0,
                 reduction: str = "mean") -> None:
        super().__init__()
        if not float(gamma) >= 0.0:
            raise ValueError(f"gamma must be >= 0, got {gamma!r}.")
        self.gamma = float(gamma)
        self.affinity = AffinityFilter(sigma_xy, sigma_intensity, filter, include_self, cells_per_sigma)
        self.shared = nc_sigma_xy is None and nc_sigma_intensity is None
        self.nc_affinity = AffinityFilter(
            sigma_xy if nc_sigma_xy is None else nc_sigma_xy,
            sigma_intensity if nc_sigma_intensity is None else nc_sigma_intensity,
            filter, include_self, cells_per_sigma,
        )
        self.scale_factor = check_scale(scale_factor)
        self.reduction = self._check_reduction(reduction)

    def forward(self, probs: torch.Tensor, image: torch.Tensor | None = None, **_: object) -> torch.Tensor:
        probs = self._check_probs(probs)
        image = self._require("image", image)
        with autocast_off(probs.device):
            probs, image = prepare_maps(type(self).__name__, probs, image, self.scale_factor)
            op = self.affinity.scaled(self.scale_factor).prepare(image, probs.dtype)
            assoc, volume = op.moments(probs)  # one filtering; the backward pass filters nothing
            n = probs.shape[-2] * probs.shape[-1]
            values = potts_energy(assoc, volume) / n
            if self.gamma:
                if not self.shared:
                    nc_op = self.nc_affinity.scaled(self.scale_factor).prepare(image, probs.dtype)
                    assoc, volume = nc_op.moments(probs)
                values = values + self.gamma * normalized_cut(assoc, volume)
        return reduce(values, self.reduction)
