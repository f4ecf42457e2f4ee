"""Data preparation throughput: ACDC-sized phantoms, slices per second with 1 and 2 workers.

``--user-labels``: the same phantom with the annotator's scribble label maps beside every frame
(``python -m pipelines.testkit.phantoms acdc --annotator N`` keeping every full mask), prepared in one run as today (full masks,
five generated strategies) and with the user label maps added (``--weak-labels``), 2 workers each,
alternating ``--repeats`` times (the fastest of each counts: other work on the machine only adds
time); the ratio of the two is the cost of reading, checking, resampling and writing the user's
annotations.
"""

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
USER_RATIO_TARGET = 1.2  # preparing with user label maps vs today's preparation
USER_LABELS = ["--weak-labels", "{folder}/{case}_scribble.nii.gz", "--weak-values", "0=background,1=1,2=2,3=3,4=none"]


def prepare_seconds(raw: Path, out: Path, workers: int, size: int, extra: list[str] = ()) -> tuple[float, int]:
    """Wall-clock seconds of ``python -m data_prep acdc`` (in-process) and the number of slices written."""
    from data_prep.cli import main

    argv = ["acdc", "--src", str(raw), "--out", str(out), "--workers", str(workers), "--size", str(size), *extra]
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
    parser.add_argument("--user-labels", action="store_true",
                        help="compare today's preparation with the same plus user scribble label maps (2 workers)")
    parser.add_argument("--repeats", type=int, default=2, help="--user-labels: alternate runs of each (default 2)")
    args = parser.parse_args(argv)
    cases = args.cases or (QUICK_CASES if args.quick else FULL_CASES)
    if args.user_labels:
        return user_labels(cases, args.size, args.workdir, max(1, args.repeats))

    from pipelines.testkit.phantoms import generate

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


def user_labels(cases: int, size: int, workdir: Path | None, repeats: int = 2) -> int:
    """Today's preparation vs the same with user label maps, on one phantom, in one run."""
    import shutil

    from pipelines.testkit.phantoms import generate

    with tempfile.TemporaryDirectory(dir=workdir) as work:
        work = Path(work)
        started = time.perf_counter()
        raw = generate("acdc", work / "raw", cases=cases, seed=0, small=False, workers=2, annotator=cases)
        print(f"generated {cases} ACDC-sized annotator phantom patients in {time.perf_counter() - started:.1f} s", flush=True)
        variants = (("today (full masks, 5 generated)", []), ("+ user label maps", USER_LABELS))
        times: dict[str, list[float]] = {name: [] for name, _ in variants}
        slices = 0
        for repeat in range(repeats):
            for name, extra in variants:
                out = work / "out"
                took, slices = prepare_seconds(raw, out, 2, size, extra)
                shutil.rmtree(out)
                times[name].append(took)
                print(f"{name}, run {repeat + 1}: {took:.1f} s", flush=True)
        seconds = {name: min(found) for name, found in times.items()}
        rows = [[name, slices, seconds[name], slices / seconds[name], " ".join(f"{t:.1f}" for t in times[name])]
                for name, _ in variants]
        print_rows(["preparation (2 workers)", "slices", "fastest s", "slices/s", "all runs s"], rows)
        ratio = seconds["+ user label maps"] / seconds["today (full masks, 5 generated)"]
        verdict = "within" if ratio <= USER_RATIO_TARGET else "over"
        print(f"with user label maps / today: {ratio:.3f}x ({verdict} the {USER_RATIO_TARGET}x target; same phantom, "
              f"same run, fastest of {repeats})")
    return 0
