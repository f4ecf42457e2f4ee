"""Report any MLflow experiment of wss-monai runs: ``python -m pipelines.report --experiment NAME``.

Reads every run of an experiment (made by the demo, by ``pipelines.reproduce``, by
``pipelines.regimes`` or by hand with ``python -m monai.bundle run``) into a pandas table, one
row per run, and writes to ``--out``:

- ``runs.csv``: one row per run (scores of the best epoch by validation 3D Dice, epochs, timing,
  status, output folder, the prepared dataset's fingerprint); ``summary.csv``: one row per
  (table, preparation, row) with the mean and standard deviation over the distinct seeds of the
  FINISHED runs and the papers' value beside ours;
- ``report.md`` with the summary tables and the figures ``dice.png`` (our Dice per regime with the
  paper's beside it), ``curves.png`` (validation 3D Dice per epoch), ``overlays.png`` (the same
  validation slices segmented by each regime: image, ground truth, predictions) and
  ``time.png`` (training time per image).

Whatever a run lacks is left blank: a hand-made run has no timing metrics (those come from the
pipelines' :class:`~wss_monai.engine.time_budget.TimeBudget` handler), a run made on another machine has no
local output folder (then it is left out of the overlays), an interrupted run has no best
epoch. The demo and ``pipelines.reproduce`` write their reports with this module
(:func:`pipelines.store.collect`, :func:`write_report`), so all reports read alike.

Rows: a run's row is its MLflow tag ``wss.row`` (set by the pipelines: the regime, or
``bounds_<lo>_<hi>`` for Table 4's fixed bounds), else its ``regime`` tag; its table is the tag
``wss.table`` (blank for runs outside the papers' tables). The papers' numbers come from
``pipelines/paper_numbers.json`` (:mod:`pipelines.reporting.paper`), only beside runs on the dataset
they were measured on.

Preparations: an experiment is named after its dataset, so it may hold the same data prepared
twice (say at 256 and at 64 pixels). Runs are grouped by the prepared dataset's fingerprint (tag
:data:`pipelines.store.FINGERPRINT_TAG`; runs logged without it form one unknown preparation): two preparations
are two rows, never two "seeds" of one, and the report says so above its tables.

Example::

    python -m pipelines.report --experiment acdc-lv --tracking-uri sqlite:///$PWD/mlruns.db --out report_acdc
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipelines.folders import output_problem
from pipelines.reporting.results import (
    console_table,
    ordered_rows,
    preparations,
    runs_markdown,
    summary_markdown,
    table_heading,
    text_column,
)
from pipelines.store import Runs, collect

__all__ = [
    "summarize",
    "write_report",
    "main",
]

TABLE_ORDER = ("1", "2", "3", "4", "5")

LEGEND = (
    "Scores are those of each run's best epoch by validation 3D Dice (the checkpoint the bundles keep), as mean "
    "± standard deviation over the seeds whose run FINISHED (a seed run twice on one prepared dataset counts once, "
    "by its latest run; runs on different preparations of a dataset are never averaged together); 'paper' is the published Dice of the same setting "
    "(pipelines/paper_numbers.json), on the real dataset and after the papers' full training, so a phantom or a "
    "short run is expected to score differently. 2D Dice: mean over validation slices with an empty-vs-empty "
    "slice scored 1, or left out. HD95 in mm (3D, per volume). 'ms/image': training time per training image "
    "(loading, forward, loss, backward, step; validation excluded), blank for runs without the pipelines' timing "
    "metrics."
)


# --------------------------------------------------------------------------------------------
# summary over seeds, with the papers' numbers


def _table_rank(table: str) -> tuple:
    return (TABLE_ORDER.index(table), "") if table in TABLE_ORDER else (len(TABLE_ORDER) + (0 if table else 1), table)


def preparations_line(frame) -> str:
    """The report's line on several preparations in one experiment ("" when there is one or none)."""
    found = preparations(frame)
    if len(found) < 2:
        return ""
    parts = []
    for p in found:
        what = ", ".join(x for x in (p.dataset or "dataset unknown", p.image_size) if x)
        name = f"`{p.fingerprint}`" if p.fingerprint else "no fingerprint (runs logged before fingerprints)"
        parts.append(f"{name} ({what}, {p.runs} run{'s' if p.runs != 1 else ''})")
    return (f"These runs were trained on {len(found)} different preparations of their data: " + "; ".join(parts)
            + ". Each preparation is summarised on its own rows (column 'preparation'), never averaged with another.")


