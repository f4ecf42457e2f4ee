"""Reproduce the papers' tables on a dataset: ``python -m pipelines.reproduce --dataset D --src RAW``.

The experiments of Kervadec et al. (MedIA 2019) as bundle runs tracked in MLflow, several seeds
each (planned by :mod:`pipelines.paper_tables`), then one report (:mod:`pipelines.report`) with mean and standard deviation over seeds and
the papers' numbers beside ours:

=====  =============================================================================================
table  rows (each a regime, trained by its bundle)
=====  =============================================================================================
1      ``partial``, ``lagrangian_tags``, ``tags``, ``lagrangian_common``, ``common``,
       ``lagrangian_individual``, ``individual``, ``volume3d``, ``full``: the direct losses and
       the Lagrangian proposals they beat
2      ``common`` (weak all), ``full_<n>`` and ``hybrid_<n>`` for n = 5, 10, 25 (``--hybrid-n``),
       ``full`` (full all)
3      ``partial``, ``tags``, ``common``, ``individual``, ``full``
4      ``individual`` and the fixed bounds ``bounds_<lo>_<hi>`` of the paper's bound ablation, as
       ``common`` on a copy of the dataset prepared with ``--common-bounds lo,hi`` (the paper's
       pixel values on 256 x 256 slices, scaled by the prepared slice area)
5      ``partial``, ``tags``, ``lagrangian_tags``, ``common``, ``lagrangian_common``, ``full``
       at batch 1 for at most :data:`TABLE5_EPOCHS` epochs: training ms per image
=====  =============================================================================================

The raw dataset is prepared once with ``python -m data_prep <dataset> --src RAW`` into
``OUT/prepared/<dataset>`` (an existing one is reused).

Resuming: each (table, row, seed) has a key, ``<dataset>/t<table>/<row>/s<seed>``, stored in
the MLflow tag ``wss.key`` of its run as soon as training starts. A second invocation with the
same ``--out`` skips the keys whose run FINISHED on the same prepared dataset (its fingerprint,
the runs' tag ``dataset_fingerprint``: a store shared with a reproduction of other preparation
options holds the same keys, and those runs are left alone), marks the interrupted ones (RUNNING, FAILED,
KILLED: tag ``wss.interrupted``; a RUNNING one is set to KILLED) and starts them again under a
fresh run name (``...-a2``, ``-a3``). Runs die with this process (Linux ``PR_SET_PDEATHSIG``),
so a killed reproduction leaves no training behind that could finish later, and a lock on
``OUT`` keeps two reproductions from sharing it.

Example::

    python -m pipelines.reproduce --dataset acdc --src /data/ACDC --out repro_acdc --tables 1,2 --seeds 3 --epochs 200
    python -m pipelines.reproduce --dataset vertebral --src /data/vertebral --tables 3,4 --minutes-per-run 10 --parallel 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.folders import output_problem
from pipelines.paper_tables import (  # the plan's names stay this command's public names
    HYBRID_N,
    TABLE1_ROWS,
    TABLE3_ROWS,
    TABLE5_EPOCHS,
    TABLE5_ROWS,
    TABLES,
    TAG_INTERRUPTED,
    TAG_KEY,
    PlannedRun,
    bounds_pairs,
    plan_runs,
    variant_bounds,
)

__all__ = ["TABLES", "TABLE1_ROWS", "TABLE3_ROWS", "TABLE5_ROWS", "TABLE5_EPOCHS", "PlannedRun", "plan_runs", "bounds_pairs",
           "variant_bounds", "reconcile", "main"]

DATASETS = ("acdc", "promise12", "vertebral", "custom")


# --------------------------------------------------------------------------------------------
# what MLflow already holds


def _fingerprint(folder: Path) -> str | None:
    """The fingerprint of the prepared dataset in ``folder``: :class:`wss_monai.data.prepared.PreparedDataset`'s.

    The same value the bundle runs log as the tag ``dataset_fingerprint``, so a run can be told to
    be of this preparation and not of another one with the same name (the same data prepared at
    another size). Computed there, never here, so that both sides always agree. None when
    ``folder`` holds no prepared dataset yet: runs are then matched by their dataset folder alone.
    """
    from wss_monai.data.prepared import DatasetError, PreparedDataset

    try:
        return PreparedDataset(folder).fingerprint
    except DatasetError:
        return None


def same_preparation(run, fingerprint: str | None, folder: Path) -> bool:
    """Whether an MLflow run trained on the prepared dataset ``folder`` whose fingerprint is ``fingerprint``.

    Keys name a dataset (``acdc/t1/individual/s0``), not a preparation of it: a store shared by
    two reproductions (one at 256 pixels, one at 64) holds runs with the same keys, and a run of
    the other one must count neither as done nor as ours to restart. By the run's fingerprint
    tag when both are known; else (runs logged before fingerprints) by the dataset folder the run
    logged as a param; a run that logged neither (killed as it was created) is taken by its key.
    """
    from pipelines.store import FINGERPRINT_TAG

    tagged = run.data.tags.get(FINGERPRINT_TAG) or run.data.params.get(FINGERPRINT_TAG) or ""
    if tagged and fingerprint:
        return tagged == fingerprint
    where = run.data.params.get("resolved.dataset_dir") or run.data.params.get("dataset_dir")
    if where:
        return Path(where).resolve() == Path(folder).resolve()
    return not tagged


@dataclass
class Reconciled:
    """The plan against MLflow: ``todo`` (planned run, run name) to start, ``done`` keys, ``marked`` interrupted
    runs, ``foreign`` runs of other preparations that carry one of the plan's keys (left alone), and
    ``fingerprints`` (prepared folder -> its fingerprint, None when unknown)."""

    todo: list[tuple[PlannedRun, str]]
    done: dict[str, str]
    marked: list[str]
    foreign: list[str] = field(default_factory=list)
    fingerprints: dict[Path, str | None] = field(default_factory=dict)

    def belongs(self, run, plan: Sequence[PlannedRun]) -> bool:
        """Whether ``run`` is one of ``plan``'s keys on the plan's own preparation (for the report)."""
        item = next((p for p in plan if p.key == run.data.tags.get(TAG_KEY)), None)
        return item is not None and same_preparation(run, self.fingerprints.get(item.prepared), item.prepared)


def reconcile(plan: Sequence[PlannedRun], tracking_uri: str, experiment: str, out_dir: Path) -> Reconciled:
    """Skip the keys already FINISHED; mark the interrupted runs and give their keys a fresh run name.

    A run belongs to a key by its tag ``wss.key``, or, for a run killed in the instant between
    its creation and its tags, by its run name (``<base name>`` or ``<base name>-a<k>``); and
    only if it trained on the key's own prepared dataset (:func:`same_preparation`): a run of the
    same key on another preparation is neither done nor restarted, only listed in ``foreign``.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = []
    if exp is not None:
        token = None
        while True:
            page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                break
    fingerprints: dict[Path, str | None] = {}
    for item in plan:
        if item.prepared not in fingerprints:
            fingerprints[item.prepared] = _fingerprint(item.prepared)
    items = {item.key: item for item in plan}
    foreign: list[str] = []
    by_name = {item.base_name: item.key for item in plan}
    taken = {r.info.run_name for r in runs}
    by_key: dict[str, list] = {item.key: [] for item in plan}
    for run in runs:
        key = run.data.tags.get(TAG_KEY)
        if key is None:
            retry = re.match(r"^(.*)-a\d+$", run.info.run_name or "")
            key = by_name.get(run.info.run_name) or (by_name.get(retry.group(1)) if retry else None)
        if key in by_key:
            item = items[key]
            if same_preparation(run, fingerprints[item.prepared], item.prepared):
                by_key[key].append(run)
            else:
                foreign.append(run.info.run_name)
    todo, done, marked = [], {}, []
    for item in plan:
        found = by_key[item.key]
        finished = [r for r in found if r.info.status == "FINISHED"]
        if finished:
            done[item.key] = finished[0].info.run_id
            continue
        for run in found:
            if TAG_INTERRUPTED in run.data.tags:
                continue
            if run.info.status == "RUNNING":
                client.set_terminated(run.info.run_id, status="KILLED")
            client.set_tag(run.info.run_id, TAG_INTERRUPTED, f"restarted by pipelines.reproduce ({run.info.status})")
            if TAG_KEY not in run.data.tags:
                client.set_tag(run.info.run_id, TAG_KEY, item.key)
            marked.append(run.info.run_name)
        attempt = len(found) + 1
        name = item.base_name if attempt == 1 else f"{item.base_name}-a{attempt}"
        while name in taken or (out_dir / "runs" / name).exists():
            attempt += 1
            name = f"{item.base_name}-a{attempt}"
        taken.add(name)
        todo.append((item, name))
    return Reconciled(todo=todo, done=done, marked=marked, foreign=foreign, fingerprints=fingerprints)


