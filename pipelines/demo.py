"""The main job: ``python -m pipelines.demo [--quick] [--out DIR]`` (``make demo``).

It shows in minutes, on a CPU, what wss-monai is for:

1. generates a synthetic dataset in the exact ACDC layout (a *phantom*: the real data cannot be
   downloaded here) and prepares it like real data (2D slices, weak labels, size bounds, split);
2. trains the regimes of the journal paper's Table 1 (``partial``, ``tags``, ``common``,
   ``individual``, ``volume3d``, ``full``), a hybrid ``hybrid_<n>`` with its ``full_<n>``
   (Table 2) and the Lagrangian-proposal baseline ``lagrangian_individual``, each as a real
   ``python -m monai.bundle run`` tracked in MLflow, several at once (one torch thread each);
3. prints the comparison table and writes a report (:mod:`pipelines.report`): Dice per regime
   with the paper's values beside ours, validation curves, the same validation slices
   segmented by every regime, training time per image;
4. ends with the report's path and the ``mlflow ui`` command that opens the runs.

Time: the demo has one total budget (:class:`DemoSettings` ``minutes``). What the phantom and its
preparation leave of it, minus a reserve for the report, is split evenly over the rounds of
``parallel`` runs; each run stops at the end of the last epoch that fits (the
:class:`~wss_monai.engine.time_budget.TimeBudget` handler). Each run's share is decided when it starts,
from the time then left, so a round that overran (a run always completes its first epoch)
shortens the later ones rather than the demo ending late. With ``--epochs N`` there is no budget:
every run trains N epochs, so the table is the same on any machine and only the time varies. The settings are :data:`FULL` and
:data:`QUICK` below; the options of the "tuning and tests" group override them one by one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

from pipelines.folders import output_problem


@dataclass(frozen=True)
class DemoSettings:
    """Everything the demo's size and duration depend on.

    Attributes:
        cases: phantom patients (3/4 training, 1/4 validation).
        size: prepared slice size in pixels (square).
        fov_mm: field of view kept around the heart (pixels of ``fov_mm / size`` mm).
        inplane: raw phantom in-plane size (None: the real ACDC sizes; smaller writes faster).
        frames: cine frames per phantom patient (only ED and ES are used).
        minutes: total wall-clock budget of the demo, phantom and report included.
        parallel: bundle runs at once (one torch thread each: use the number of cores).
        hybrid_n: fully annotated patients of ``hybrid_<n>`` / ``full_<n>``.
        regimes: the regimes trained (``{n}`` is replaced by ``hybrid_n``).
        epochs: epochs of every run, with no time budget (``--epochs``: the same table on any machine);
            None: as many as fit in the time budget (the table then moves with the machine's speed).
        batch_size: slices per training batch.
        learning_rate: Adam learning rate (:data:`pipelines.regimes.CPU_LEARNING_RATE`: batch 8, minutes of training).
        seed: seed of the phantom, the split and the runs.
        overlay_slices: validation slices in the report's qualitative figure.
    """

    cases: int
    size: int
    fov_mm: float = 144.0
    inplane: int | None = None
    frames: int = 10
    minutes: float = 15.0
    parallel: int = 2
    hybrid_n: int = 5
    regimes: tuple[str, ...] = ("partial", "tags", "common", "individual", "volume3d", "full",
                                "full_{n}", "hybrid_{n}", "lagrangian_individual")
    epochs: int | None = None
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0
    overlay_slices: int = 4


FULL = DemoSettings(cases=48, size=48, minutes=15.0, parallel=2, hybrid_n=2)
"""``python -m pipelines.demo``: 48 patients at 48 x 48 (3 mm pixels), 9 regimes, 2 at once, about 2.8 min each, 15 min in all.

``hybrid_2``: the papers' n counts fully annotated *images* (volumes) of 150; 2 of our 36 training
patients are 4 of 72 volumes (5.6%), near the paper's 5 of 150 (3.3%). Measured with n = 5 (14% of
the volumes) in the same demo: full_5 0.813, hybrid_5 0.787, since full_5 makes ~100 epochs over
its few masks in the time hybrid_5 makes 18; with n = 2: full_2 0.722, hybrid_2 0.763."""

QUICK = DemoSettings(cases=8, size=48, inplane=96, frames=4, minutes=3.0, parallel=2, hybrid_n=1)
"""``python -m pipelines.demo --quick``: 8 patients at 48 x 48, the same regimes, about 30 s each, 3 min in all."""

REPORT_RESERVE_S = 20.0
"""Seconds of the budget kept for reading the runs back and drawing the report."""

MIN_SECONDS_PER_RUN = 20.0
"""No run gets less than this (bundle start-up alone takes about 10 s on one core)."""


def regimes_of(settings: DemoSettings) -> list[str]:
    """The regime names of the settings, ``{n}`` filled in."""
    return [r.replace("{n}", str(settings.hybrid_n)) for r in settings.regimes]


def seconds_per_run(settings: DemoSettings, elapsed_s: float, n_runs: int) -> float:
    """The budget of each run: what is left of ``minutes`` after ``elapsed_s`` and the report
    reserve, split evenly over the ``ceil(n_runs / parallel)`` rounds of runs."""
    rounds = max(1, math.ceil(n_runs / max(1, settings.parallel)))
    left = 60.0 * settings.minutes - elapsed_s - REPORT_RESERVE_S
    return max(MIN_SECONDS_PER_RUN, left / rounds)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit code 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _Parser(
        prog="python -m pipelines.demo",
        description="wss-monai demo: generate a synthetic ACDC-layout dataset, prepare it, train the regimes of the "
        "constrained-CNN paper's Table 1 plus a hybrid and a Lagrangian baseline as MONAI bundle runs tracked in MLflow, "
        f"and write a comparison report. About {FULL.minutes:g} minutes ({QUICK.minutes:g} with --quick) on 2 CPU cores.",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: ./demo_out)")
    parser.add_argument("--quick", action="store_true", help=f"a smaller phantom and shorter runs: about {QUICK.minutes:g} minutes")
    tuning = parser.add_argument_group(
        "tuning and tests", "override one setting of the demo (defaults: the FULL or QUICK settings in pipelines/demo.py)")
    tuning.add_argument("--cases", type=int, help="phantom patients")
    tuning.add_argument("--size", type=int, help="prepared slice size in pixels")
    tuning.add_argument("--inplane", type=int, help="raw phantom in-plane size in voxels (smaller is faster)")
    tuning.add_argument("--minutes", type=float, help="total wall-clock budget, phantom and report included")
    parser.add_argument("--epochs", type=int, help="train every regime for exactly N epochs, with no time budget: the same "
                        "table on any machine (only the time varies); without it the demo has a time budget per regime")
    tuning.add_argument("--parallel", type=int, help="bundle runs at once")
    tuning.add_argument("--hybrid-n", type=int, help="fully annotated patients of hybrid_<n> and full_<n>")
    tuning.add_argument("--regimes", help="comma-separated regimes instead of the paper's ({n} = --hybrid-n)")
    tuning.add_argument("--seed", type=int, help="seed of the phantom, the split and the runs")
    tuning.add_argument("--no-overlays", action="store_true", help="leave the qualitative figure out of the report")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> DemoSettings:
    """:data:`QUICK` or :data:`FULL` with the command line's overrides."""
    settings = QUICK if args.quick else FULL
    changes = {key: getattr(args, key) for key in ("cases", "size", "inplane", "minutes", "epochs", "parallel", "hybrid_n", "seed")
               if getattr(args, key) is not None}
    if args.regimes:
        changes["regimes"] = tuple(r.strip() for r in args.regimes.split(",") if r.strip())
    return replace(settings, **changes)


