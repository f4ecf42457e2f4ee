"""How results are ordered and shown: the regimes' order, the preparations, the columns and the Markdown tables.

Shared by every place that prints or draws runs, so that all read alike: ``python -m
pipelines.regimes`` (its comparison table, :func:`read_results` and :func:`to_markdown`), the
reports (:mod:`pipelines.report`: :func:`summary_markdown`, :func:`runs_markdown`,
:func:`console_table`) and the report's figures (:mod:`pipelines.reporting`, which take their
row order from :func:`ordered_rows`). It lives with the figures in :mod:`pipelines.reporting`,
reads runs through :mod:`pipelines.store` and imports nothing else of the pipelines but the
papers' numbers (:mod:`pipelines.reporting.paper`), so each of those can import it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = [
    "TABLE1_ORDER",
    "COLUMNS",
    "COLUMNS_LEGEND",
    "SHORT_FINGERPRINT",
    "Preparation",
    "order_regimes",
    "ordered_rows",
    "preparations",
    "read_results",
    "to_markdown",
    "summary_markdown",
    "runs_markdown",
    "console_table",
]

TABLE1_ORDER = ("partial", "lagrangian_tags", "tags", "lagrangian_common", "common", "upper",
                "lagrangian_individual", "individual", "logbarrier_individual", "volume3d", "full")
"""MedIA 2019 Table 1 order (expected Dice increasing down to ``full``); other regimes follow."""


def order_regimes(regimes: Sequence[str]) -> list[str]:
    """Table 1 order first (partial ... full), then ``full_<n>`` / ``hybrid_<n>`` pairs, then the rest as given."""
    rank = {name: i for i, name in enumerate(TABLE1_ORDER)}

    def key(item):
        index, name = item
        if name in rank:
            return (0, rank[name], index)
        base = name.split("+")[0]
        if base.startswith(("full_", "hybrid_")):
            n = int(base.split("_")[1]) if base.split("_")[1].isdigit() else 0
            return (1, n, 0 if base.startswith("full_") else 1, index)
        return (2, index)

    return [name for _, name in sorted(enumerate(regimes), key=key)]


def ordered_rows(table: str, dataset: str | None, rows: Iterable[str]) -> list[str]:
    """Rows in the paper's order for ``table`` (when it has them), the others in Table 1 order."""
    from pipelines.reporting import paper

    rows = list(dict.fromkeys(rows))
    if not table:  # rows outside the papers' tables: Table 1 order, then full_<n> / hybrid_<n> pairs
        return order_regimes(rows)
    paper_order = [e["row"] for e in paper.paper_rows(table, dataset)]
    known = [r for r in paper_order if r in rows]
    rest = order_regimes([r for r in rows if r not in known])
    return known + rest


# --------------------------------------------------------------------------------------------
# preparations: the prepared datasets runs trained on


SHORT_FINGERPRINT = 6
"""Characters of a fingerprint shown in the tables' preparation column (the full one is in the
line above the tables, ``runs.csv`` and ``summary.csv``)."""


def _nan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))



def text_column(frame, column: str):
    """A text column with blanks for missing values (a frame built by hand may hold NaN)."""
    if column not in frame:
        return frame.index.to_series().map(lambda _: "")
    return frame[column].map(lambda v: "" if _nan(v) else str(v))



@dataclass(frozen=True)
class Preparation:
    """One prepared dataset among a report's runs: its fingerprint (empty: runs logged before the
    :data:`FINGERPRINT_TAG` existed), dataset name, slice size, number of runs and the short
    ``label`` the tables show."""

    fingerprint: str
    dataset: str
    image_size: str
    runs: int
    label: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.fingerprint, self.dataset)



def preparations(frame) -> list[Preparation]:
    """The distinct preparations of ``frame`` in order of first appearance (oldest run first).

    A preparation is a (fingerprint, dataset name) pair: the fingerprint tells two preparations of
    one dataset apart, and the name still tells apart two datasets among old runs that have no
    fingerprint. Labels are the first :data:`SHORT_FINGERPRINT` characters (``unknown`` without
    one), with the dataset name added where two labels would read alike.
    """
    if frame is None or not len(frame):
        return []
    fps, names = text_column(frame, "fingerprint"), text_column(frame, "dataset")
    sizes = text_column(frame, "image_size")
    keys = list(dict.fromkeys(zip(fps, names)))
    short = {k: (k[0][:SHORT_FINGERPRINT] or "unknown") for k in keys}
    seen = [short[k] for k in keys]
    out = []
    for fp, name in keys:
        mine = (fps == fp) & (names == name)
        size = next((v for v in sizes[mine] if v), "")
        label = short[(fp, name)] + (f" {name}" if name and seen.count(short[(fp, name)]) > 1 else "")
        out.append(Preparation(fp, name, size, int(mine.sum()), label))
    return out


# --------------------------------------------------------------------------------------------
# the comparison table of pipelines.regimes