# --------------------------------------------------------------------------------------------
# preparation


def prepare(dataset: str, src: Path, target: Path, prepare_args: Sequence[str], say) -> int:
    """``python -m data_prep <dataset> --src SRC --out TARGET ...`` unless TARGET is already prepared; its exit code."""
    from data_prep.cli import main as data_prep_main

    if (target / "dataset.json").is_file():
        say(f"reusing the prepared dataset {target}")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    argv = [dataset, "--src", str(src), "--out", str(target), *prepare_args]
    say(f"preparing: python -m data_prep {' '.join(shlex.quote(a) for a in argv)}")
    return int(data_prep_main(argv) or 0)


def _slice_area_and_targets(prepared: Path) -> tuple[int, int]:
    data = json.loads((prepared / "dataset.json").read_text())
    entry = next(iter(data.get("training") or data.get("validation") or []), None)
    size = None
    with contextlib.suppress(OSError, KeyError, ValueError, TypeError):
        size = json.loads((prepared / "prep.json").read_text())["options"]["size"]
    if isinstance(size, list) and len(size) == 2:
        area = int(size[0]) * int(size[1])
    elif size is not None:
        area = int(size) ** 2
    else:
        import nibabel as nib

        shape = nib.load(str(prepared / entry["image"])).shape
        area = int(shape[0]) * int(shape[1])
    return area, max(1, len(data.get("labels") or {}) - 1)