def check(settings: DemoSettings) -> str | None:
    """The first problem with the settings, as one line, or None."""
    from wss_monai.regimes import UnknownRegimeError, get_regime

    if settings.cases < 4:
        return f"--cases {settings.cases}: the demo needs at least 4 patients (3 training, 1 validation)"
    if settings.size < 16:
        return f"--size {settings.size}: at least 16 pixels"
    if settings.minutes <= 0 or settings.parallel < 1 or (settings.epochs is not None and settings.epochs < 1):
        return "--minutes must be positive, --parallel and --epochs at least 1"
    if not settings.regimes:
        return "--regimes is empty"
    training_patients = settings.cases - max(1, settings.cases // 4)
    for name in regimes_of(settings):
        try:
            spec = get_regime(name)
        except UnknownRegimeError as err:
            return str(err)
        if spec.full_patients > training_patients:
            return (f"{name} needs {spec.full_patients} fully annotated patients; {settings.cases} cases give about "
                    f"{training_patients} training patients (lower --hybrid-n or raise --cases)")
    return None


def _reusable(prepared: Path, settings: DemoSettings) -> str | None:
    """Why an existing prepared phantom cannot serve these settings (None: it can, or there is none)."""
    if not (prepared / "dataset.json").is_file():
        return None
    try:
        options = json.loads((prepared / "prep.json").read_text())["options"]
        size = options["size"]
        size = size[0] if isinstance(size, list) else int(size)
        patients = {e["patient"] for split in ("training", "validation", "test")
                    for e in json.loads((prepared / "dataset.json").read_text()).get(split, [])}
    except (OSError, KeyError, ValueError, TypeError, IndexError):
        return f"{prepared}: not a prepared phantom this demo can read"
    if int(size) != settings.size or len(patients) != settings.cases:
        return (f"{prepared}: prepared with {len(patients)} patients at {size} px, the demo wants {settings.cases} at "
                f"{settings.size} px; choose another --out or remove it")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    problem = check(settings)
    out = args.out.resolve()
    if problem is None:
        problem = output_problem(out) or _reusable(out / "prepared_acdc", settings)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    from pipelines import report
    from pipelines.phantom_data import prepare_phantom
    from pipelines.regimes import run_regimes
    from pipelines.reporting.results import console_table
    from pipelines.store import collect
    from wss_monai import tracking

    start = time.time()
    regimes = regimes_of(settings)
    print(f"wss-monai demo{' (quick)' if args.quick else ''}: {len(regimes)} regimes, {settings.parallel} at a time, "
          f"about {settings.minutes:g} minutes in all; output in {out}", flush=True)
    prepared = prepare_phantom(out, cases=settings.cases, size=settings.size, seed=settings.seed, inplane=settings.inplane,
                               frames=settings.frames, fov_mm=settings.fov_mm, log=lambda line: print(line, flush=True))
    seconds = seconds_per_run(settings, time.time() - start, len(regimes))
    uri = tracking.resolve_tracking_uri(out / tracking.DEFAULT_DB_NAME)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    by_epochs = settings.epochs is not None  # a fixed number of epochs: the same table on any machine, no budget
    each = f"{settings.epochs} epochs each (no time budget)" if by_epochs else f"about {seconds:.0f} s each (start-up included)"
    print(f"training {len(regimes)} regimes, {each}, {settings.parallel} at a time ...", flush=True)
    frame = run_regimes(prepared, regimes, out_dir=out, minutes_per_regime=None, epochs=settings.epochs,
                        deadline=None if by_epochs else start + 60.0 * settings.minutes - REPORT_RESERVE_S,
                        min_seconds=MIN_SECONDS_PER_RUN,
                        tracking_uri=uri, batch_size=settings.batch_size, seed=settings.seed,
                        learning_rate=settings.learning_rate, parallel=settings.parallel,
                        threads=1 if settings.parallel > 1 else None, tag=f"demo-{stamp}",
                        tags={"wss.pipeline": "demo", "wss.demo": stamp},
                        progress=lambda line: print(line, flush=True))
    run_ids = [r for r in frame["run_id"] if isinstance(r, str) and r]
    runs = collect(run_ids=run_ids, tracking_uri=uri)
    runs.experiment = ", ".join(sorted(set(runs.frame["experiment"]))) if len(runs.frame) else ""
    data = json.loads((prepared / "dataset.json").read_text())
    patients = {s: len({e["patient"] for e in data.get(s, [])}) for s in ("training", "validation")}
    intro = [
        f"The wss-monai demo{' (--quick)' if args.quick else ''}: an ACDC-layout phantom of {settings.cases} patients "
        f"({patients['training']} training, {patients['validation']} validation), the central {settings.fov_mm:g} mm "
        f"prepared at {settings.size} x {settings.size}; ENet, batch {settings.batch_size}, Adam learning rate {settings.learning_rate:g}, seed {settings.seed}; each regime "
        f"a MONAI bundle run of {each}, {settings.parallel} at a time with one torch thread "
        f"each. Settings: `{json.dumps(asdict(settings))}`.",
        "A phantom is not the papers' data and a few minutes on a CPU are not their 200 epochs: expect the ordering of "
        "the regimes (partial far below, size constraints close to full supervision) rather than the papers' values. "
        f"Training times are measured while {settings.parallel} runs share the machine.",
    ]
    path = report.write_report(runs, out / "report", title="wss-monai demo: weakly supervised LV segmentation",
                               intro=intro, overlays=not args.no_overlays, overlay_slices=settings.overlay_slices,
                               log=lambda line: print(f"note: {line}"))
    summary = report.summarize(runs.frame)
    failed = [r for r, s in zip(frame["regime"], frame["status"]) if s != "FINISHED"]
    print(f"\n{console_table(summary)}\n")
    if failed:
        print(f"not finished: {', '.join(failed)} (their logs are in {out / 'logs'})")
    print(f"Demo finished in {(time.time() - start) / 60:.1f} min.")
    print(f"  report:       {path}")
    print(f"  MLflow runs:  {tracking.ui_command(uri)}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
