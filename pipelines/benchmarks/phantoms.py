"""Phantom generation speed: ACDC-sized patients (4D cine included) with 1 and 2 workers, and the demo's small phantoms."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipelines.benchmarks.common import print_rows

FULL_CASES = 100  # the ACDC training set
QUICK_CASES = 10
TARGET_SECONDS = 120.0  # 100 ACDC-sized patients with 2 workers on 2 cores
DEMO_QUICK_CASES = 10  # what `python -m pipelines.demo --quick` generates (small ACDC)


def timed_generate(dataset: str, out: Path, **kwargs) -> tuple[float, float]:
    """(wall-clock seconds, MB written) of one ``generate`` call."""
    from data_prep.phantoms import generate

    start = time.perf_counter()
    root = generate(dataset, out, **kwargs)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    return seconds, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.benchmarks phantoms", description=__doc__)
    parser.add_argument("--cases", type=int, default=None, help=f"ACDC-sized patients (default {FULL_CASES})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CASES} patients instead of {FULL_CASES}")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the phantoms (default: a temporary one)")
    args = parser.parse_args(argv)
    cases = args.cases or (QUICK_CASES if args.quick else FULL_CASES)

    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        rows, seconds = [], {}
        for workers in (1, 2):
            seconds[workers], size = timed_generate("acdc", work / f"acdc{workers}", cases=cases, seed=0, workers=workers)
            rows.append([workers, cases, seconds[workers], seconds[workers] / cases, size, size / seconds[workers]])
        print(f"ACDC-sized phantom ({cases} patients; 4D cine, ED/ES frames and labels):")
        print_rows(["workers", "patients", "seconds", "s/patient", "MB written", "MB/s"], rows)
        print(f"speed-up with 2 workers: {seconds[1] / seconds[2]:.2f}x (baseline: 1 worker, same run)")
        projected = seconds[2] * FULL_CASES / cases
        verdict = "within" if projected <= TARGET_SECONDS else "over"
        what = "took" if cases == FULL_CASES else f"projected from {cases} patients:"
        print(f"{FULL_CASES} patients with 2 workers {what} {projected:.1f} s: {verdict} the {TARGET_SECONDS:.0f} s target")

        small_rows = []
        for dataset, count in (("acdc", DEMO_QUICK_CASES), ("promise12", DEMO_QUICK_CASES), ("vertebral", DEMO_QUICK_CASES)):
            sec, size = timed_generate(dataset, work / f"small_{dataset}", cases=count, seed=0, small=True)
            small_rows.append([dataset, count, sec, sec / count, size])
        print("\nSmall phantoms (--small, 1 worker; the demo's --quick run uses the ACDC one):")
        print_rows(["dataset", "cases", "seconds", "s/case", "MB written"], small_rows)
        acdc_small = small_rows[0][3]
        print(f"a small ACDC patient costs {acdc_small / (seconds[1] / cases):.3f}x an ACDC-sized one (1 worker)")
    return 0