def _training_patients(prepared: Path) -> int:
    data = json.loads((prepared / "dataset.json").read_text())
    return len({e["patient"] for e in data.get("training", [])})


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[bool]:
    """An exclusive lock on ``OUT/.reproduce.lock`` (released by the kernel if we are killed)."""
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / ".reproduce.lock", "w")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        handle.close()


# --------------------------------------------------------------------------------------------
# command line


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``python -m pipelines.reproduce: error: ...``) and exit code 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m pipelines.reproduce",
        description="Reproduce the constrained-CNN papers' tables on a dataset: prepare it, train every row of the chosen "
        "tables for several seeds as MONAI bundle runs tracked in MLflow, and write a report with mean and std over seeds "
        "beside the papers' numbers. Rerun the same command to resume: finished runs are skipped.",
        epilog="Tables: 1 direct losses vs Lagrangian proposals; 2 hybrid full + weak; 3 partial/tags/common/individual/full; "
        "4 bound ablation (fixed bounds); 5 training time per image (batch 1).",
    )
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="which data_prep converter reads --src")
    parser.add_argument("--src", type=Path, required=True, help="the raw dataset (as data_prep expects it)")
    parser.add_argument("--out", type=Path, default=None, help="output folder: prepared data, runs, MLflow store, report "
                        "(default: ./reproduce_<dataset>)")
    parser.add_argument("--tables", default="1,2,3,4,5", help="comma-separated tables (default 1,2,3,4,5)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per row: 0 .. N-1 (default 3)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the bundles' 200, the papers')")
    parser.add_argument("--minutes-per-run", type=float, default=None, help="wall-clock budget per run, start-up included (default: none)")
    parser.add_argument("--parallel", type=int, default=1, help="bundle runs at once (default 1; on a CPU, the number of cores)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's own; 1 with --parallel > 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (default: the bundles' 8; Table 5 uses 1)")
    parser.add_argument("--hybrid-n", default=",".join(str(n) for n in HYBRID_N),
                        help="Table 2's numbers of fully annotated patients (default 5,10,25)")
    parser.add_argument("--regimes", default=None, help="run only these rows of the chosen tables (comma-separated row or regime names)")
    parser.add_argument("--prepare-args", default="", help="extra 'python -m data_prep DATASET' options, e.g. --prepare-args='--size 128' "
                        "(for custom: --images, --labels, --label-values, --targets)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: the prepared dataset's name, e.g. acdc-lv)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store or server (default: sqlite:///OUT/mlruns.db)")
    parser.add_argument("--no-overlays", action="store_true", help="leave the qualitative figure out of the report")
    return parser


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected comma-separated whole numbers") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what} {text!r}: expected numbers of at least 1")
    return values