def summarize(frame) -> Any:
    """One row per (table, preparation, row): seeds, mean and std of the FINISHED runs' scores, the paper's value.

    A preparation is a prepared dataset (:func:`preparations`): runs on two preparations are
    never averaged together, so the same regime and seed on two preparations are two rows of one
    seed each. ``seeds`` counts the distinct seeds among the FINISHED runs of a row; when a seed
    FINISHED twice there, its latest run (by start time) is the one averaged and ``duplicates``
    counts the runs left out. The paper's value is that of the row's own dataset
    (:func:`pipelines.reporting.paper.dataset_key`), blank for any other dataset.

    Columns: ``table``, ``row``, ``regime``, ``dataset``, ``fingerprint``, ``preparation`` (the
    short label, only in a table where one row holds runs of several preparations), ``image_size``, ``seeds``,
    ``duplicates``, ``unfinished`` (runs of that row not FINISHED), ``dice_3d_mean``,
    ``dice_3d_std``, ``dice_2d_one_mean``, ``dice_2d_nan_mean``, ``hd95_mean``, ``epochs_mean``,
    ``ms_per_image_mean``, ``ms_per_image_std``, ``paper``, ``paper_label``, ``paper_table``.
    """
    import pandas as pd

    from pipelines.reporting import paper

    columns = ["table", "row", "regime", "dataset", "fingerprint", "preparation", "image_size", "seeds", "duplicates",
               "unfinished", "dice_3d_mean", "dice_3d_std", "dice_2d_one_mean", "dice_2d_nan_mean", "hd95_mean", "epochs_mean",
               "ms_per_image_mean", "ms_per_image_std", "paper", "paper_label", "paper_table"]
    if frame is None or not len(frame):
        return pd.DataFrame(columns=columns)
    preps = preparations(frame)
    frame = frame.assign(_fp=text_column(frame, "fingerprint"), _ds=text_column(frame, "dataset"), _table=text_column(frame, "table"))
    out = []
    for table in sorted(frame["_table"].unique(), key=_table_rank):
        in_table = frame[frame["_table"] == table]
        # the column is needed only where one row holds runs of several preparations (a table whose
        # rows each use their own preparation, like Table 4's bound variants, reads as before)
        per_row = Counter(row for row, _, _ in set(zip(in_table["row"], in_table["_fp"], in_table["_ds"])))
        several = any(n > 1 for n in per_row.values())
        for prep in preps:
            part = frame[(frame["_table"] == table) & (frame["_fp"] == prep.fingerprint) & (frame["_ds"] == prep.dataset)]
            if not len(part):
                continue
            dataset = paper.dataset_key(prep.dataset)
            for row in ordered_rows(table, dataset, part["row"]):
                runs = part[part["row"] == row]
                finished = runs[runs["status"] == "FINISHED"]
                done = latest_per_seed(finished)
                entry = paper.lookup(dataset, row, table if table in paper.load()["tables"] else None)

                def stat(column: str, how: str) -> float:
                    values = pd.to_numeric(done[column], errors="coerce").dropna()
                    if not len(values):
                        return math.nan
                    return float(values.mean()) if how == "mean" else (float(values.std(ddof=1)) if len(values) > 1 else math.nan)

                out.append({
                    "table": table, "row": row, "regime": runs["regime"].iloc[0], "dataset": prep.dataset,
                    "fingerprint": prep.fingerprint, "preparation": prep.label if several else "", "image_size": prep.image_size,
                    "seeds": int(len(done)), "duplicates": int(len(finished) - len(done)), "unfinished": int(len(runs) - len(finished)),
                    "dice_3d_mean": stat("dice_3d", "mean"), "dice_3d_std": stat("dice_3d", "std"),
                    "dice_2d_one_mean": stat("dice_2d_one", "mean"), "dice_2d_nan_mean": stat("dice_2d_nan", "mean"),
                    "hd95_mean": stat("hd95_mm", "mean"), "epochs_mean": stat("epochs", "mean"),
                    "ms_per_image_mean": stat("ms_per_image", "mean"), "ms_per_image_std": stat("ms_per_image", "std"),
                    "paper": entry["value"] if entry else math.nan, "paper_label": entry["label"] if entry else "",
                    "paper_table": entry["table"] if entry else "",
                })
    return pd.DataFrame(out, columns=columns)


