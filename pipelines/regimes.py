"""Train training regimes as real bundle runs and compare them: ``python -m pipelines.regimes --out DIR``.

Each regime runs through its MONAI bundle (``python -m monai.bundle run --config_file
"['bundles/<bundle>/configs/train.json', 'DIR/configs/time_budget.json']" ...``) in its own process, within a wall-clock budget; the
scores are then read back from MLflow into one table (Markdown and CSV), in the order of the
papers' Table 1::

    python -m pipelines.regimes --out regimes_out --cases 24 --size 64 --minutes-per-regime 5
    python -m pipelines.regimes --out regimes_out --prepared prepared/acdc-lv --regimes individual,full

Library use (the demo and ``pipelines.reproduce`` reuse it)::

    from pipelines.regimes import run_regimes
    table = run_regimes("prepared/acdc-lv", ["partial", "individual", "full"], out_dir="runs", minutes_per_regime=2,
                        parallel=2)   # two bundle processes at once, one torch thread each

``parallel=N`` (``--parallel N``) runs up to N bundle processes at once
(:func:`pipelines.runner.run_many`); on a CPU give each one torch thread and N = the number of
cores. Every run dies with the process that started it (Linux ``PR_SET_PDEATHSIG``), so a killed
pipeline leaves no training behind.

The wall-clock budget: the bundle's own ``train.json`` plus a small overlay config (written to
``DIR/configs/time_budget.json``, :data:`pipelines.runner.TIME_BUDGET_CONFIG`) that appends one
handler, :class:`wss_monai.engine.time_budget.TimeBudget`, to the trainer's handler list. It
measures each epoch and ends training at the end of the last epoch that fits before the deadline,
so every regime gets the same wall time, start-up included; the number of epochs each regime
reached is in the table. ``--epochs`` caps the epochs as well.

This module holds the job and its command line; the pieces are modules of their own: the child
processes (:mod:`pipelines.runner`), the table (:mod:`pipelines.reporting.results`) and the phantom it
trains on when no ``--prepared`` dataset is given (:mod:`pipelines.phantom_data`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.folders import output_problem
from pipelines.phantom_data import DEFAULT_FOV_MM, prepare_phantom
from pipelines.reporting.results import COLUMNS_LEGEND, order_regimes, read_results, table_fingerprints, to_markdown
from pipelines.runner import bundle_config, describe_result, run_many

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = [
    "DEFAULT_REGIMES",
    "CPU_LEARNING_RATE",
    "run_regimes",
    "main",
]

DEFAULT_REGIMES = ("partial", "tags", "common", "individual", "volume3d", "full", "full_3", "hybrid_3")
"""The regimes of the papers' Tables 1 and 2 that run in minutes on a CPU."""

CPU_LEARNING_RATE = 1e-3
"""Adam learning rate of the short CPU runs (batch 8): the papers' 5e-4 is for batch 1 and 200 epochs.

Measured on the 48-patient ACDC-layout phantom at 48 x 48, ``individual``, 2.5 CPU-minutes, best
validation 3D Dice: 0.826 with 2e-3, 0.846 with 1e-3; at 64 x 64 in 5 minutes (24 patients,
lambda 1e-2): 0.678 with 5e-4, 0.782 with 2e-3, 0.690 with 5e-3. A cosine decay to the deadline
did not help (0.811 with 2e-3)."""


# --------------------------------------------------------------------------------------------
# the whole job


