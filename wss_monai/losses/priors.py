"""Knowledge- and data-driven priors on the predictions (Kervadec et al. MedIA 2019 eq. 8; the
2021 weakly supervised CNN segmentation slides): entropy minimisation, class-proportion KL,
class-ratio inequality prior, and fractional moment constraints (centroid, ...)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from wss_monai.losses.base import UNANNOTATED, LossTerm, reduce
from wss_monai.losses.partial_ce import as_float, check_label_map
from wss_monai.losses.size import resolve_classes

__all__ = ["EntropyMinimization", "ClassProportionKL", "ClassRatioPenalty", "MomentPenalty", "CentroidPenalty"]

_TINY = 1e-30


def _xlogx(p: torch.Tensor) -> torch.Tensor:
    """``p * log(p)`` with ``0 log 0 = 0`` and a finite gradient at 0 (log reads a clamped value)."""
    return p * torch.log(p.clamp_min(_TINY))


class EntropyMinimization(LossTerm):
    r"""Shannon entropy of the pixel-wise predictions (Grandvalet & Bengio 2005; slides 2021, "Entropy minimization").

    .. math:: H = \frac{1}{|P|} \sum_{p \in P} -\frac{1}{\log C} \sum_c S_{p,c} \log S_{p,c}

    normalised by ``log C`` so it lies in [0, 1] (as in the WSL4MIS toolbox; weight about 0.1),
    averaged over the pixels P: all pixels (default) or, with ``unannotated_only=True``, the
    pixels whose ``weak`` label is 255 (the slides' unlabelled set U).

    Shapes: ``probs`` (B, C, H, W); ``weak`` (B, H, W) only with ``unannotated_only``. Returns a
    0-d tensor (``"mean"`` over the selected pixels, ``"sum"``) or the (B, H, W) map (``"none"``,
    0 on pixels that are not selected).

    Args:
        normalize: divide by ``log C`` (no effect when C = 1, whose entropy is 0).
        unannotated_only: only pixels with ``weak == 255``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Example::

        >>> import torch
        >>> EntropyMinimization()(torch.full((1, 2, 4, 4), 0.5)).item()
        1.0
    """

    def __init__(self, normalize: bool = True, unannotated_only: bool = False, reduction: str = "mean") -> None:
        super().__init__()
        self.normalize = bool(normalize)
        self.unannotated_only = bool(unannotated_only)
        self.reduction = self._check_reduction(reduction)

    def forward(self, probs: torch.Tensor, **batch) -> torch.Tensor:
        p = as_float(self._check_probs(probs))
        ent = -_xlogx(p).sum(dim=1)  # (B, H, W)
        if self.normalize and p.shape[1] > 1:
            ent = ent / math.log(p.shape[1])
        if not self.unannotated_only:
            return reduce(ent, self.reduction)
        weak = check_label_map(type(self).__name__, "weak", self._require("weak", batch.get("weak")), p, UNANNOTATED)
        mask = (weak == UNANNOTATED).to(ent.dtype)
        ent = ent * mask
        if self.reduction == "none":
            return ent
        if self.reduction == "sum":
            return ent.sum()
        return ent.sum() / mask.sum().clamp_min(1)


class ClassProportionKL(LossTerm):
    r"""KL divergence between a prior class proportion and the mean prediction (the slides' prior-aware loss).

    .. math:: \hat p_c = \frac{1}{N} \sum_{p} S_{p,c}, \qquad
        \mathrm{KL}(q \,\|\, \hat p) = \sum_c q_c \log \frac{q_c}{\hat p_c}

    ``form="categorical"`` (default) is the KL between the class distributions;
    ``form="bernoulli"`` is the slides' per-class expansion
    :math:`\sum_c \mathrm{KL}(\mathrm{Ber}(q_c) \| \mathrm{Ber}(\hat p_c))`. Both are 0 when the
    mean prediction equals the prior (the constant the slides drop is kept).

    The prior ``q`` is either fixed (``target``: a length-C vector) or per sample (batch key
    ``target_key``, shape (B, C)). With ``per_image=False`` (default) the mean prediction is taken
    over the whole batch and a per-sample prior is averaged over the batch; with
    ``per_image=True`` every image is compared with its own prior and the reduction runs over
    images. ``q`` must be non-negative; it is normalised to sum to 1.

    Shapes: ``probs`` (B, C, H, W). Returns a 0-d tensor, or with ``"none"`` the KL per image
    ((B,) with ``per_image``, else (1,)). An empty batch gives 0.

    Args:
        target: fixed prior proportion, length C (``None``: read ``target_key``).
        target_key: batch key of the per-sample prior (B, C) (default ``"proportion"``).
        form: ``"categorical"`` or ``"bernoulli"``.
        per_image: compare each image's mean prediction with its own prior.
        eps: lower clamp of the mean prediction inside ``log``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"`` (over images).

    Example::

        >>> import torch
        >>> term = ClassProportionKL(target=[0.9, 0.1])
        >>> probs = torch.tensor([0.9, 0.1]).view(1, 2, 1, 1).expand(2, 2, 4, 4)
        >>> abs(term(probs).item()) < 1e-6
        True
    """

    def __init__(
        self,
        target: Sequence[float] | torch.Tensor | None = None,
        target_key: str = "proportion",
        form: str = "categorical",
        per_image: bool = False,
        eps: float = 1e-10,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if form not in ("categorical", "bernoulli"):
            raise ValueError(f"form must be 'categorical' or 'bernoulli', got {form!r}.")
        if target is not None:
            target = torch.as_tensor(target, dtype=torch.float64)
            if target.dim() != 1 or bool((target < 0).any()) or float(target.sum()) <= 0:
                raise ValueError(f"target must be a non-negative vector of length C with a positive sum, got {target.tolist()}.")
        self.register_buffer("target", None if target is None else target / target.sum(), persistent=False)
        self.target_key = target_key
        self.form = form
        self.per_image = bool(per_image)
        self.eps = float(eps)
        self.reduction = self._check_reduction(reduction)

    def _prior(self, p: torch.Tensor, batch: dict) -> torch.Tensor:
        b, c = p.shape[:2]
        owner = type(self).__name__
        if self.target is not None:
            q = self.target.to(device=p.device, dtype=p.dtype)
            if q.numel() != c:
                raise ValueError(f"{owner}: target has {q.numel()} classes, probs has {c}.")
            return q.expand(b, c)
        q = torch.as_tensor(self._require(self.target_key, batch.get(self.target_key))).to(device=p.device, dtype=p.dtype)
        if tuple(q.shape) != (b, c):
            raise ValueError(f"{owner}: batch key '{self.target_key}' must have shape (B, C) = {(b, c)}, got {tuple(q.shape)}.")
        if q.numel() and bool((q < 0).any()):
            raise ValueError(f"{owner}: batch key '{self.target_key}' must be non-negative.")
        return q / q.sum(dim=1, keepdim=True).clamp_min(_TINY)

    def _kl(self, q: torch.Tensor, phat: torch.Tensor) -> torch.Tensor:
        kl = _xlogx(q) - q * torch.log(phat.clamp_min(self.eps))
        if self.form == "bernoulli":
            kl = kl + _xlogx(1 - q) - (1 - q) * torch.log((1 - phat).clamp_min(self.eps))
        return kl.sum(dim=-1)

    def forward(self, probs: torch.Tensor, **batch) -> torch.Tensor:
        p = as_float(self._check_probs(probs))
        b, c, h, w = p.shape
        q = self._prior(p, batch)
        if b == 0 or h * w == 0:
            return p.sum()
        if self.per_image:
            values = self._kl(q, p.mean(dim=(2, 3)))
        else:
            values = self._kl(q.mean(dim=0), p.mean(dim=(0, 2, 3))).reshape(1)
        return reduce(values, self.reduction)


class ClassRatioPenalty(LossTerm):
    r"""Inequality prior on the fraction of pixels of a class (slides 2021, "Class-ratio priors").

    .. math:: r_{b,c} = \frac{1}{HW}\sum_p S_{b,p,c}, \qquad
        L = \mathrm{relu}(r - \rho^{hi})^k + \mathrm{relu}(\rho^{lo} - r)^k

    Quadratic by default (``power=2``, the size penalty of eq. 3 on the normalised size);
    ``power=1`` gives the slides' hinge ``max(0, mu p_s - E(P))`` when only a lower bound is given.
    Bounds are fractions in [0, 1]: fixed (``lower``/``upper``: a scalar or a length-C sequence)
    or per sample from the batch key ``bounds_key`` (B, C, 2). Fixed bounds take precedence.

    Shapes: ``probs`` (B, C, H, W). Returns a 0-d tensor (mean over images and constrained
    classes, or sum) or the (B, K) values (``"none"``).

    Args:
        lower, upper: fixed fraction bounds (default 0 and 1 = unconstrained side).
        bounds_key: batch key of per-sample fraction bounds (default ``"ratio_bounds"``).
        classes, include_background: constrained classes (default foreground).
        power: 2 (quadratic) or 1 (hinge).
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Example::

        >>> import torch
        >>> probs = torch.softmax(torch.randn(2, 2, 8, 8), dim=1)
        >>> ClassRatioPenalty(lower=0.1, upper=0.3)(probs).shape
        torch.Size([])
    """

    def __init__(
        self,
        lower: float | Sequence[float] | None = None,
        upper: float | Sequence[float] | None = None,
        bounds_key: str = "ratio_bounds",
        classes: Sequence[int] | None = None,
        include_background: bool = False,
        power: float = 2.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if power <= 0:
            raise ValueError(f"power must be positive, got {power}.")
        self.lower = None if lower is None else torch.as_tensor(lower, dtype=torch.float64)
        self.upper = None if upper is None else torch.as_tensor(upper, dtype=torch.float64)
        self.bounds_key = bounds_key
        self.classes = None if classes is None else [int(c) for c in classes]
        self.include_background = bool(include_background)
        self.power = float(power)
        self.reduction = self._check_reduction(reduction)

    def _bounds(self, p: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        b, c = p.shape[:2]
        owner = type(self).__name__
        if self.lower is None and self.upper is None:
            rb = torch.as_tensor(self._require(self.bounds_key, batch.get(self.bounds_key))).to(device=p.device, dtype=p.dtype)
            if tuple(rb.shape) != (b, c, 2):
                raise ValueError(f"{owner}: batch key '{self.bounds_key}' must have shape (B, C, 2) = {(b, c, 2)}, got {tuple(rb.shape)}.")
            return rb[..., 0], rb[..., 1]

        def fixed(v: torch.Tensor | None, default: float, name: str) -> torch.Tensor:
            if v is None:
                return p.new_full((b, c), default)
            v = v.to(device=p.device, dtype=p.dtype)
            if v.dim() == 0:
                return v.expand(b, c)
            if v.shape != (c,):
                raise ValueError(f"{owner}: {name} must be a scalar or have length C = {c}, got shape {tuple(v.shape)}.")
            return v.expand(b, c)

        return fixed(self.lower, 0.0, "lower"), fixed(self.upper, 1.0, "upper")

    def forward(self, probs: torch.Tensor, **batch) -> torch.Tensor:
        p = as_float(self._check_probs(probs))
        b, c, h, w = p.shape
        cls = resolve_classes(type(self).__name__, self.classes, self.include_background, c)
        index = torch.tensor(cls, device=p.device, dtype=torch.long)
        lower, upper = self._bounds(p, batch)
        ratio = p.mean(dim=(2, 3)) if h * w else p.new_zeros(b, c)
        ratio, lower, upper = (t.index_select(1, index) for t in (ratio, lower, upper))
        values = F.relu(ratio - upper) ** self.power + F.relu(lower - ratio) ** self.power
        return reduce(values, self.reduction)


PotentialFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class MomentPenalty(LossTerm):
    r"""Penalty on fractional region statistics of the general form of MedIA 2019 eq. 8.

    .. math:: F_{b,c,k} = \frac{\sum_p f_{k}(p)\, S_{b,p,c}}{\sum_p S_{b,p,c}}, \qquad
        L = \mathrm{relu}(F - \mathrm{hi})^2 + \mathrm{relu}(\mathrm{lo} - F)^2

    for unary potentials ``f_k`` (the quadratic penalty of eq. 3 applied to ``a <= F <= b``).
    Built-in potentials:

    - ``"centroid"``: pixel coordinates (row, column): F is the soft centre of mass (first-order
      scale-invariant moment, see :class:`CentroidPenalty`);
    - ``"second_order"``: (row^2, row*col, col^2): raw second moments per unit size;
    - ``"intensity"``: the image channels (needs the batch key ``image``): the mean intensity in
      the region (eq. 8, footnote 8);
    - a callable ``f(probs, image) -> (B or 1, K', H, W)`` for any other statistic.

    Coordinates are in pixels (``coordinates="pixel"``) or scaled to [0, 1]
    (``"normalized"``: row / (H - 1), col / (W - 1)). Bounds come from the batch key
    ``bounds_key`` (B, C, K', 2) or, fixed, from ``bounds`` ((K', 2) for every class, or
    (C, K', 2)); ``-inf``/``inf`` sides are no constraint. The denominator is clamped at
    ``eps`` so an empty region gives F = 0, not NaN.

    Shapes: ``probs`` (B, C, H, W). Returns a 0-d tensor (mean over images, constrained classes
    and statistics; or sum) or the (B, K, K') values (``"none"``).

    Args:
        potentials: ``"centroid"`` | ``"second_order"`` | ``"intensity"`` | callable.
        bounds: fixed bounds (see above); ``None`` reads ``bounds_key``.
        bounds_key: batch key of the bounds (default ``"moment_bounds"``).
        coordinates: ``"pixel"`` | ``"normalized"``.
        classes, include_background: constrained classes (default foreground).
        eps: lower clamp of the soft size in the denominator.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Example::

        >>> import torch
        >>> probs = torch.softmax(torch.randn(1, 2, 8, 8), dim=1)
        >>> MomentPenalty("intensity", bounds=[[0.2, 0.8]])(probs, image=torch.rand(1, 1, 8, 8)).shape
        torch.Size([])
    """

    BUILTIN = ("centroid", "second_order", "intensity")

    def __init__(
        self,
        potentials: str | PotentialFn = "centroid",
        bounds: Sequence | torch.Tensor | None = None,
        bounds_key: str = "moment_bounds",
        coordinates: str = "pixel",
        classes: Sequence[int] | None = None,
        include_background: bool = False,
        eps: float = 1e-6,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if isinstance(potentials, str) and potentials not in self.BUILTIN:
            raise ValueError(f"potentials must be one of {self.BUILTIN} or a callable, got {potentials!r}.")
        if not isinstance(potentials, str) and not callable(potentials):
            raise TypeError(f"potentials must be a name or a callable, got {type(potentials).__name__}.")
        if coordinates not in ("pixel", "normalized"):
            raise ValueError(f"coordinates must be 'pixel' or 'normalized', got {coordinates!r}.")
        self.potentials = potentials
        self.fixed_bounds = None if bounds is None else torch.as_tensor(bounds, dtype=torch.float64)
        if self.fixed_bounds is not None and (self.fixed_bounds.dim() not in (2, 3) or self.fixed_bounds.shape[-1] != 2):
            raise ValueError(f"bounds must have shape (K', 2) or (C, K', 2), got {tuple(self.fixed_bounds.shape)}.")
        self.bounds_key = bounds_key
        self.coordinates = coordinates
        self.classes = None if classes is None else [int(c) for c in classes]
        self.include_background = bool(include_background)
        self.eps = float(eps)
        self.reduction = self._check_reduction(reduction)

    def potential_maps(self, p: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        """The potentials ``f_k`` as a (B or 1, K', H, W) tensor in ``p``'s dtype."""
        b, c, h, w = p.shape
        if callable(self.potentials):
            f = torch.as_tensor(self.potentials(p, image)).to(device=p.device, dtype=p.dtype)
            if f.dim() != 4 or f.shape[0] not in (1, b) or tuple(f.shape[2:]) != (h, w):
                raise ValueError(f"{type(self).__name__}: the potentials callable must return (B or 1, K', H, W), got {tuple(f.shape)}.")
            return f
        if self.potentials == "intensity":
            img = torch.as_tensor(self._require("image", image)).to(device=p.device, dtype=p.dtype)
            if img.dim() != 4 or img.shape[0] != b or tuple(img.shape[2:]) != (h, w):
                raise ValueError(f"{type(self).__name__}: batch key 'image' must have shape (B, Ci, H, W) with B, H, W = {(b, h, w)}, got {tuple(img.shape)}.")
            return img
        rows = torch.arange(h, device=p.device, dtype=p.dtype)
        cols = torch.arange(w, device=p.device, dtype=p.dtype)
        if self.coordinates == "normalized":
            rows = rows / max(h - 1, 1)
            cols = cols / max(w - 1, 1)
        yy, xx = torch.meshgrid(rows, cols, indexing="ij")
        maps = [yy, xx] if self.potentials == "centroid" else [yy * yy, yy * xx, xx * xx]
        return torch.stack(maps).unsqueeze(0)

    def _bounds(self, p: torch.Tensor, k: int, batch: dict) -> torch.Tensor:
        b, c = p.shape[:2]
        owner = type(self).__name__
        if self.fixed_bounds is not None:
            fb = self.fixed_bounds.to(device=p.device, dtype=p.dtype)
            if fb.dim() == 2:
                fb = fb.unsqueeze(0).expand(c, -1, -1)
            if tuple(fb.shape) != (c, k, 2):
                raise ValueError(f"{owner}: bounds must have shape ({k}, 2) or ({c}, {k}, 2) for {k} statistics, got {tuple(self.fixed_bounds.shape)}.")
            return fb.unsqueeze(0).expand(b, -1, -1, -1)
        mb = torch.as_tensor(self._require(self.bounds_key, batch.get(self.bounds_key))).to(device=p.device, dtype=p.dtype)
        if tuple(mb.shape) != (b, c, k, 2):
            raise ValueError(f"{owner}: batch key '{self.bounds_key}' must have shape (B, C, K', 2) = {(b, c, k, 2)}, got {tuple(mb.shape)}.")
        return mb

    def statistics(self, probs: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """The fractional statistics F (B, C, K') of eq. 8 for every class."""
        p = as_float(self._check_probs(probs))
        f = self.potential_maps(p, image)
        num = (p.unsqueeze(2) * f.unsqueeze(1)).sum(dim=(3, 4))  # (B, C, K')
        den = p.sum(dim=(2, 3)).clamp_min(self.eps)  # (B, C)
        return num / den.unsqueeze(2)

    def forward(self, probs: torch.Tensor, **batch) -> torch.Tensor:
        p = as_float(self._check_probs(probs))
        stats = self.statistics(p, batch.get("image"))
        b, c, k = stats.shape
        cls = resolve_classes(type(self).__name__, self.classes, self.include_background, c)
        index = torch.tensor(cls, device=p.device, dtype=torch.long)
        bounds = self._bounds(p, k, batch).index_select(1, index)
        stats = stats.index_select(1, index)
        lo, hi = bounds[..., 0], bounds[..., 1]
        lo_on, hi_on = torch.isfinite(lo), torch.isfinite(hi)
        zero = torch.zeros_like(stats)
        above = torch.where(hi_on, F.relu(stats - torch.where(hi_on, hi, zero)), zero)
        below = torch.where(lo_on, F.relu(torch.where(lo_on, lo, zero) - stats), zero)
        return reduce(above**2 + below**2, self.reduction)


class CentroidPenalty(MomentPenalty):
    r"""Bounds on the soft centroid of a region (MedIA 2019 eq. 8 with pixel-coordinate potentials).

    .. math:: F_{b,c} = \Big(\frac{\sum_p y_p S_{b,p,c}}{\sum_p S_{b,p,c}},
        \frac{\sum_p x_p S_{b,p,c}}{\sum_p S_{b,p,c}}\Big)

    penalised quadratically outside ``[lo, hi]`` per coordinate (row, column). Bounds: batch key
    ``centroid_bounds`` (B, C, 2, 2) = per class, (row lo, row hi), (col lo, col hi); or fixed
    ``bounds`` (2, 2) / (C, 2, 2). See :class:`MomentPenalty` for everything else.

    Example::

        >>> import torch
        >>> probs = torch.softmax(torch.randn(1, 2, 8, 8), dim=1)
        >>> CentroidPenalty(bounds=[[2.0, 5.0], [2.0, 5.0]])(probs).shape
        torch.Size([])
    """

    def __init__(
        self,
        bounds: Sequence | torch.Tensor | None = None,
        bounds_key: str = "centroid_bounds",
        coordinates: str = "pixel",
        classes: Sequence[int] | None = None,
        include_background: bool = False,
        eps: float = 1e-6,
        reduction: str = "mean",
    ) -> None:
        super().__init__(
            potentials="centroid",
            bounds=bounds,
            bounds_key=bounds_key,
            coordinates=coordinates,
            classes=classes,
            include_background=include_background,
            eps=eps,
            reduction=reduction,
        )