def latest_per_seed(finished):
    """The FINISHED runs of one row and preparation, one per seed: the latest by start time.

    A seed is one sample of the spread over seeds; a second FINISHED run of the same seed (a run
    repeated by hand, two reproductions into one store) is not a second sample, so it must not
    count as one nor shrink the standard deviation. Runs without a seed tag cannot be told to be
    repeats, so each is kept.
    """
    import pandas as pd

    if not len(finished):
        return finished
    ordered = finished.assign(_start=pd.to_datetime(finished["start_time"], utc=True, errors="coerce"))
    ordered = ordered.sort_values("_start", kind="stable", na_position="first")
    seeded = ordered[ordered["seed"].notna()].drop_duplicates("seed", keep="last")
    return pd.concat([seeded, ordered[ordered["seed"].isna()]]).drop(columns="_start")


def duplicates_line(summary) -> str:
    """The report's line on seeds that FINISHED more than once on one preparation ("" when none)."""
    if summary is None or not len(summary) or not (summary["duplicates"] > 0).any():
        return ""
    rows = summary[summary["duplicates"] > 0]
    named = [f"{'Table ' + r['table'] + ' ' if r['table'] else ''}{r['row']}"
             + (f" ({r['preparation']})" if r["preparation"] else "") + f": {int(r['duplicates'])}" for _, r in rows.iterrows()]
    return (f"Duplicate runs: {int(rows['duplicates'].sum())} FINISHED run(s) repeat a seed already run on the same "
            f"preparation ({'; '.join(named)}). Each seed counts once: its latest run is the one averaged; all runs are "
            "listed under Runs.")


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
                shown, skipped_preps = overlay_runs(frame)
                notes.extend(skipped_preps)
                path, skipped = ov.overlay_figure(shown, out / "overlays.png", count=overlay_slices)
                notes.extend(skipped)
                return path

            figures["overlays"] = attempt("overlays.png", draw_overlays)
    lines = [f"# {title}", ""]
    for paragraph in intro:
        lines += [paragraph, ""]
    where = f"MLflow store `{runs.tracking_uri}`" + (f", experiment `{runs.experiment}`" if runs.experiment else "")
    finished = int((frame["status"] == "FINISHED").sum()) if len(frame) else 0
    lines += [f"{len(frame)} runs ({finished} finished) from the {where}.", ""]
    for line in (preparations_line(frame), duplicates_line(summary)):
        if line:
            lines += [line, ""]
    if not len(frame):
        lines += ["No runs to report.", ""]
    for table in summary["table"].unique() if len(summary) else []:
        lines += [f"## {table_heading(table)}", "", summary_markdown(summary, table), ""]
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


def overlay_runs(frame) -> tuple[Any, list[str]]:
    """The runs the overlay figure may use, and a note when some preparations were left out.

    The figure shows the slices of one prepared dataset segmented by each row's network; a
    network trained on another preparation (another slice size, field of view) would be shown on
    images it never saw. With several preparations, the one with the most FINISHED runs is drawn.
    """
    preps = preparations(frame)
    if len(preps) < 2:
        return frame, []
    fps, names = text_column(frame, "fingerprint"), text_column(frame, "dataset")
    done = frame["status"] == "FINISHED"
    best = max(preps, key=lambda p: int((done & (fps == p.fingerprint) & (names == p.dataset)).sum()))
    keep = (fps == best.fingerprint) & (names == best.dataset)
    return frame[keep], [f"overlays show the runs of preparation {best.label} only ({len(preps) - 1} other preparation(s) left out)"]


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
    for line in (preparations_line(runs.frame), duplicates_line(summary)):
        if line:
            print(line + "\n")
    if len(summary):
        print(console_table(summary))
    print(f"\nReport: {path}\nRuns: {out / 'runs.csv'}  Summary: {out / 'summary.csv'}\nBrowse the runs: {tracking.ui_command(uri)}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
