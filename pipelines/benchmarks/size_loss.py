"""Size-penalty overhead: ENet training step (256x256, batch 8), partial CE + size vs partial CE alone."""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Callable

import torch

from pipelines.benchmarks.common import median_seconds, print_rows
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.benchmarks size_loss", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a smaller batch (smoke run)")
    parser.add_argument("--repeat", type=int, default=None, help="timed rounds (default 15, quick 3)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 8, quick 2)")
    parser.add_argument("--size", type=int, default=None, help="image size (default 256, quick 128)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's current setting)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeat = args.repeat or (3 if args.quick else 15)
    batch_size = args.batch or (2 if args.quick else 8)
    size = args.size or (128 if args.quick else 256)

    torch.manual_seed(args.seed)
    net = ENet(1, 2)
    batch = synthetic_batch(batch_size, size, args.seed)
    pce, size_term = PartialCrossEntropy(), SizePenalty()

    def with_size(probs, **b):
        return pce(probs, **b) + 0.01 * size_term(probs, **b)

    steps = {"partial CE": make_step(net, pce, batch), "partial CE + size": make_step(net, with_size, batch)}
    medians, wall, cpu = interleaved_medians(steps, repeat)

    # The size term alone (forward + backward on fixed probabilities): the overhead without the noise of the step.
    logits = torch.randn(batch_size, 2, size, size, requires_grad=True)

    def term_only():
        probs = torch.softmax(logits, dim=1)
        (0.01 * size_term(probs, **batch)).backward()

    def softmax_only():
        torch.softmax(logits, dim=1).sum().backward()

    term_s = max(median_seconds(term_only, repeat=max(repeat, 5) * 4) - median_seconds(softmax_only, repeat=max(repeat, 5) * 4), 0.0)

    base = medians["partial CE"]
    print(f"ENet training step, batch {batch_size}, {size}x{size}, {torch.get_num_threads()} threads, {repeat} interleaved rounds (median)")
    print_rows(RATIO_HEADERS, ratio_rows(list(steps), wall, cpu))
    ratio = medians["partial CE + size"] / base
    cpu_ratio = statistics.median(cpu["partial CE + size"]) / statistics.median(cpu["partial CE"])
    print(f"partial CE + size / partial CE: {ratio:.3f}x wall, {cpu_ratio:.3f}x CPU time "
          f"(target <= 1.03x; paper Table 5: 113/112 = 1.01x)")
    print(f"size term alone (forward + backward, softmax excluded): {1000 * term_s:.2f} ms = {100 * term_s / base:.2f}% of a step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
