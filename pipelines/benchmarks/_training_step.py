"""Shared by the benchmarks that time an ENet training step: options, a synthetic batch, the step, timing.

A private module (leading underscore): the benchmark dispatcher does not list it.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from wss_monai.losses import PartialCrossEntropy, SizePenalty
from wss_monai.networks import ENet


def synthetic_batch(batch: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Images with a bright disc (the target), foreground seeds inside it, individual bounds 0.9/1.1 x size.

    The last quarter of the batch has no target (bounds (0, 0), no seed), as in ACDC's apical slices.
    """
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    image = torch.randn(batch, 1, size, size, generator=g) * 0.1
    weak = torch.full((batch, size, size), 255, dtype=torch.long)
    bounds = torch.zeros(batch, 2, 2)
    bounds[:, 0, 1] = float("inf")
    present = batch - batch // 4
    for n in range(present):
        cy, cx = (torch.randint(size // 3, 2 * size // 3, (2,), generator=g)).tolist()
        radius = size // 10 + n
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        image[n, 0][disc] += 1.0
        weak[n][(yy - cy) ** 2 + (xx - cx) ** 2 <= (radius // 4) ** 2] = 1
        true_size = float(disc.sum())
        bounds[n, 1] = torch.tensor([0.9 * true_size, 1.1 * true_size])
    return {"image": image, "weak": weak, "bounds": bounds}


def make_step(net: torch.nn.Module, loss_fn: Callable[..., torch.Tensor], batch: dict) -> Callable[[], None]:
    """One training step (forward, softmax, loss, backward, Adam step) on its own copy of ``net``."""
    model = copy.deepcopy(net).train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, betas=(0.9, 0.99))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        probs = torch.softmax(model(batch["image"]), dim=1)
        loss = loss_fn(probs, **batch)
        loss.backward()
        opt.step()

    return step


def interleaved_medians(
    steps: dict[str, Callable[[], object]], repeat: int, warmup: int = 1
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, list[float]]]:
    """Time every variant once per round (order alternating between rounds), ``repeat`` rounds.

    Returns the median wall-clock seconds per variant, and the per-round wall-clock and process
    CPU seconds (CPU time is less disturbed when other jobs share the cores).
    """
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeat):
        for name in names if r % 2 == 0 else reversed(names):
            start, start_cpu = time.perf_counter(), time.process_time()
            steps[name]()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in wall.items()}, wall, cpu


def ratio_rows(names: list[str], wall: dict[str, list[float]], cpu: dict[str, list[float]], extra: dict[str, object] | None = None) -> list[list[object]]:
    """Table rows: median wall ms, ratio of medians, median of per-round ratios, same for CPU time."""
    base = names[0]
    rows = []
    for n in names:
        row = [
            n,
            1000 * statistics.median(wall[n]),
            statistics.median(wall[n]) / statistics.median(wall[base]),
            statistics.median(a / b for a, b in zip(wall[n], wall[base])),
            1000 * statistics.median(cpu[n]),
            statistics.median(cpu[n]) / statistics.median(cpu[base]),
        ]
        if extra is not None:
            row.append(extra.get(n, "-"))
        rows.append(row)
    return rows


RATIO_HEADERS = ["loss", "wall ms/step", "wall ratio", "per-round wall ratio", "CPU ms/step", "CPU ratio"]


@dataclass
class StepSetup:
    """Resolved options and the shared inputs of one benchmark run."""

    repeat: int
    batch_size: int
    size: int
    net: torch.nn.Module
    batch: dict
    partial_ce: PartialCrossEntropy
    size_term: SizePenalty

    def direct_loss(self, probs: torch.Tensor, **batch) -> torch.Tensor:
        """The direct size loss of the papers: partial CE + 0.01 x size penalty."""
        return self.partial_ce(probs, **batch) + 0.01 * self.size_term(probs, **batch)

    def describe(self) -> str:
        return (f"ENet training step, batch {self.batch_size}, {self.size}x{self.size}, "
                f"{torch.get_num_threads()} threads, {self.repeat} interleaved rounds (median)")


def setup_from_args(name: str, description: str, argv: list[str] | None, repeat: int, quick_repeat: int) -> StepSetup:
    """Parse the common options (``--quick``, ``--repeat``, ``--batch``, ``--size``, ``--seed``, ``--threads``)."""
    parser = argparse.ArgumentParser(prog=f"python -m pipelines.benchmarks {name}", description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller batch and images (smoke run)")
    parser.add_argument("--repeat", type=int, default=None, help=f"timed rounds (default {repeat}, quick {quick_repeat})")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 8, quick 2)")
    parser.add_argument("--size", type=int, default=None, help="image size (default 256, quick 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's current setting)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_size = args.batch or (2 if args.quick else 8)
    size = args.size or (128 if args.quick else 256)
    torch.manual_seed(args.seed)
    return StepSetup(
        repeat=args.repeat or (quick_repeat if args.quick else repeat),
        batch_size=batch_size,
        size=size,
        net=ENet(1, 2),
        batch=synthetic_batch(batch_size, size, args.seed),
        partial_ce=PartialCrossEntropy(),
        size_term=SizePenalty(),
    )