COLUMNS = [
    ("regime", "regime"),
    ("bundle", "bundle"),
    ("epochs", "epochs"),
    ("best_epoch", "best epoch"),
    ("dice_3d", "val 3D Dice"),
    ("dice_2d_one", "2D Dice (empty=1)"),
    ("dice_2d_nan", "2D Dice (empty skipped)"),
    ("hd95_mm", "HD95 mm"),
    ("train_s", "train s"),
    ("wall_s", "wall s"),
    ("ms_per_image", "ms/image"),
    ("status", "status"),
]
"""(DataFrame column, table header) of the comparison table, in order."""

COLUMNS_LEGEND = (
    "Scores are those of the best epoch by validation 3D Dice (the checkpoint each bundle keeps); 2D Dice is the "
    "mean over validation slices with an empty-vs-empty slice scored 1, or left out; HD95 in mm (3D, per volume). "
    "'train s' sums the epochs' training time (loading, forward, loss, backward, step; validation excluded); "
    "'ms/image' divides it by the training images seen; 'wall s' is the whole bundle process, start-up included."
)
"""What the columns of :func:`to_markdown` measure, printed under the table."""


def read_results(runs: Sequence[Mapping[str, Any]], tracking_uri: str) -> "pandas.DataFrame":  # noqa: F821
    """One row per run of :func:`pipelines.runner.run_regime`, with its scores read back from MLflow.

    Scores are those of the best epoch by validation 3D Dice (the checkpoint the bundle keeps):
    ``dice_3d``, ``dice_2d_one`` / ``dice_2d_nan`` (2D Dice with an empty-vs-empty slice scored 1,
    or left out), ``hd95_mm``. ``epochs`` is the number of epochs run; ``train_s`` the training
    time summed over epochs (validation excluded, as the bundle's ``MLflowTracker`` logs it);
    ``ms_per_image`` = ``train_s`` / training images seen; ``wall_s`` the whole process;
    ``fingerprint`` the prepared dataset's (tag ``dataset_fingerprint``, blank for a run without
    it), so that a row is never read as comparable with a run on another preparation. The
    MLflow side is :func:`pipelines.store.collect`, the reader every report uses.
    """
    import pandas as pd

    from pipelines.store import collect

    ids = [(run.get("run_info") or {}).get("run_id") for run in runs]
    found = collect(run_ids=[i for i in ids if i], tracking_uri=tracking_uri).frame if any(ids) else None
    records = {r["run_id"]: r for r in found.to_dict("records")} if found is not None else {}
    rows = []
    for run, run_id in zip(runs, ids):
        row: dict[str, Any] = {"regime": run["regime"], "bundle": run["bundle"], "run_name": run["run_name"],
                               "wall_s": run.get("wall_s"), "status": "FAILED" if run.get("returncode") else "FINISHED",
                               "run_id": run_id, "log": run.get("log")}
        record = records.get(run_id)
        if record is not None:
            row["status"] = record["status"] if not run.get("returncode") else f"FAILED ({run.get('returncode')})"
            for column in ("epochs", "best_epoch", "dice_3d", "dice_2d_one", "dice_2d_nan", "hd95_mm", "train_s", "ms_per_image",
                           "dataset", "fingerprint"):
                row[column] = record[column]
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column, _ in COLUMNS:
        if column not in frame:
            frame[column] = math.nan
    return frame[[c for c, _ in COLUMNS] + [c for c in frame.columns if c not in dict(COLUMNS)]]