def _check(args: argparse.Namespace) -> tuple[list[str], list[int], list[str] | None]:
    """The tables, Table 2's n and the row filter, or ValueError with one line."""
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = [t for t in tables if t not in TABLES]
    if unknown or not tables:
        raise ValueError(f"--tables {args.tables!r}: unknown table {unknown[0]!r} (choose from {','.join(TABLES)})" if unknown
                         else "--tables is empty")
    if args.seeds < 1:
        raise ValueError(f"--seeds {args.seeds}: at least 1")
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs {args.epochs}: at least 1")
    if args.minutes_per_run is not None and args.minutes_per_run <= 0:
        raise ValueError(f"--minutes-per-run {args.minutes_per_run:g}: must be positive")
    if args.parallel < 1 or (args.threads is not None and args.threads < 1) or (args.batch_size is not None and args.batch_size < 1):
        raise ValueError("--parallel, --threads and --batch-size must be at least 1")
    hybrid = _ints(args.hybrid_n, "--hybrid-n")
    only = None
    if args.regimes:
        from wss_monai.regimes import UnknownRegimeError, get_regime

        only = [r.strip() for r in args.regimes.split(",") if r.strip()]
        for name in only:
            if name.startswith("bounds_"):
                continue
            try:
                get_regime(name)
            except UnknownRegimeError as err:
                raise ValueError(str(err)) from None
    if not args.src.is_dir():
        raise ValueError(f"--src {args.src}: no such folder")
    return tables, hybrid, only


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        tables, hybrid_n, only = _check(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = (args.out or Path(f"reproduce_{args.dataset}")).resolve()
    problem = output_problem(out, inputs={"--src": args.src})
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    with _lock(out) as locked:
        if not locked:
            print(f"error: {out}: another pipelines.reproduce is running there", file=sys.stderr)
            return 2
        return _run(args, out, tables, hybrid_n, only)


def _run(args: argparse.Namespace, out: Path, tables: list[str], hybrid_n: list[int], only: list[str] | None) -> int:
    from tqdm.auto import tqdm

    from pipelines import report
    from pipelines.reporting.results import console_table
    from pipelines.runner import describe_result, run_many
    from pipelines.store import collect, init_store
    from wss_monai import tracking

    start = time.time()
    try:
        uri = tracking.resolve_tracking_uri(args.tracking_uri or (out / tracking.DEFAULT_DB_NAME))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    say = lambda line: print(line, flush=True)  # noqa: E731
    prepare_args = shlex.split(args.prepare_args)
    prepared = out / "prepared" / args.dataset
    code = prepare(args.dataset, args.src.resolve(), prepared, prepare_args, say)
    if code:
        return code
    variants: dict[str, tuple[Path, tuple[float, float]]] = {}
    if "4" in tables:
        area, targets = _slice_area_and_targets(prepared)
        for row, pair in bounds_pairs():
            if only and row not in only and "common" not in only:
                continue
            lo, hi = variant_bounds(pair, area)
            folder = out / "prepared" / f"{args.dataset}-{row}"
            extra = ["--common-bounds", *[f"{lo:g},{hi:g}"] * targets]
            code = prepare(args.dataset, args.src.resolve(), folder, [*prepare_args, *extra], say)
            if code:
                return code
            variants[row] = (folder, (lo, hi))
    experiment = args.experiment or tracking.experiment_name(json.loads((prepared / "dataset.json").read_text()).get("name") or args.dataset)
    plan, notes = plan_runs(tables, dataset=args.dataset, seeds=list(range(args.seeds)), prepared=prepared, variants=variants,
                            hybrid_n=hybrid_n, training_patients=_training_patients(prepared), only=only, epochs=args.epochs)
    for note in notes:
        say(f"note: {note}")
    if not plan:
        print("error: nothing to run (check --tables and --regimes)", file=sys.stderr)
        return 2
    init_store(uri)
    state = reconcile(plan, uri, experiment, out)
    say(f"{len(plan)} runs planned ({len(tables)} table(s) x rows x {args.seeds} seed(s)) in experiment {experiment!r} of {uri}: "
        f"{len(state.done)} already finished, {len(state.todo)} to run"
        + (f"; {len(state.marked)} interrupted run(s) marked and restarted: {', '.join(state.marked)}" if state.marked else "")
        + (f"; {len(state.foreign)} run(s) with the same keys trained on another preparation of the data, left alone"
           if state.foreign else ""))
    threads = args.threads or (1 if args.parallel > 1 else None)
    seconds = 60.0 * args.minutes_per_run if args.minutes_per_run else None
    jobs = []
    for item, name in state.todo:
        overrides = {"seed": item.seed, **({"batch_size": args.batch_size} if args.batch_size else {}), **dict(item.overrides)}
        jobs.append(dict(prepared_dir=item.prepared, regime=item.regime, out_dir=out, tracking_uri=uri, run_name=name,
                         seconds=seconds, epochs=item.epochs, overrides=overrides, threads=threads, tags=item.tags(),
                         experiment=experiment))
    bar = tqdm(total=len(plan), initial=len(state.done), desc="runs", unit="run", disable=None, dynamic_ncols=True)
    write = bar.write if not bar.disable else say
    outcomes: dict[str, int] = {}

    def started(i: int, job: Mapping[str, Any]) -> None:
        bar.set_postfix_str(job["run_name"], refresh=True)

    def done(i: int, result: dict[str, Any]) -> None:
        outcomes[result["run_name"]] = result["returncode"]
        bar.update(1)
        write(f"[{len(state.done) + len(outcomes)}/{len(plan)}] {result['run_name']}: {describe_result(result)}")

    try:
        run_many(jobs, parallel=args.parallel, on_start=started, on_done=done)
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted: rerun the same command to resume ({len(outcomes)} of {len(jobs)} runs of this session ended)",
              file=sys.stderr)
        return 130
    finally:
        bar.close()
    keys = {item.key for item in plan}
    runs = collect(experiment, uri, where=lambda run: state.belongs(run, plan))
    finished = set(runs.frame.loc[runs.frame["status"] == "FINISHED", "key"])
    budget = (f"{args.minutes_per_run:g} min per run" if args.minutes_per_run else "no time budget") + (
        f", at most {args.epochs} epochs" if args.epochs else ", the bundles' default epochs")
    intro = [
        f"`python -m pipelines.reproduce --dataset {args.dataset} --src {args.src}`: tables {', '.join(tables)}, seeds 0-{args.seeds - 1}, "
        f"{budget}, {args.parallel} run(s) at once; prepared data {prepared}"
        + (f" (extra data_prep options: `{args.prepare_args}`)" if args.prepare_args else "") + ".",
        f"{len(finished)} of {len(plan)} planned runs finished." + (" " + " ".join(f"{n}." for n in notes) if notes else ""),
    ]
    path = report.write_report(runs, out / "report", title=f"Reproduction of the papers' tables on {args.dataset}",
                               intro=intro, overlays=not args.no_overlays, log=lambda line: say(f"note: {line}"))
    summary = report.summarize(runs.frame)
    if len(summary):
        say("\n" + console_table(summary) + "\n")
    missing = sorted(keys - finished)
    say(f"Reproduction {'complete' if not missing else 'incomplete'}: {len(finished)}/{len(plan)} runs finished in "
        f"{(time.time() - start) / 60:.1f} min" + (f"; not finished: {', '.join(missing)} (rerun to retry)" if missing else "") + ".")
    say(f"  report:       {path}")
    say(f"  MLflow runs:  {tracking.ui_command(uri)}")
    return 0 if not missing else 1


if __name__ == "__main__":
    sys.exit(main())
