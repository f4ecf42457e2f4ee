"""Batched Lagrangian proposals vs the direct size loss: ENet training step (256x256, batch 8)."""

from __future__ import annotations

import argparse
import statistics

import torch

from pipelines.benchmarks.common import print_rows
from pipelines.benchmarks.size_loss import RATIO_HEADERS, interleaved_medians, make_step, ratio_rows, synthetic_batch
from wss_monai.losses import LagrangianProposalLoss, PartialCrossEntropy, SizePenalty
from wss_monai.losses.lagrangian import Proposals
from wss_monai.networks import ENet


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
    parser = argparse.ArgumentParser(prog="python -m pipelines.benchmarks lagrangian", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller batch and images (smoke run)")
    parser.add_argument("--repeat", type=int, default=None, help="timed rounds (default 9, quick 2)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 8, quick 2)")
    parser.add_argument("--size", type=int, default=None, help="image size (default 256, quick 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's current setting)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeat = args.repeat or (2 if args.quick else 9)
    batch_size = args.batch or (2 if args.quick else 8)
    size = args.size or (128 if args.quick else 256)

    torch.manual_seed(args.seed)
    net = ENet(1, 2)
    batch = synthetic_batch(batch_size, size, args.seed)
    pce, size_term = PartialCrossEntropy(), SizePenalty()

    def direct(probs, **b):
        return pce(probs, **b) + 0.01 * size_term(probs, **b)

    batched = Recording(LagrangianProposalLoss())
    no_stop = Recording(LagrangianProposalLoss(early_stop=False))
    per_image = Recording(PerImageLagrangian())
    steps = {
        "direct loss (partial CE + size)": make_step(net, direct, batch),
        "Lagrangian, batched, early stop": make_step(net, batched, batch),
        "Lagrangian, batched, no early stop": make_step(net, no_stop, batch),
        "Lagrangian, per-image loop, early stop": make_step(net, per_image, batch),
    }
    medians, wall, cpu = interleaved_medians(steps, repeat)
    names = list(steps)
    base = medians[names[0]]
    iters = {names[1]: batched.iterations, names[2]: no_stop.iterations, names[3]: per_image.iterations}
    mean_iters = {n: statistics.mean(v) for n, v in iters.items() if v}
    print(f"ENet training step, batch {batch_size}, {size}x{size}, {torch.get_num_threads()} threads, {repeat} interleaved rounds (median)")
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
