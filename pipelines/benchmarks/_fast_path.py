"""The fast training path against the path it replaced, in the bundle's own training loop; the step's distance to the arithmetic limit.

Part 3 of ``python -m pipelines.benchmarks training`` (``--fast-path``; ``--skip-fast-path`` leaves it out).

For each slice size (48 and 256 by default) and torch thread count (1 and 2), two
``wss_segmentation`` ``train.json`` workflows are built on the same phantom, with the same seed:

- **before**: ``compile false, fused_optimizer false, prefetch false, nan_check_interval 1``, the
  path of every run before these switches existed;
- **after**: the defaults (fused Adam, prefetch, loss checks at the epoch's end) with ``compile
  true`` and an empty inductor cache in a temporary folder.

Their epochs alternate (before, after, after, before...); images per second are the training
iterations of an epoch (validation off), medians over the timed epochs. The first compiled epoch
is not timed: the compile time is measured on it (its extra seconds over a timed epoch) and again
after ``torch._dynamo.reset()`` with the kernels already on disk (what a second run pays), and
amortised over the demo's run lengths.

The arithmetic limit: the floating-point operations of one training step (forward and backward
of ENet at that size, batch 8; ``torch.utils.flop_counter.FlopCounterMode``) divided by the rate
this machine reaches on a 1024 x 1024 fp32 matrix product with the same thread count, measured
in the same run. ``distance`` = measured step time / that limit.
"""

from __future__ import annotations

import contextlib
import io
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pipelines.benchmarks.common import print_rows

OLD_PATH = {"compile": False, "fused_optimizer": False, "prefetch": False, "nan_check_interval": 1}

#: training seconds of one demo run (``pipelines.demo``: about 172 s each, start-up included) and
#: the iterations of a 200-epoch run on the demo's phantom (36 training patients, ~80 batches an epoch)
DEMO_RUN_S = 160.0
LONG_RUN_ITERATIONS = 200 * 80


def matmul_gflops(threads: int, n: int = 1024, repeat: int = 5) -> float:
    """GFLOP/s of an n x n fp32 matrix product with ``threads`` torch threads (best of ``repeat``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeat))
    torch.set_num_threads(before)
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_gflop(size: int, batch: int = 8) -> float:
    """GFLOP of one ENet training step (forward + backward, 2 classes) on ``batch`` slices of ``size`` x ``size``."""
    from torch.utils.flop_counter import FlopCounterMode

    from wss_monai.networks import ENet

    net = ENet(1, 2).train()
    x = torch.randn(batch, 1, size, size)
    with FlopCounterMode(display=False) as counter:
        net(x).logsumexp(1).mean().backward()
    return counter.get_total_flops() / 1e9


def _workflow(prepared: Path, out: Path, overrides: dict):
    from pipelines.benchmarks._bundle_loop import bundle_workflow

    out.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):
        workflow = bundle_workflow(prepared, out, "individual", 8, **overrides)
    for name in ("ignite.engine.engine.SupervisedTrainer", "wss_monai.train", "wss_monai.engine"):
        logging.getLogger(name).setLevel(logging.WARNING)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    return workflow, trainer


def compare(size: int, threads: int, cases: int, rounds: int) -> list[list[object]]:
    """Rows of the table for one size and thread count (also prints a line on the compile time)."""
    from pipelines.benchmarks._bundle_loop import EpochClock
    from pipelines.benchmarks._bundle_loop import quiet_phantom

    torch.set_num_threads(threads)
    rate = matmul_gflops(threads)
    flop = step_gflop(size)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepared = quiet_phantom(work, cases, size)
        variants = {
            "before": _workflow(prepared, work / "before", OLD_PATH),
            "after": _workflow(prepared, work / "after", {"compile": True, "compile_cache_dir": str(work / "inductor")}),
        }
        clocks = {}
        for name, (_, trainer) in variants.items():
            clocks[name] = EpochClock()
            clocks[name].attach(trainer)
        epochs = {name: 0 for name in variants}

        def epoch(name: str) -> None:
            trainer = variants[name][1]
            epochs[name] += 1
            trainer.state.max_epochs = epochs[name]
            trainer.run()

        epoch("before")
        epoch("after")  # compiles on its first batch of the full size
        for r in range(rounds):
            for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
                epoch(name)
        # a second run: the graphs and kernels are on disk, dynamo traces again
        net = variants["after"][1].network
        torch._dynamo.reset()
        net.__dict__["_compiled"] = torch.compile(net.network, dynamic=False)
        epoch("after")
        warm_epoch_s = clocks["after"].train_s[-1]
        for workflow, _ in variants.values():
            with contextlib.redirect_stdout(io.StringIO()):
                workflow.finalize()

    def timed(name: str, skip_last: bool = False) -> tuple[float, float, int]:
        clock = clocks[name]
        seconds = clock.train_s[1:-1] if skip_last else clock.train_s[1:]
        images = clock.images[1:-1] if skip_last else clock.images[1:]
        ips = statistics.median(n / s for n, s in zip(images, seconds))
        return ips, statistics.median(seconds), images[-1]

    before_ips, _, images = timed("before")
    after_ips, after_s, _ = timed("after", skip_last=True)
    cold_s = clocks["after"].train_s[0] - after_s
    warm_s = warm_epoch_s - after_s
    batches = max(1, round(images / 8))
    limit_ms = 1000 * flop / rate
    rows = []
    for name, ips in (("before", before_ips), ("after", after_ips)):
        step_ms = 1000 * 8 / ips
        rows.append([f"{size} x {size}", threads, name, ips, step_ms, step_ms / limit_ms, ips / before_ips])
    saved = (1 / before_ips - 1 / after_ips) * 8  # seconds saved per step

    def net_gain(seconds_of_training: float, compile_s: float) -> float:
        images_before = seconds_of_training * before_ips
        images_after = max(0.0, seconds_of_training - compile_s) * after_ips
        return images_after / images_before
    long_before = LONG_RUN_ITERATIONS * 8 / before_ips
    long_after = LONG_RUN_ITERATIONS * 8 / after_ips + warm_s
    print(f"{size} x {size}, {threads} threads: step {flop:.2f} GFLOP, core(s) {rate:.1f} GFLOP/s on a 1024^2 matmul -> limit {limit_ms:.1f} ms/step; "
          f"{batches} batches/epoch, {rounds} timed epochs each. Compile: {cold_s:.1f} s on an empty cache, {warm_s:.1f} s with it on disk "
          f"(repaid after {cold_s / saved:.0f} / {warm_s / saved:.0f} steps). "
          f"Images in a demo run of {DEMO_RUN_S:.0f} s of training, after / before: {net_gain(DEMO_RUN_S, cold_s):.2f}x (cold cache), "
          f"{net_gain(DEMO_RUN_S, warm_s):.2f}x (warm); a 200-epoch demo run ({LONG_RUN_ITERATIONS} steps): "
          f"{long_before / long_after:.2f}x faster with a warm cache." if saved > 0 else
          f"{size} x {size}, {threads} threads: the compiled path saved no time per step")
    return rows


def run(sizes: list[int], threads: list[int], rounds: int, quick: bool = False) -> None:
    rows = []
    for size in sizes:
        for n in threads:
            rows += compare(size, n, cases=(4 if size > 64 or quick else 12), rounds=rounds)
    print("\n## Bundle training loop, before vs after (individual, batch 8, validation off; medians of alternated epochs)")
    print_rows(["slices", "threads", "path", "images/s", "ms/step", "x arithmetic limit", "speed-up"], rows)
