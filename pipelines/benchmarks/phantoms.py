"""Phantom generation speed: ACDC-sized patients (4D cine included) with 1 and 2 workers, and the demo's small phantoms."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

from pipelines.benchmarks.common import print_rows

FULL_CASES = 100  # the ACDC training set
QUICK_CASES = 10
TARGET_SECONDS = 120.0  # 100 ACDC-sized patients with 2 workers on 2 cores
DEMO_QUICK_CASES = 10  # what `python -m pipelines.demo --quick` generates (small ACDC)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed_generate(dataset: str, out: Path, **kwargs) -> tuple[float, float, float]:
    """(wall-clock seconds, CPU seconds, MB written) of one ``generate`` call."""
    from pipelines.testkit.phantoms import generate

    start, cpu = time.perf_counter(), cpu_seconds()
    root = generate(dataset, out, **kwargs)
    multiprocessing.active_children()  # reap the finished workers so their CPU time is counted now
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
    return seconds, cpu, size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.benchmarks phantoms", description=__doc__)
    parser.add_argument("--cases", type=int, default=None, help=f"ACDC-sized patients (default {FULL_CASES})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CASES} patients instead of {FULL_CASES}")
    parser.add_argument("--workdir", type=Path, default=None, help="folder for the phantoms (default: a temporary one)")
    args = parser.parse_args(argv)
    cases = args.cases or (QUICK_CASES if args.quick else FULL_CASES)

    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        work = Path(work)
        rows, seconds, cpu = [], {}, {}
        for workers in (1, 2):
            seconds[workers], cpu[workers], size = timed_generate(
                "acdc", work / f"acdc{workers}", cases=cases, seed=0, workers=workers)
            rows.append([workers, cases, seconds[workers], seconds[workers] / cases, cpu[workers] / cases, size,
                         size / seconds[workers]])
        print(f"ACDC-sized phantom ({cases} patients; 4D cine, ED/ES frames and labels):")
        print_rows(["workers", "patients", "wall s", "wall s/patient", "CPU s/patient", "MB written", "MB/s"], rows)
        print(f"speed-up with 2 workers: {seconds[1] / seconds[2]:.2f}x wall (baseline: 1 worker, same run); "
              f"CPU per patient with 2 workers / with 1: {cpu[2] / cpu[1]:.2f}x (above 1: worker start-up, shared caches)")
        projected = seconds[2] * FULL_CASES / cases
        verdict = "within" if projected <= TARGET_SECONDS else "over"
        what = "took" if cases == FULL_CASES else f"projected from {cases} patients:"
        print(f"{FULL_CASES} patients with 2 workers {what} {projected:.1f} s: {verdict} the {TARGET_SECONDS:.0f} s target")
        # On a shared machine wall time includes waiting for the CPU; CPU time does not.
        idle = cpu[2] * FULL_CASES / cases / 2
        print(f"on 2 otherwise idle cores the CPU time projects to {idle:.1f} s for {FULL_CASES} patients "
              f"(load average now {os.getloadavg()[0]:.1f})")

        small_rows = []
        for dataset, count in (("acdc", DEMO_QUICK_CASES), ("promise12", DEMO_QUICK_CASES), ("vertebral", DEMO_QUICK_CASES)):
            sec, cpu_small, size = timed_generate(dataset, work / f"small_{dataset}", cases=count, seed=0, small=True)
            small_rows.append([dataset, count, sec, sec / count, cpu_small / count, size])
        print("\nSmall phantoms (--small, 1 worker; the demo's --quick run uses the ACDC one):")
        print_rows(["dataset", "cases", "wall s", "wall s/case", "CPU s/case", "MB written"], small_rows)
        acdc_small = small_rows[0][4]
        print(f"a small ACDC patient costs {acdc_small / (cpu[1] / cases):.3f}x the CPU of an ACDC-sized one")
    return 0