def run_regimes(
    prepared_dir: str | os.PathLike,
    regimes: Sequence[str] = DEFAULT_REGIMES,
    *,
    out_dir: str | os.PathLike,
    minutes_per_regime: float | None = 5.0,
    epochs: int | None = None,
    tracking_uri: str | None = None,
    batch_size: int = 8,
    augment: bool = False,
    seed: int = 0,
    learning_rate: float | None = CPU_LEARNING_RATE,
    threads: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    tag: str | None = None,
    progress: Callable[[str], None] | None = print,
    parallel: int = 1,
    experiment: str | None = None,
    tags: Mapping[str, Any] | None = None,
    deadline: float | None = None,
    min_seconds: float = 20.0,
) -> "pandas.DataFrame":  # noqa: F821
    """Train each regime on a prepared dataset through its bundle and return the comparison table.

    Every regime is a real ``python -m monai.bundle run`` of the bundle that runs it
    (``wss_segmentation``, see :func:`bundle_config`), each in
    its own process, up to ``parallel`` at a time; the results are read back from MLflow.

    Args:
        prepared_dir: a dataset prepared by ``python -m data_prep`` (e.g. :func:`prepare_phantom`).
        regimes: regime names (:mod:`wss_monai.regimes`); started in the order given, reported in
            Table 1 order (:func:`order_regimes`).
        out_dir: where the runs' folders (``runs/<run name>``), logs and the overlay config go.
        minutes_per_regime: wall-clock budget of each run, start-up included (None or 0: no
            budget; then ``epochs`` is required).
        epochs: epoch cap (default: as many as fit in the budget).
        tracking_uri: MLflow store (default: ``sqlite:///<out_dir>/mlruns.db``).
        batch_size, augment, seed: the bundles' keys of the same names.
        learning_rate: the bundles' ``learning_rate`` (default :data:`CPU_LEARNING_RATE`; None: the
            bundle's own, the papers' 5e-4).
        threads: torch threads of each run (``OMP_NUM_THREADS``); None leaves torch's default,
            except with ``parallel`` > 1, where it is 1 (see :func:`run_many`).
        overrides: further bundle keys (``{"val_interval": 2, "learning_rate": 1e-3}``).
        tag: suffix of the run names (``<regime>-s<seed>-<tag>``; default: the start time).
        progress: called with one line per regime when it starts and ends (None: quiet).
        parallel: bundle processes at once (one per core on a CPU).
        experiment: MLflow experiment (default: the dataset's name, the bundles' default).
        tags: MLflow tags set on every run (the demo marks its runs with them).
        deadline: a Unix time by which all runs should be done, instead of
            ``minutes_per_regime``: each run's budget, when it starts, is the time left split
            evenly over the rounds of ``parallel`` runs left (at least ``min_seconds``), so a
            round that overran shortens the next ones instead of the whole job running late.
        min_seconds: the least budget a run gets with ``deadline``.

    Returns:
        A pandas DataFrame, one row per regime (columns: :data:`pipelines.reporting.results.COLUMNS`, then ``run_name``,
        ``run_id`` and ``log``); the same table goes to ``out_dir/regimes.csv``.
    """
    if not minutes_per_regime and not epochs and deadline is None:
        raise ValueError("give minutes_per_regime, deadline or epochs")
    from wss_monai.regimes import get_regime

    for name in regimes:
        get_regime(name)  # unknown names fail here, before anything runs
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or f"sqlite:///{out / 'mlruns.db'}"
    tag = tag or time.strftime("%Y%m%d-%H%M%S")
    def share_of_deadline(unfinished: int) -> float:
        return max(float(min_seconds), (float(deadline) - time.time()) / math.ceil(unfinished / max(1, parallel)))

    seconds: Any = 60.0 * float(minutes_per_regime) if minutes_per_regime else None
    if deadline is not None:
        seconds = share_of_deadline
    if threads is None and parallel > 1:
        threads = 1
    keys = {"batch_size": batch_size, "augment": bool(augment), "seed": seed, **dict(overrides or {})}
    if learning_rate is not None:
        keys.setdefault("learning_rate", float(learning_rate))
    jobs = [dict(prepared_dir=prepared_dir, regime=regime, out_dir=out, tracking_uri=uri, run_name=f"{regime}-s{seed}-{tag}",
                 seconds=seconds, epochs=epochs, overrides=keys, threads=threads, experiment=experiment,
                 tags={**dict(tags or {}), "wss.row": regime} if tags else None)
            for regime in regimes]
    n = len(jobs)

    def started(i: int, job: Mapping[str, Any]) -> None:
        if progress:
            budget = f"{job['seconds']:.0f} s" if job["seconds"] else f"{epochs} epochs"
            progress(f"[{i + 1}/{n}] {job['regime']}: training ({bundle_config(job['regime']).parent.parent.name}, {budget}) ...")

    def done(i: int, result: dict[str, Any]) -> None:
        if progress:
            progress(f"[{i + 1}/{n}] {result['regime']}: {describe_result(result)}")

    results = run_many(jobs, parallel=parallel, on_start=started, on_done=done)
    order = order_regimes([r["regime"] for r in results])
    results.sort(key=lambda r: order.index(r["regime"]))
    frame = read_results(results, uri)
    frame.to_csv(out / "regimes.csv", index=False)
    return frame


