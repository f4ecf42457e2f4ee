"""Report any MLflow experiment of wss-monai runs: ``python -m pipelines.report --experiment NAME``.

Reads every run of an experiment (made by the demo, by ``pipelines.reproduce``, by
``pipelines.regimes`` or by hand with ``python -m monai.bundle run``) into a pandas table, one
row per run, and writes to ``--out``:

- ``runs.csv``: one row per run (scores of the best epoch by validation 3D Dice, epochs, timing,
  status, output folder); ``summary.csv``: one row per (table, row) with the mean and standard
  deviation over seeds of the FINISHED runs and the papers' value beside ours;
- ``report.md`` with the summary tables and the figures ``dice.png`` (our Dice per regime with the
  paper's beside it), ``curves.png`` (validation 3D Dice per epoch), ``overlays.png`` (the same
  validation slices segmented by each regime: image, ground truth, predictions) and
  ``time.png`` (training time per image).

Whatever a run lacks is left blank: a hand-made run has no timing metrics (those come from the
pipelines' :class:`~pipelines.regimes.TimeBudget` handler), a run made on another machine has no
local output folder (then it is left out of the overlays), an interrupted run has no best
epoch. The demo and ``pipelines.reproduce`` write their reports with this module
(:func:`collect`, :func:`write_report`), so all reports read alike.

Rows: a run's row is its MLflow tag ``wss.row`` (set by the pipelines: the regime, or
``bounds_<lo>_<hi>`` for Table 4's fixed bounds), else its ``regime`` tag; its table is the tag
``wss.table`` (blank for runs outside the papers' tables). The papers' numbers come from
``pipelines/paper_numbers.json`` (:mod:`pipelines.reporting.paper`).

Example::

    python -m pipelines.report --experiment acdc-lv --tracking-uri sqlite:///$PWD/mlruns.db --out report_acdc
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.folders import output_problem

__all__ = [
    "RUN_COLUMNS",
    "Runs",
    "collect",
    "summarize",
    "summary_markdown",
    "runs_markdown",
    "write_report",
    "main",
]

HISTORY_KEYS = ("val_dice_3d_mean", "val_dice_2d_one_mean", "val_dice_2d_nan_mean", "val_hd95_mean",
                "time_train_s", "time_train_images", "train_loss")
"""Per-epoch metrics a report reads (the bundles' and :class:`~pipelines.regimes.TimeBudget`'s)."""

RUN_COLUMNS = ["run_id", "run_name", "experiment", "status", "table", "row", "regime", "seed", "key", "bundle", "dataset",
               "epochs", "best_epoch", "dice_3d", "dice_2d_one", "dice_2d_nan", "hd95_mm", "dice_3d_last",
               "train_s", "train_images", "ms_per_image", "run_s", "start_time", "output_dir", "checkpoint", "dataset_dir"]
"""Columns of ``runs.csv``, one row per MLflow run."""

TABLE_ORDER = ("1", "2", "3", "4", "5")

LEGEND = (
    "Scores are those of each run's best epoch by validation 3D Dice (the checkpoint the bundles keep), as mean "
    "± standard deviation over the seeds whose run FINISHED; 'paper' is the published Dice of the same setting "
    "(pipelines/paper_numbers.json), on the real dataset and after the papers' full training, so a phantom or a "
    "short run is expected to score differently. 2D Dice: mean over validation slices with an empty-vs-empty "
    "slice scored 1, or left out. HD95 in mm (3D, per volume). 'ms/image': training time per training image "
    "(loading, forward, loss, backward, step; validation excluded), blank for runs without the pipelines' timing "
    "metrics."
)


# --------------------------------------------------------------------------------------------
# reading runs


@dataclass
class Runs:
    """The runs of a report: ``frame`` (one row per run, :data:`RUN_COLUMNS`) and ``curves``
    (run id -> {epoch: validation 3D Dice})."""

    frame: Any
    curves: dict[str, dict[int, float]] = field(default_factory=dict)
    tracking_uri: str = ""
    experiment: str = ""


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _history(client, run, key: str) -> dict[int, float]:
    if key not in run.data.metrics:
        return {}
    return {int(m.step): float(m.value) for m in client.get_metric_history(run.info.run_id, key)}


def run_record(client, run, experiment: str = "") -> tuple[dict[str, Any], dict[int, float]]:
    """One MLflow run as a report row (:data:`RUN_COLUMNS`) and its validation 3D Dice per epoch.

    Scores are those of the best epoch by ``val_dice_3d_mean``; the timing sums
    ``time_train_s`` and ``time_train_images`` over epochs. Missing metrics give NaN, a missing
    or foreign output folder gives an empty ``output_dir``.
    """
    import pandas as pd

    tags = run.data.tags
    h = {key: _history(client, run, key) for key in HISTORY_KEYS}
    dice = {e: v for e, v in h["val_dice_3d_mean"].items() if not math.isnan(v)}
    best_epoch = max(dice, key=lambda e: (dice[e], -e)) if dice else None
    steps = set(h["val_dice_3d_mean"]) | set(h["train_loss"]) | set(h["time_train_s"])
    output_dir = tags.get("output_dir") or run.data.params.get("resolved.output_dir") or ""
    folder = Path(output_dir) if output_dir else None
    checkpoint = folder / "models" / "model.pt" if folder is not None else None
    seed = tags.get("seed")
    train_s = sum(h["time_train_s"].values()) if h["time_train_s"] else math.nan
    images = sum(h["time_train_images"].values()) if h["time_train_images"] else math.nan
    start = run.info.start_time
    end = run.info.end_time
    record = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment": experiment,
        "status": run.info.status,
        "table": tags.get("wss.table", ""),
        "row": tags.get("wss.row") or tags.get("regime") or run.info.run_name,
        "regime": tags.get("regime", ""),
        "seed": int(seed) if seed not in (None, "") and str(seed).lstrip("-").isdigit() else None,
        "key": tags.get("wss.key", ""),
        "bundle": tags.get("bundle", ""),
        "dataset": tags.get("dataset", ""),
        "epochs": max(steps) if steps else 0,
        "best_epoch": best_epoch,
        "dice_3d": dice[best_epoch] if best_epoch is not None else math.nan,
        "dice_2d_one": h["val_dice_2d_one_mean"].get(best_epoch, math.nan),
        "dice_2d_nan": h["val_dice_2d_nan_mean"].get(best_epoch, math.nan),
        "hd95_mm": h["val_hd95_mean"].get(best_epoch, math.nan),
        "dice_3d_last": dice[max(dice)] if dice else math.nan,
        "train_s": train_s,
        "train_images": images,
        "ms_per_image": 1000.0 * train_s / images if images and not math.isnan(images) and images > 0 else math.nan,
        "run_s": (end - start) / 1000.0 if start and end else math.nan,
        "start_time": pd.to_datetime(start, unit="ms", utc=True) if start else pd.NaT,
        "output_dir": str(folder) if folder is not None and folder.is_dir() else "",
        "checkpoint": str(checkpoint) if checkpoint is not None and checkpoint.is_file() else "",
        "dataset_dir": run.data.params.get("resolved.dataset_dir") or run.data.params.get("dataset_dir") or "",
    }
    return record, dice


def collect(
    experiment: str | None = None,
    tracking_uri: str | None = None,
    *,
    run_ids: Sequence[str] | None = None,
    where: Callable[[Any], bool] | None = None,
) -> Runs:
    """Read runs from MLflow: every run of ``experiment``, or the runs ``run_ids`` (any experiment).

    Args:
        experiment: experiment name (ignored when ``run_ids`` is given).
        tracking_uri: the store (:func:`wss_monai.tracking.resolve_tracking_uri`; default: the
            working folder's ``mlruns.db``).
        run_ids: read these runs only, in this order.
        where: keep only the MLflow runs for which it returns True (e.g. the pipelines' keys).

    Raises:
        ValueError: the experiment does not exist (the message lists those that do).
    """
    import pandas as pd
    from mlflow import MlflowClient

    from wss_monai import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri)
    names: dict[str, str] = {}
    if run_ids is not None:
        found = [client.get_run(run_id) for run_id in run_ids]
    else:
        if not experiment:
            raise ValueError("give an experiment name or run ids")
        found = tracking.experiment_runs(experiment, uri, client=client)
        if found:
            names[found[0].info.experiment_id] = experiment
    rows, curves = [], {}
    for run in found:
        if where is not None and not where(run):
            continue
        exp_id = run.info.experiment_id
        if exp_id not in names:
            names[exp_id] = client.get_experiment(exp_id).name
        record, curve = run_record(client, run, names[exp_id])
        rows.append(record)
        curves[record["run_id"]] = curve
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return Runs(frame=frame, curves=curves, tracking_uri=uri, experiment=experiment or "")


# --------------------------------------------------------------------------------------------
# summary over seeds, with the papers' numbers


def _table_rank(table: str) -> tuple:
    return (TABLE_ORDER.index(table), "") if table in TABLE_ORDER else (len(TABLE_ORDER) + (0 if table else 1), table)


def ordered_rows(table: str, dataset: str | None, rows: Iterable[str]) -> list[str]:
    """Rows in the paper's order for ``table`` (when it has them), the others in Table 1 order."""
    from pipelines.regimes import order_regimes
    from pipelines.reporting import paper

    rows = list(dict.fromkeys(rows))
    if not table:  # rows outside the papers' tables: Table 1 order, then full_<n> / hybrid_<n> pairs
        return order_regimes(rows)
    paper_order = [e["row"] for e in paper.paper_rows(table, dataset)]
    known = [r for r in paper_order if r in rows]
    rest = order_regimes([r for r in rows if r not in known])
    return known + rest


def summarize(frame) -> Any:
    """One row per (table, row): seeds, mean and std of the FINISHED runs' scores, the paper's value.

    Columns: ``table``, ``row``, ``regime``, ``dataset``, ``seeds`` (FINISHED runs),
    ``unfinished`` (runs of that row not FINISHED), ``dice_3d_mean``, ``dice_3d_std``,
    ``dice_2d_one_mean``, ``dice_2d_nan_mean``, ``hd95_mean``, ``epochs_mean``,
    ``ms_per_image_mean``, ``ms_per_image_std``, ``paper``, ``paper_label``, ``paper_table``.
    """
    import pandas as pd

    from pipelines.reporting import paper

    columns = ["table", "row", "regime", "dataset", "seeds", "unfinished", "dice_3d_mean", "dice_3d_std", "dice_2d_one_mean",
               "dice_2d_nan_mean", "hd95_mean", "epochs_mean", "ms_per_image_mean", "ms_per_image_std",
               "paper", "paper_label", "paper_table"]
    if frame is None or not len(frame):
        return pd.DataFrame(columns=columns)
    out = []
    tables = sorted(frame["table"].fillna("").unique(), key=_table_rank)
    for table in tables:
        part = frame[frame["table"].fillna("") == table]
        datasets = [d for d in part["dataset"].fillna("").unique() if d]
        dataset = paper.dataset_key(datasets[0]) if datasets else None
        for row in ordered_rows(table, dataset, part["row"]):
            runs = part[part["row"] == row]
            done = runs[runs["status"] == "FINISHED"]
            entry = paper.lookup(dataset, row, table if table in paper.load()["tables"] else None)

            def stat(column: str, how: str) -> float:
                values = pd.to_numeric(done[column], errors="coerce").dropna()
                if not len(values):
                    return math.nan
                return float(values.mean()) if how == "mean" else (float(values.std(ddof=1)) if len(values) > 1 else math.nan)

            out.append({
                "table": table, "row": row, "regime": runs["regime"].iloc[0], "dataset": runs["dataset"].iloc[0],
                "seeds": int(len(done)), "unfinished": int(len(runs) - len(done)),
                "dice_3d_mean": stat("dice_3d", "mean"), "dice_3d_std": stat("dice_3d", "std"),
                "dice_2d_one_mean": stat("dice_2d_one", "mean"), "dice_2d_nan_mean": stat("dice_2d_nan", "mean"),
                "hd95_mean": stat("hd95_mm", "mean"), "epochs_mean": stat("epochs", "mean"),
                "ms_per_image_mean": stat("ms_per_image", "mean"), "ms_per_image_std": stat("ms_per_image", "std"),
                "paper": entry["value"] if entry else math.nan, "paper_label": entry["label"] if entry else "",
                "paper_table": entry["table"] if entry else "",
            })
    return pd.DataFrame(out, columns=columns)


def _num(value: Any, digits: int) -> str:
    if _nan(value):
        return ""
    return f"{float(value):.{digits}f}"


def _pm(mean: Any, std: Any, digits: int) -> str:
    if _nan(mean):
        return ""
    return f"{float(mean):.{digits}f}" + ("" if _nan(std) else f" ± {float(std):.{digits}f}")


def _paper_cell(row) -> str:
    if _nan(row["paper"]):
        return ""
    value = row["paper"]
    text = f"{value:.4f}" if float(value) < 10 else f"{value:g}"
    return text if row["paper_table"] in ("", row["table"]) else f"{text} (T{row['paper_table']})"


def _table_heading(table: str) -> str:
    from pipelines.reporting import paper

    if not table:
        return "Regimes"
    title = paper.table_title(table)
    return f"Table {table}" + (f" (paper: {title})" if title else "")


def summary_markdown(summary, table: str) -> str:
    """The Markdown table of one table's rows of :func:`summarize`."""
    part = summary[summary["table"] == table]
    if table == "5":
        partial = part[part["row"] == "partial"]
        ours0 = float(partial["ms_per_image_mean"].iloc[0]) if len(partial) else math.nan
        paper0 = float(partial["paper"].iloc[0]) if len(partial) else math.nan
        lines = ["| row | seeds | ms/image (ours) | x partial (ours) | paper ms/batch | x partial (paper) | val 3D Dice |",
                 "|---|---|---|---|---|---|---|"]
        for _, r in part.iterrows():
            ratio = r["ms_per_image_mean"] / ours0 if ours0 and not _nan(ours0) else math.nan
            pratio = r["paper"] / paper0 if paper0 and not _nan(paper0) else math.nan
            lines.append(f"| {r['row']} | {r['seeds']} | {_pm(r['ms_per_image_mean'], r['ms_per_image_std'], 1)} | "
                         f"{_num(ratio, 2)} | {_num(r['paper'], 0)} | {_num(pratio, 2)} | {_pm(r['dice_3d_mean'], r['dice_3d_std'], 3)} |")
        return "\n".join(lines)
    lines = ["| row | seeds | val 3D Dice (ours) | paper | 2D Dice (empty=1) | 2D Dice (empty skipped) | HD95 mm | epochs | ms/image | not finished |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in part.iterrows():
        lines.append(f"| {r['row']} | {r['seeds']} | {_pm(r['dice_3d_mean'], r['dice_3d_std'], 3)} | {_paper_cell(r)} | "
                     f"{_num(r['dice_2d_one_mean'], 3)} | {_num(r['dice_2d_nan_mean'], 3)} | {_num(r['hd95_mean'], 1)} | "
                     f"{_num(r['epochs_mean'], 0)} | {_pm(r['ms_per_image_mean'], r['ms_per_image_std'], 1)} | "
                     f"{r['unfinished'] or ''} |")
    return "\n".join(lines)


def runs_markdown(frame) -> str:
    """Every run, one line each: name, table and row, seed, status, best Dice, epochs, timing, output folder."""
    lines = ["| run | table | row | seed | status | val 3D Dice | best epoch | epochs | ms/image | output folder |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in frame.iterrows():
        seed = "" if _nan(r["seed"]) else str(int(r["seed"]))
        best = "" if _nan(r["best_epoch"]) else str(int(r["best_epoch"]))
        lines.append(f"| {r['run_name']} | {r['table']} | {r['row']} | {seed} | {r['status']} | {_num(r['dice_3d'], 3)} | "
                     f"{best} | {int(r['epochs']) if not _nan(r['epochs']) else ''} | {_num(r['ms_per_image'], 1)} | "
                     f"{r['output_dir']} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the report


def write_report(
    runs: Runs,
    out_dir: str | Path,
    *,
    title: str = "wss-monai report",
    intro: Sequence[str] = (),
    overlays: bool = True,
    overlay_slices: int = 4,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write ``report.md``, ``runs.csv``, ``summary.csv`` and the figures for ``runs`` to ``out_dir``.

    Args:
        runs: from :func:`collect`.
        out_dir: the report folder (created).
        title: the Markdown title.
        intro: paragraphs placed under the title (settings, data, budget).
        overlays: draw the qualitative figure (needs the runs' local checkpoints and dataset).
        overlay_slices: validation slices in it.
        log: called with a line for each figure that could not be drawn (None: quiet).

    Returns the path of ``report.md``.
    """
    from pipelines.reporting import paper, plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frame = runs.frame
    summary = summarize(frame)
    frame.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    notes: list[str] = []

    def attempt(name: str, draw: Callable[[], Any]) -> str | None:
        try:
            return draw()
        except Exception as err:  # a figure must never cost the report
            notes.append(f"{name} not drawn: {err}")
            return None

    figures: dict[str, str | None] = {}
    if len(summary):
        figures["dice"] = attempt("dice.png", lambda: plots.plot_dice(summary, out / "dice.png"))
        figures["curves"] = attempt("curves.png", lambda: plots.plot_curves(frame, runs.curves, out / "curves.png"))
        figures["time"] = attempt("time.png", lambda: plots.plot_time(summary, out / "time.png"))
        if overlays:
            from pipelines.reporting import overlays as ov

            def draw_overlays():
                path, skipped = ov.overlay_figure(frame, out / "overlays.png", count=overlay_slices)
                notes.extend(skipped)
                return path

            figures["overlays"] = attempt("overlays.png", draw_overlays)
    lines = [f"# {title}", ""]
    for paragraph in intro:
        lines += [paragraph, ""]
    where = f"MLflow store `{runs.tracking_uri}`" + (f", experiment `{runs.experiment}`" if runs.experiment else "")
    finished = int((frame["status"] == "FINISHED").sum()) if len(frame) else 0
    lines += [f"{len(frame)} runs ({finished} finished) from the {where}.", ""]
    if not len(frame):
        lines += ["No runs to report.", ""]
    for table in summary["table"].unique() if len(summary) else []:
        lines += [f"## {_table_heading(table)}", "", summary_markdown(summary, table), ""]
        note = paper.table_note(table) if table else ""
        if note:
            lines += [f"*{note}*", ""]
    captions = {
        "dice": "Validation 3D Dice per row (mean ± std over seeds) with the paper's value beside it.",
        "curves": "Validation 3D Dice per epoch, one line per run.",
        "overlays": "The same validation slices segmented by each regime's best checkpoint: image, ground truth "
                    "(green contour), each regime's prediction (red) with its Dice on the slice.",
        "time": "Training time per training image (ms), mean over seeds.",
    }
    drawn = [(k, v) for k, v in figures.items() if v]
    if drawn:
        lines += ["## Figures", ""]
        for key, path in drawn:
            lines += [captions[key], "", f"![{key}]({Path(path).name})", ""]
    if len(frame):
        lines += ["## Runs", "", runs_markdown(frame), ""]
    lines += [LEGEND, ""]
    if notes:
        lines += ["Notes: " + "; ".join(notes) + ".", ""]
        if log:
            for note in notes:
                log(note)
    path = out / "report.md"
    tmp = path.with_name(".report.md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)
    return path


def console_table(summary) -> str:
    """The summary tables as plain Markdown for a terminal (no figures)."""
    blocks = []
    for table in summary["table"].unique():
        blocks.append(f"{_table_heading(table)}\n\n{summary_markdown(summary, table)}")
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------------------------
# command line


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``python -m pipelines.report: error: ...``) and exit code 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m pipelines.report",
        description="Report the runs of an MLflow experiment (the demo's, pipelines.reproduce's, or runs made by hand with "
        "'python -m monai.bundle run'): runs.csv, summary.csv (mean and std over seeds, the papers' values beside ours), "
        "report.md with Dice, validation-curve, overlay and timing figures.",
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment name (the bundles' default is the dataset name, e.g. acdc-lv)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store or server (default: sqlite:///<cwd>/mlruns.db)")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: ./report_<experiment>)")
    parser.add_argument("--title", default=None, help="title of report.md")
    parser.add_argument("--no-overlays", action="store_true", help="skip the qualitative figure (it loads every regime's checkpoint)")
    args = parser.parse_args(argv)
    from wss_monai import tracking

    try:
        uri = tracking.resolve_tracking_uri(args.tracking_uri)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sqlite = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
    if sqlite and not Path(sqlite).is_file():
        print(f"error: {sqlite}: no MLflow store there (pass --tracking-uri)", file=sys.stderr)
        return 2
    answers, reason = tracking.reachable(uri)
    if not answers:
        print(f"error: --tracking-uri {uri}: the server does not answer ({reason}); start it or pass another store",
              file=sys.stderr)
        return 2
    out = (args.out or Path(f"report_{args.experiment}")).resolve()
    problem = output_problem(out)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        runs = collect(args.experiment, uri)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    path = write_report(runs, out, title=args.title or f"Report of the MLflow experiment {args.experiment}",
                        overlays=not args.no_overlays, log=lambda line: print(f"note: {line}", file=sys.stderr))
    summary = summarize(runs.frame)
    if len(summary):
        print(console_table(summary))
    print(f"\nReport: {path}\nRuns: {out / 'runs.csv'}  Summary: {out / 'summary.csv'}\nBrowse the runs: {tracking.ui_command(uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
