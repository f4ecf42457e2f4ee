"""Data preparation throughput: ACDC-sized phantoms, slices per second with 1 and 2 workers."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

from pipelines.benchmarks.common import print_rows

FULL_CASES = 100  # the ACDC training set: 100 patients, 200 volumes
QUICK_CASES = 10
TARGET_SECONDS = 120.0  # the whole set with 2 workers on 2 cores


def prepare_seconds(raw: Path, out: Path, workers: int, size: int) -> tuple[float, int]:
    """Wall-clock seconds of ``python -m data_prep acdc`` (in-process) and the number of slices written."""
    from data_prep.cli import main

    argv = ["acdc", "--src", str(raw), "--out", str(out), "--workers", str(workers), "--size", str(size)]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"data_prep exited with {code}")
    counts = json.loads((out / "prep.json").read_text())["counts"]["slices"]
    return seconds, sum(counts.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.benchmarks prepare", description=__doc__)
    parser.add_argument("--cases", type=int, default=None, help=f"ACDC phantom patients (default {FULL_CASES}; 2 volumes each)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CASES} patients instead of {FULL_CASES}")
    parser.add_argument("--size", type=int, default=256, help="in-plane size of the prepared slices (default 256)")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the phantoms and outputs (default: a temporary one)")
    args = parser.parse_args(argv)
    cases = args.cases or (QUICK_CASES if args.quick else FULL_CASES)

    from data_prep.phantoms import generate

    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        started = time.perf_counter()
        raw = generate("acdc", work / "raw", cases=cases, seed=0, small=False, workers=2)
        print(f"generated {cases} ACDC-sized phantom patients in {time.perf_counter() - started:.1f} s", flush=True)
        rows, seconds = [], {}
        for workers in (1, 2):
            seconds[workers], slices = prepare_seconds(raw, work / f"out{workers}", workers, args.size)
            rows.append([workers, slices, seconds[workers], slices / seconds[workers]])
        print_rows(["workers", "slices", "seconds", "slices/s"], rows)
        speedup = seconds[1] / seconds[2]
        print(f"speed-up with 2 workers: {speedup:.2f}x (baseline: 1 worker, same run)")
        if cases == FULL_CASES:
            verdict = "within" if seconds[2] <= TARGET_SECONDS else "over"
            print(f"2 workers took {seconds[2]:.1f} s: {verdict} the {TARGET_SECONDS:.0f} s target")
    return 0
