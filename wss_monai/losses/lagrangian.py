"""Lagrangian proposals (Pathak et al., ICCV 2015), the baseline of Kervadec et al. (MedIA 2019, sec. 4.5.1).

Vectorised over the batch and the constrained classes: all images run their projected dual
ascent together and each one freezes when it has converged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from wss_monai.losses.base import UNANNOTATED, LossTerm
from wss_monai.losses.partial_ce import as_float, check_label_map
from wss_monai.losses.size import check_bounds, resolve_classes

__all__ = ["LagrangianProposalLoss", "Proposals"]


@dataclass
class Proposals:
    """What one call of :meth:`LagrangianProposalLoss.proposals` found.

    ``labels`` (B, H, W) int64 synthetic ground truth (argmax of ``u``); ``iterations`` (B,)
    number of dual updates each image ran; ``beta`` (B, K, 2) final multipliers (upper, lower)
    per constrained class; ``classes`` the K constrained classes.
    """

    labels: torch.Tensor
    iterations: torch.Tensor
    beta: torch.Tensor
    classes: list[int]


class LagrangianProposalLoss(LossTerm):
    r"""Full cross-entropy against Lagrangian proposals (Pathak et al. 2015; MedIA 2019 sec. 4.5.1).

    Step 1, without gradient, for every image: start from ``q`` = the network's probabilities,
    with the weakly labelled pixels replaced by the one-hot of their label. For the constrained
    classes ``c`` (indicator ``f_c``) run projected dual ascent on ``beta_upper`` and
    ``beta_lower``:

    .. math::
        u_p \propto q_p \exp\big(\textstyle\sum_c (\beta^{lo}_c - \beta^{up}_c) f_{c}\big)
        \quad\text{(normalised over classes)}, \qquad V_c = \sum_p u_{p,c}

        \beta^{up}_c \leftarrow \max(0, \beta^{up}_c + \eta (V_c - b_c)), \qquad
        \beta^{lo}_c \leftarrow \max(0, \beta^{lo}_c + \eta (a_c - V_c))

    with the reference constants ``eta = 5e-5``, at most 500 iterations, bounds ``(0, 0)``
    (absent target) turned into ``(-1, 0)``. Step 2: the proposal is ``argmax_c u``; the loss is
    the full cross-entropy of ``probs`` against it (gradient through ``probs`` only).

    Choices where the reference description is ambiguous (the per-image test reference in
    ``tests/losses/test_lagrangian.py`` makes the same ones):

    - both multipliers of all constrained classes of an image are updated simultaneously from
      the same ``u`` (one "iteration" = one such update);
    - early stopping, per image: after an update, stop when
      ``||beta_new - beta_old||_2 <= tol * ||beta_old||_2`` over the image's (K, 2)
      multipliers (``tol = 1e-3``). The update that met the test is kept. A zero update from
      zero (constraints already satisfied by ``q``) stops after one iteration;
    - the proposal uses ``u`` computed with the final multipliers;
    - an infinite upper bound is no constraint (its multiplier stays 0); the lower bound is
      the given one (0 behaves like -1: its multiplier stays 0).

    Vectorised over images and classes: one softmax per iteration over the (still active)
    images (a sigmoid when a single class is constrained, the same ``u`` for less work);
    finished images are dropped from the working set, so their multipliers freeze.
    ``last_iterations`` keeps the (B,) iteration counts of the last call for logging.

    Shapes: ``probs`` (B, C, H, W); ``weak`` (B, H, W) (255 = unannotated); ``bounds`` (B, C, 2)
    in pixels. Returns a 0-d tensor (mean CE over all pixels of the batch, or ``"sum"``) or the
    (B, H, W) per-pixel CE (``"none"``).

    Args:
        classes: constrained classes (default: foreground 1..C-1).
        include_background: with ``classes=None``, also constrain class 0.
        lr: dual step size eta (5e-5).
        max_iter: maximum number of dual updates per image (500).
        tol: relative-change threshold of the early stop (1e-3).
        early_stop: ``False`` always runs ``max_iter`` updates (the paper's slow variant).
        absent_lower: lower bound used for bounds ``(0, 0)`` (-1, as in the paper).
        ignore_index: unannotated value of ``weak`` (255).
        eps: lower clamp of the probabilities inside the CE's ``log``.
        reduction: ``"mean"`` | ``"sum"`` | ``"none"``.

    Example::

        >>> import torch
        >>> probs = torch.softmax(torch.randn(2, 2, 16, 16), dim=1)
        >>> weak = torch.full((2, 16, 16), 255); weak[:, 7:9, 7:9] = 1
        >>> bounds = torch.tensor([[[0, float("inf")], [20, 40]]] * 2, dtype=torch.float32)
        >>> loss = LagrangianProposalLoss()
        >>> loss(probs, weak=weak, bounds=bounds).shape
        torch.Size([])
    """

    def __init__(
        self,
        classes: Sequence[int] | None = None,
        include_background: bool = False,
        lr: float = 5e-5,
        max_iter: int = 500,
        tol: float = 1e-3,
        early_stop: bool = True,
        absent_lower: float = -1.0,
        ignore_index: int = UNANNOTATED,
        eps: float = 1e-10,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr must be positive, got {lr}.")
        if int(max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}.")
        if tol < 0:
            raise ValueError(f"tol must be >= 0, got {tol}.")
        self.classes = None if classes is None else [int(c) for c in classes]
        self.include_background = bool(include_background)
        self.lr = float(lr)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.early_stop = bool(early_stop)
        self.absent_lower = float(absent_lower)
        self.ignore_index = int(ignore_index)
        self.eps = float(eps)
        self.reduction = self._check_reduction(reduction)
        self.last_iterations: torch.Tensor | None = None

    @torch.no_grad()
    def proposals(self, probs: torch.Tensor, weak: torch.Tensor | None = None, bounds: torch.Tensor | None = None) -> Proposals:
        """Run the batched dual ascent and return the proposals (no gradient)."""
        owner = type(self).__name__
        probs = self._check_probs(probs)
        p = as_float(probs.detach())
        b, c, h, w = p.shape
        weak = check_label_map(owner, "weak", self._require("weak", weak), p, self.ignore_index)
        bounds = check_bounds(owner, "bounds", self._require("bounds", bounds), b, c, p)
        cls = resolve_classes(owner, self.classes, self.include_background, c)
        k = len(cls)
        index = torch.tensor(cls, device=p.device, dtype=torch.long)
        lower = bounds[..., 0].index_select(1, index)
        upper = bounds[..., 1].index_select(1, index)
        lower = torch.where((lower == 0) & (upper == 0), torch.full_like(lower, self.absent_lower), lower)
        upper_on = torch.isfinite(upper)
        upper = torch.where(upper_on, upper, torch.zeros_like(upper))

        # log q: network probabilities, weakly labelled pixels replaced by their one-hot label.
        logq = torch.log(p).reshape(b, c, h * w)
        labelled = (weak != self.ignore_index).reshape(b, 1, h * w)
        if bool(labelled.any()):
            onehot = torch.zeros_like(logq).scatter_(1, torch.where(labelled, weak.reshape(b, 1, h * w), 0), 1.0)
            logq = torch.where(labelled, torch.log(onehot), logq)

        beta = p.new_zeros(b, k, 2)  # [..., 0] upper, [..., 1] lower
        iterations = torch.zeros(b, dtype=torch.long, device=p.device)
        act = torch.arange(b, device=p.device)  # working set: images still iterating
        if k == 1:
            # One constrained class (the papers' setting): u_c = sigmoid(log q_c - log sum_{j != c} q_j + shift),
            # the same normalised u with a quarter of the work of a softmax over classes.
            others = [j for j in range(c) if j != cls[0]]
            rest = torch.logsumexp(logq[:, others], dim=1) if others else torch.full_like(logq[:, 0], -float("inf"))
            work = logq[:, cls[0]] - rest  # (B, N)
        else:
            work = logq  # (B, C, N)
        work_act, lower_act, upper_act, upper_on_act = work, lower, upper, upper_on
        for _ in range(self.max_iter):
            if act.numel() == 0:
                break
            old = beta.index_select(0, act)
            if k == 1:
                size = torch.sigmoid(work_act + (old[:, 0, 1] - old[:, 0, 0])[:, None]).sum(dim=1, keepdim=True)  # (A, 1)
            else:
                shift = work_act.new_zeros(act.numel(), c)
                shift[:, index] = old[..., 1] - old[..., 0]
                u = torch.softmax(work_act + shift[:, :, None], dim=1)
                size = u.index_select(1, index).sum(dim=2)  # (A, K)
            step = torch.stack([torch.where(upper_on_act, size - upper_act, -torch.ones_like(size)), lower_act - size], dim=-1)
            new = (old + self.lr * step).clamp_min(0.0)
            beta.index_copy_(0, act, new)
            iterations.index_add_(0, act, torch.ones_like(act))
            if not self.early_stop:
                continue
            change = (new - old).flatten(1).norm(dim=1)
            done = change <= self.tol * old.flatten(1).norm(dim=1)
            if bool(done.any()):
                keep = ~done
                act, work_act = act[keep], work_act[keep]
                lower_act, upper_act, upper_on_act = lower_act[keep], upper_act[keep], upper_on_act[keep]

        shift = logq.new_zeros(b, c)
        shift[:, index] = beta[..., 1] - beta[..., 0]
        labels = (logq + shift[:, :, None]).argmax(dim=1).reshape(b, h, w)
        return Proposals(labels, iterations, beta, cls)

    def forward(self, probs: torch.Tensor, **batch) -> torch.Tensor:
        found = self.proposals(probs, batch.get("weak"), batch.get("bounds"))
        self.last_iterations = found.iterations
        picked = as_float(probs).gather(1, found.labels.unsqueeze(1)).squeeze(1)
        nll = -torch.log(picked.clamp_min(self.eps))
        if self.reduction == "none":
            return nll
        if self.reduction == "sum":
            return nll.sum()
        return nll.sum() / max(nll.numel(), 1)
