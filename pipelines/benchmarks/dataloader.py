"""Training data loader: cache build, ms per batch with and without augmentation, vs an ENet step."""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

from pipelines.benchmarks.common import median_seconds, print_rows

FULL_CASES = 20
QUICK_CASES = 4


def _prepare(work: Path, cases: int, size: int) -> Path:
    from data_prep.cli import main
    from pipelines.testkit.phantoms import generate

    raw = generate("acdc", work / "raw", cases=cases, seed=0, small=True)
    out = work / "prepared"
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["acdc", "--src", str(raw), "--out", str(out), "--size", str(size), "--weak", "erosion"])
    if code != 0:
        raise RuntimeError(f"data_prep exited with {code}")
    return out


def _epoch_ms_per_batch(loader) -> float:
    start = time.perf_counter()
    batches = sum(1 for _ in loader)
    return 1000.0 * (time.perf_counter() - start) / max(1, batches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.benchmarks dataloader", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CASES} phantom patients instead of {FULL_CASES}")
    parser.add_argument("--size", type=int, default=256, help="in-plane size of the slices (default 256, the papers')")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the main process (default 1: the 2 cores are shared)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)

    from wss_monai.data import make_dataloader
    from wss_monai.networks import ENet

    with tempfile.TemporaryDirectory() as work:
        root = _prepare(Path(work), QUICK_CASES if args.quick else FULL_CASES, args.size)
        common = dict(weak="erosion", bounds="individual", batch_size=args.batch_size, seed=0)
        start = time.perf_counter()
        loader = make_dataloader(root, "training", **common)
        build = time.perf_counter() - start
        n = len(loader.dataset)
        print(f"{n} training slices of {args.size} x {args.size}: cache built in {build:.2f} s ({1000 * build / n:.2f} ms per slice)")

        rows = []
        for augment in (False, True):
            for workers in (0, 2):
                loader = make_dataloader(root, "training", augment=augment, num_workers=workers, persistent_workers=True, **common)
                _epoch_ms_per_batch(loader)  # warm-up: workers start (persistent), pages touched
                rows.append([augment, workers, _epoch_ms_per_batch(loader)])

        model = ENet(in_channels=1, num_classes=len(loader.dataset.class_names))
        optimiser = torch.optim.Adam(model.parameters(), lr=5e-4)
        batch = next(iter(make_dataloader(root, "training", **common)))

        def step() -> None:
            optimiser.zero_grad()
            logits = model(batch["image"])
            torch.nn.functional.cross_entropy(logits, batch["weak"], ignore_index=255).backward()
            optimiser.step()

        step_ms = 1000.0 * median_seconds(step, repeat=3, warmup=1)
        print_rows(["augment", "workers", "ms/batch", "share of an ENet step"], [r + [r[2] / step_ms] for r in rows])
        print(f"baseline: one ENet training step (batch {args.batch_size}, forward + backward, CPU, {args.threads} threads) = {step_ms:.0f} ms, same run")
        print("workers run one torch thread each; with 0 workers the loader uses the main process's threads")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