def _cell(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if column in ("dice_3d", "dice_2d_one", "dice_2d_nan"):
        return f"{value:.3f}"
    if column in ("hd95_mm", "ms_per_image"):
        return f"{value:.1f}"
    if column in ("train_s", "wall_s"):
        return f"{value:.0f}"
    if column in ("epochs", "best_epoch"):
        return str(int(value))
    return str(value)



def table_fingerprints(frame) -> list[str]:
    """The distinct prepared-dataset fingerprints of a :func:`read_results` table, in row order ("" for none)."""
    if "fingerprint" not in frame:
        return []
    return list(dict.fromkeys("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in frame["fingerprint"]))



def to_markdown(frame) -> str:
    """The comparison table of :func:`read_results` as Markdown (one row per regime).

    All runs of one :func:`pipelines.regimes.run_regimes` share a prepared dataset; should a table ever hold runs
    of several preparations, a ``preparation`` column (short fingerprint) follows the regime so
    that no two rows read as comparable when they are not (:mod:`pipelines.report` does the same)."""
    columns = list(COLUMNS)
    if len(table_fingerprints(frame)) > 1:
        columns.insert(1, ("fingerprint", "preparation"))
    headers = [h for _, h in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for _, row in frame.iterrows():
        fp = row.get("fingerprint")
        fp = "" if fp is None or (isinstance(fp, float) and math.isnan(fp)) else str(fp)
        cells = [(fp[:SHORT_FINGERPRINT] or "unknown") if c == "fingerprint" else _cell(row.get(c), c) for c, _ in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the report's tables


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



def table_heading(table: str) -> str:
    from pipelines.reporting import paper

    if not table:
        return "Regimes"
    title = paper.table_title(table)
    return f"Table {table}" + (f" (paper: {title})" if title else "")



def _prep_cells(part) -> tuple[str, str, Callable[[Any], str]]:
    """Header, separator and cell of the preparation column: present only when the summary holds several."""
    if "preparation" in part and (part["preparation"].fillna("") != "").any():
        return " preparation |", "---|", lambda r: f" {r['preparation']} |"
    return "", "", lambda r: ""



def summary_markdown(summary, table: str) -> str:
    """The Markdown table of one table's rows of :func:`summarize`.

    A ``preparation`` column (the short fingerprint) follows ``row`` only when a row of the table holds
    runs of several preparations, so the usual single-preparation report reads as before."""
    part = summary[summary["table"] == table]
    head, sep, cell = _prep_cells(part)
    if table == "5":
        lines = [f"| row |{head} seeds | ms/image (ours) | x partial (ours) | paper ms/batch | x partial (paper) | val 3D Dice |",
                 f"|---|{sep}---|---|---|---|---|---|"]
        for _, r in part.iterrows():
            same = part[(part["row"] == "partial") & (part["fingerprint"] == r["fingerprint"]) & (part["dataset"] == r["dataset"])]
            ours0 = float(same["ms_per_image_mean"].iloc[0]) if len(same) else math.nan  # the same preparation's partial
            paper0 = float(same["paper"].iloc[0]) if len(same) else math.nan
            ratio = r["ms_per_image_mean"] / ours0 if ours0 and not _nan(ours0) else math.nan
            pratio = r["paper"] / paper0 if paper0 and not _nan(paper0) else math.nan
            lines.append(f"| {r['row']} |{cell(r)} {r['seeds']} | {_pm(r['ms_per_image_mean'], r['ms_per_image_std'], 1)} | "
                         f"{_num(ratio, 2)} | {_num(r['paper'], 0)} | {_num(pratio, 2)} | {_pm(r['dice_3d_mean'], r['dice_3d_std'], 3)} |")
        return "\n".join(lines)
    lines = [f"| row |{head} seeds | val 3D Dice (ours) | paper | 2D Dice (empty=1) | 2D Dice (empty skipped) | HD95 mm | epochs | ms/image | not finished |",
             f"|---|{sep}---|---|---|---|---|---|---|---|---|"]
    for _, r in part.iterrows():
        lines.append(f"| {r['row']} |{cell(r)} {r['seeds']} | {_pm(r['dice_3d_mean'], r['dice_3d_std'], 3)} | {_paper_cell(r)} | "
                     f"{_num(r['dice_2d_one_mean'], 3)} | {_num(r['dice_2d_nan_mean'], 3)} | {_num(r['hd95_mean'], 1)} | "
                     f"{_num(r['epochs_mean'], 0)} | {_pm(r['ms_per_image_mean'], r['ms_per_image_std'], 1)} | "
                     f"{r['unfinished'] or ''} |")
    return "\n".join(lines)



def runs_markdown(frame) -> str:
    """Every run, one line each: name, table and row, seed, status, best Dice, epochs, timing, output folder
    (and its preparation when the runs hold several)."""
    preps = preparations(frame)
    labels = {p.key: p.label for p in preps} if len(preps) > 1 else {}
    head, sep = (" preparation |", "---|") if labels else ("", "")
    fps, names = text_column(frame, "fingerprint"), text_column(frame, "dataset")
    lines = [f"| run | table | row |{head} seed | status | val 3D Dice | best epoch | epochs | ms/image | output folder |",
             f"|---|---|---|{sep}---|---|---|---|---|---|---|"]
    for i, (_, r) in enumerate(frame.iterrows()):
        seed = "" if _nan(r["seed"]) else str(int(r["seed"]))
        best = "" if _nan(r["best_epoch"]) else str(int(r["best_epoch"]))
        prep = f" {labels[(fps.iloc[i], names.iloc[i])]} |" if labels else ""
        lines.append(f"| {r['run_name']} | {r['table']} | {r['row']} |{prep} {seed} | {r['status']} | {_num(r['dice_3d'], 3)} | "
                     f"{best} | {int(r['epochs']) if not _nan(r['epochs']) else ''} | {_num(r['ms_per_image'], 1)} | "
                     f"{r['output_dir']} |")
    return "\n".join(lines)



def console_table(summary) -> str:
    """The summary tables as plain Markdown for a terminal (no figures)."""
    blocks = []
    for table in summary["table"].unique():
        blocks.append(f"{table_heading(table)}\n\n{summary_markdown(summary, table)}")
    return "\n\n".join(blocks)
