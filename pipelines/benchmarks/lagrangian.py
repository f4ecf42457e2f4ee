"""Batched Lagrangian proposals vs the direct size loss: ENet training step (256x256, batch 8)."""

from __future__ import annotations

import statistics

import torch

from pipelines.benchmarks._training_step import RATIO_HEADERS, interleaved_medians, make_step, ratio_rows, setup_from_args
from pipelines.benchmarks.common import print_rows
from wss_monai.losses import LagrangianProposalLoss
from wss_monai.losses.lagrangian import Proposals


class PerImageLagrangian(LagrangianProposalLoss):
    """The same algorithm run image by image (a Python loop over the batch, as in the original code)."""

    def proposals(self, probs, weak=None, bounds=None) -> Proposals:
        parts = [super(PerImageLagrangian, self).proposals(probs[i : i + 1], weak[i : i + 1], bounds[i : i + 1]) for i in range(probs.shape[0])]
        return Proposals(
            torch.cat([p.labels for p in parts]),
            torch.cat([p.iterations for p in parts]),
            torch.cat([p.beta for p in parts]),
            parts[0].classes if parts else [],
        )


class Recording(torch.nn.Module):
    """Wraps a Lagrangian loss and keeps the iteration counts of every call."""

    def __init__(self, term: LagrangianProposalLoss) -> None:
        super().__init__()
        self.term = term
        self.iterations: list[float] = []

    def forward(self, probs, **batch):
        value = self.term(probs, **batch)
        self.iterations.append(float(self.term.last_iterations.float().mean()))
        return value


def main(argv: list[str] | None = None) -> int:
    run = setup_from_args("lagrangian", __doc__, argv, repeat=9, quick_repeat=2)
    net, batch = run.net, run.batch
    batched = Recording(LagrangianProposalLoss())
    no_stop = Recording(LagrangianProposalLoss(early_stop=False))
    per_image = Recording(PerImageLagrangian())
    steps = {
        "direct loss (partial CE + size)": make_step(net, run.direct_loss, batch),
        "Lagrangian, batched, early stop": make_step(net, batched, batch),
        "Lagrangian, batched, no early stop": make_step(net, no_stop, batch),
        "Lagrangian, per-image loop, early stop": make_step(net, per_image, batch),
    }
    medians, wall, cpu = interleaved_medians(steps, run.repeat)
    names = list(steps)
    base = medians[names[0]]
    iters = {names[1]: batched.iterations, names[2]: no_stop.iterations, names[3]: per_image.iterations}
    mean_iters = {n: statistics.mean(v) for n, v in iters.items() if v}
    print(run.describe())
    print_rows(RATIO_HEADERS + ["mean dual iterations"], ratio_rows(names, wall, cpu, mean_iters))

    def cpu_ratio(n: str) -> float:
        return statistics.median(cpu[n]) / statistics.median(cpu[names[0]])

    print(
        f"batched Lagrangian / direct loss: {medians[names[1]] / base:.2f}x wall, {cpu_ratio(names[1]):.2f}x CPU "
        f"(target <= 1.5x; MedIA 2019 Table 5 at batch 1: 221/113 = 1.96x with early stop, 610/113 = 5.4x without); "
        f"without early stop {medians[names[2]] / base:.2f}x wall, {cpu_ratio(names[2]):.2f}x CPU; "
        f"per-image loop {medians[names[3]] / base:.2f}x wall, {cpu_ratio(names[3]):.2f}x CPU"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
