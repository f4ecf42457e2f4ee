"""Extended log-barrier on the size constraints (Kervadec et al., "Constrained deep networks:
Lagrangian optimization via log-barrier extensions", follow-up of MedIA 2019)."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from wss_monai.losses.size import SizeConstraintTerm

__all__ = ["LogBarrierPenalty", "extended_log_barrier"]


def extended_log_barrier(z: torch.Tensor, t: float) -> torch.Tensor:
    r"""The extended log-barrier :math:`\tilde\psi_t(z)` of a constraint ``z <= 0``.

    .. math::
        \tilde\psi_t(z) = \begin{cases} -\frac{1}{t}\log(-z) & z \le -\frac{1}{t^2} \\
        t z - \frac{1}{t}\log\frac{1}{t^2} + \frac{1}{t} & \text{otherwise} \end{cases}

    Continuous and differentiable at ``z = -1/t^2`` (both pieces have value ``2 log(t)/t`` and
    slope ``t``), linear (hence finite) for violated constraints. Elementwise on any shape; the
    log reads a clamped argument so neither branch makes NaN or Inf gradients.
    """
    if t <= 0:
        raise ValueError(f"t must be positive, got {t}.")
    knot = 1.0 / t**2
    barrier = -torch.log((-z).clamp_min(knot)) / t
    linear = t * z - math.log(knot) / t + 1.0 / t
    return torch.where(z <= -knot, barrier, linear)


class LogBarrierPenalty(SizeConstraintTerm):
    r"""Extended log-barrier on the soft-size constraints ``a - V <= 0`` and ``V - b <= 0``.

    .. math:: L = \tilde\psi_t(a - V) + \tilde\psi_t(V - b)

    per image (or volume) and constrained class, with :func:`extended_log_barrier`. A drop-in
    replacement for :class:`~wss_monai.losses.size.SizePenalty`: the same soft size, classes,
    3D volume mode, units, bounds key and normalisation (divided by H*W, mean over groups and
    classes by default; the authors' code sums over batch and classes, ``reduction="sum"``).
    Unlike the quadratic penalty the barrier is also active inside the bounds (negative values
    far from them), which pushes sizes towards the middle of ``[a, b]``.

    Which sides are constraints: the upper side where ``b`` is finite; the lower side where
    ``a > 0`` (``V >= 0`` always holds, so ``a = 0`` is no constraint; the authors' code also
    applies ``-V <= 0``: set ``zero_lower_active=True`` to reproduce it). A class with bounds
    ``(0, inf)`` is therefore unconstrained and contributes 0.

    Schedule: ``t = t0 * factor ** epoch`` (start 5, times 1.1 per epoch, as in the paper);
    call :meth:`step_epoch` at the end of every epoch or :meth:`set_epoch` when resuming. The
    epoch is kept in the module's ``state_dict`` (extra state) so checkpoints resume it.

    Shapes: ``probs`` (B, C, H, W); ``bounds`` (B, C, 2); ``volume`` (B,) in 3D mode;
    ``spacing`` (B, 2) with ``units="mm2"``. Returns a 0-d tensor (or (G, K) with ``"none"``).

    Args:
        t0: initial barrier parameter t (5).
        factor: multiplicative increase of t per epoch (1.1).
        t_max: optional cap on t.
        zero_lower_active: treat ``a = 0`` as an active constraint ``-V <= 0`` (reference code).
        classes, include_background, per_volume, units, normalize, bounds_key, reduction: as in
            :class:`~wss_monai.losses.size.SizePenalty`.

    Example::

        >>> import torch
        >>> term = LogBarrierPenalty()
        >>> probs = torch.softmax(torch.randn(2, 2, 16, 16), dim=1)
        >>> bounds = torch.tensor([[[0, float("inf")], [10, 200]]] * 2, dtype=torch.float32)
        >>> term(probs, bounds=bounds).shape
        torch.Size([])
        >>> term.step_epoch(); round(term.t, 3)
        5.5
    """

    def __init__(
        self,
        t0: float = 5.0,
        factor: float = 1.1,
        t_max: float | None = None,
        zero_lower_active: bool = False,
        classes: Sequence[int] | None = None,
        include_background: bool = False,
        per_volume: bool = False,
        units: str = "px",
        normalize: bool = True,
        bounds_key: str = "bounds",
        reduction: str = "mean",
    ) -> None:
        super().__init__(
            classes=classes,
            include_background=include_background,
            per_volume=per_volume,
            units=units,
            normalize=normalize,
            bounds_key=bounds_key,
            reduction=reduction,
        )
        if t0 <= 0 or factor <= 0:
            raise ValueError(f"t0 and factor must be positive, got t0={t0}, factor={factor}.")
        if t_max is not None and t_max < t0:
            raise ValueError(f"t_max ({t_max}) must be >= t0 ({t0}).")
        self.t0 = float(t0)
        self.factor = float(factor)
        self.t_max = None if t_max is None else float(t_max)
        self.zero_lower_active = bool(zero_lower_active)
        self.epoch = 0

    @property
    def t(self) -> float:
        """The current barrier parameter ``t0 * factor ** epoch`` (capped at ``t_max``)."""
        t = self.t0 * self.factor**self.epoch
        return t if self.t_max is None else min(t, self.t_max)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch counter (0 = first epoch, t = t0)."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}.")
        self.epoch = int(epoch)

    def step_epoch(self) -> None:
        """Advance one epoch: t <- t * factor."""
        self.epoch += 1

    def get_extra_state(self) -> dict:
        return {"epoch": self.epoch}

    def set_extra_state(self, state: dict) -> None:
        self.set_epoch(int(state.get("epoch", 0)))

    def forward(self, probs: torch.Tensor, **batch) -> torch.Tensor:
        sc = self.constraints(probs, **batch)
        t = self.t
        upper_on = torch.isfinite(sc.upper)
        lower_on = torch.isfinite(sc.lower) & ((sc.lower >= 0) if self.zero_lower_active else (sc.lower > 0))
        # Inactive sides get a harmless placeholder so no inf enters the arithmetic or the gradient.
        z_upper = torch.where(upper_on, sc.size - torch.where(upper_on, sc.upper, torch.zeros_like(sc.upper)), -torch.ones_like(sc.size))
        z_lower = torch.where(lower_on, torch.where(lower_on, sc.lower, torch.zeros_like(sc.lower)) - sc.size, -torch.ones_like(sc.size))
        zero = torch.zeros_like(sc.size)
        values = torch.where(upper_on, extended_log_barrier(z_upper, t), zero) + torch.where(
            lower_on, extended_log_barrier(z_lower, t), zero
        )
        return self._finish(values, sc)