def _settings_line(args: argparse.Namespace, prepared: Path) -> str:
    data = json.loads((prepared / "dataset.json").read_text())
    counts = {s: len(data.get(s, [])) for s in ("training", "validation")}
    patients = {s: len({e["patient"] for e in data.get(s, [])}) for s in ("training", "validation")}
    try:
        options = json.loads((prepared / "prep.json").read_text())["options"]
        size = " x ".join(str(s) for s in options["size"]) if isinstance(options["size"], list) else f"{options['size']} x {options['size']}"
        size += f" ({options.get('resize', 'stretch')})"
    except (OSError, KeyError, ValueError, TypeError):
        size = "?"
    budget = f"{args.minutes_per_regime:g} min per regime" if args.minutes_per_regime else "no time budget"
    cap = f", at most {args.epochs} epochs" if args.epochs else ""
    return (f"Dataset {prepared} ({data.get('name')}): {patients['training']} training patients "
            f"({counts['training']} slices), {patients['validation']} validation patients ({counts['validation']} slices), "
            f"slices {size}; ENet, batch {args.batch_size}, learning rate {args.learning_rate:g}, augment {args.augment}, seed {args.seed}, {budget}{cap}, "
            f"torch threads {args.threads or (1 if args.parallel > 1 else 'default')}, {args.parallel} run(s) at once.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.regimes",
        description="Train training regimes through their MONAI bundles on a prepared dataset (by default a "
        "generated ACDC-layout phantom), each within a wall-clock budget, and compare them: a Markdown table "
        "(DIR/regimes.md) and a CSV (DIR/regimes.csv) read back from MLflow.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (phantom, runs, logs, MLflow store, tables)")
    parser.add_argument("--regimes", default=",".join(DEFAULT_REGIMES), help=f"comma-separated regimes (default {','.join(DEFAULT_REGIMES)})")
    parser.add_argument("--prepared", type=Path, default=None, help="use this prepared dataset instead of generating a phantom")
    parser.add_argument("--minutes-per-regime", type=float, default=5.0, help="wall-clock budget per regime, start-up included (default 5; 0: none)")
    parser.add_argument("--epochs", type=int, default=None, help="epoch cap (default: as many as fit in the budget)")
    parser.add_argument("--cases", type=int, default=48, help="phantom patients (default 48)")
    parser.add_argument("--size", type=int, default=48, help="prepared slice size (default 48)")
    parser.add_argument("--inplane", type=int, default=None, help="phantom raw in-plane size (default: real ACDC sizes)")
    parser.add_argument("--fov-mm", type=float, default=DEFAULT_FOV_MM,
                        help=f"field of view kept around the heart, in mm (default {DEFAULT_FOV_MM:g}; 0: the whole image, stretched)")
    parser.add_argument("--prepare-args", default="", help="extra 'python -m data_prep acdc' options, space-separated")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantom, the split and the runs (default 0)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=CPU_LEARNING_RATE,
                        help=f"Adam learning rate (default {CPU_LEARNING_RATE:g}, for batch 8 and minutes of training; the papers' 5e-4 is for batch 1)")
    parser.add_argument("--augment", action="store_true", help="the bundles' flips/rotation/zoom augmentation")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's own; 1 with --parallel > 1)")
    parser.add_argument("--parallel", type=int, default=1,
                        help="bundle runs at once (default 1; on a CPU use the number of cores, each run then gets 1 torch thread)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite:///DIR/mlruns.db)")
    parser.add_argument("--weak", default=None,
                        help="weak-label strategy of every run, e.g. 'user' for your own annotations (default: each regime's)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: the prepared dataset's name)")
    args = parser.parse_args(argv)
    regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    if not regimes:
        parser.error("--regimes is empty")
    if not args.minutes_per_regime and not args.epochs:
        parser.error("give --minutes-per-regime or --epochs")
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    from wss_monai.regimes import UnknownRegimeError, get_regime

    for name in regimes:
        try:
            get_regime(name)
        except UnknownRegimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    out = args.out.resolve()
    problem = output_problem(out, inputs={"--prepared": args.prepared} if args.prepared is not None else None)
    if problem is None and args.tracking_uri is not None:
        from wss_monai import tracking

        try:
            tracking.resolve_tracking_uri(args.tracking_uri, out)
        except ValueError as err:
            problem = f"--tracking-uri: {err}"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.prepared is not None:
        prepared = args.prepared.resolve()
        if not (prepared / "dataset.json").is_file():
            print(f"error: {prepared}: not a prepared dataset (no dataset.json)", file=sys.stderr)
            return 2
    else:
        prepared = prepare_phantom(out, cases=args.cases, size=args.size, seed=args.seed, inplane=args.inplane,
                                   fov_mm=args.fov_mm or None, prepare_args=args.prepare_args.split())
    start = time.perf_counter()
    frame = run_regimes(prepared, regimes, out_dir=out, minutes_per_regime=args.minutes_per_regime or None,
                        epochs=args.epochs, tracking_uri=args.tracking_uri, batch_size=args.batch_size,
                        augment=args.augment, seed=args.seed, learning_rate=args.learning_rate, threads=args.threads,
                        parallel=args.parallel, experiment=args.experiment,
                        overrides={"weak": args.weak} if args.weak else None)
    known = [fp for fp in table_fingerprints(frame) if fp]
    fingerprint = f" Prepared dataset fingerprint: {', '.join(f'`{fp}`' for fp in known)}." if known else ""
    text = f"{_settings_line(args, prepared)}{fingerprint}\n\n{to_markdown(frame)}\n\n{COLUMNS_LEGEND}\n"
    (out / "regimes.md").write_text(text, encoding="utf-8")
    print(f"\n{text}\nTable in {out / 'regimes.md'} and {out / 'regimes.csv'}; {len(frame)} regimes in "
          f"{(time.perf_counter() - start) / 60:.1f} min.")
    return 0 if (frame["status"] == "FINISHED").all() else 1


if __name__ == "__main__":
    sys.exit(main())
