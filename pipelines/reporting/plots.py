"""The report's figures: Dice per row beside the paper's, validation curves, training time per image.

Matplotlib with the non-interactive Agg backend; each figure is written under a temporary name
and renamed, so a crash never leaves half a PNG (the engine's :mod:`wss_monai.engine.plots` helpers).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from wss_monai.engine.plots import _pyplot, _save

__all__ = ["plot_dice", "plot_curves", "plot_time"]


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _tables(summary, exclude: tuple[str, ...] = ()) -> list[str]:
    return [t for t in summary["table"].unique() if t not in exclude]


def _title(table: str) -> str:
    return f"Table {table}" if table else "regimes"


def plot_dice(summary, path: str | Path) -> str | None:
    """Horizontal bars per row: our validation 3D Dice (mean, std as error bar) and the paper's value.

    One panel per table (Table 5, the timing table, is left to :func:`plot_time`). Returns the
    path, or None when no row has a score.
    """
    tables = [t for t in _tables(summary, exclude=("5",)) if summary[summary["table"] == t]["dice_3d_mean"].notna().any()
              or summary[summary["table"] == t]["paper"].notna().any()]
    if not tables:
        return None
    plt = _pyplot()
    heights = [max(1, int((summary["table"] == t).sum())) for t in tables]
    fig, axes = plt.subplots(len(tables), 1, figsize=(8, 1.2 + sum(0.45 * h + 0.6 for h in heights)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, table in zip(axes[:, 0], tables):
        part = summary[summary["table"] == table].reset_index(drop=True)
        ys = list(range(len(part)))[::-1]
        ours = [float(v) if _finite(v) else 0.0 for v in part["dice_3d_mean"]]
        errs = [float(v) if _finite(v) else 0.0 for v in part["dice_3d_std"]]
        papers = [float(v) if _finite(v) else 0.0 for v in part["paper"]]
        ax.barh([y + 0.2 for y in ys], ours, height=0.4, xerr=errs if any(errs) else None, color="tab:blue", label="ours",
                capsize=2)
        ax.barh([y - 0.2 for y in ys], papers, height=0.4, color="0.7", hatch="//", edgecolor="0.4", label="paper")
        for y, value, ok in zip(ys, ours, part["dice_3d_mean"]):
            ax.text(min(value, 0.98) + 0.01, y + 0.2, f"{value:.3f}" if _finite(ok) else "n/a", va="center", fontsize=7)
        for y, value, ok in zip(ys, papers, part["paper"]):
            if _finite(ok):
                ax.text(min(value, 0.98) + 0.01, y - 0.2, f"{value:.3f}", va="center", fontsize=7, color="0.3")
        ax.set_yticks(ys)
        preps = part["preparation"].fillna("") if "preparation" in part else [""] * len(part)
        ax.set_yticklabels([f"{row} [{prep}]" if prep else row for row, prep in zip(part["row"], preps)], fontsize=8)
        ax.set_xlim(0, 1.1)
        ax.set_xlabel("validation 3D Dice")
        ax.set_title(_title(table), fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_curves(frame, curves: dict[str, dict[int, float]], path: str | Path) -> str | None:
    """Validation 3D Dice per epoch: one panel per table, one colour per row, one line per run (seed)."""
    import pandas as pd

    if frame is None or not len(frame) or not any(curves.get(r) for r in frame["run_id"]):
        return None
    plt = _pyplot()
    tables = [t for t in pd.unique(frame["table"].fillna("")) if any(curves.get(r) for r in frame[frame["table"] == t]["run_id"])]
    from pipelines.reporting.results import ordered_rows
    from pipelines.reporting.paper import dataset_key

    cols = min(2, len(tables))
    rows_ = math.ceil(len(tables) / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(6.5 * cols, 4.2 * rows_), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    cmap = plt.get_cmap("tab20")
    for ax, table in zip(axes.ravel(), tables):
        ax.axis("on")
        part = frame[frame["table"] == table]
        dataset = dataset_key(next((d for d in part["dataset"] if d), None))
        for i, row in enumerate(ordered_rows(table, dataset, part["row"])):
            colour = cmap(i % 20)
            first = True
            for _, run in part[part["row"] == row].iterrows():
                curve = curves.get(run["run_id"]) or {}
                if not curve:
                    continue
                xs = sorted(curve)
                ax.plot(xs, [curve[x] for x in xs], color=colour, lw=1.3, marker="." if len(xs) < 30 else None,
                        label=row if first else None, ls="-" if run["status"] == "FINISHED" else ":")
                first = False
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation 3D Dice")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(_title(table), fontsize=9)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_time(summary, path: str | Path) -> str | None:
    """Training time per training image (ms, mean and std over seeds) per row.

    Only Table 5's rows when it was run (batch 1, as the paper times), else every row that has
    timing metrics. Returns None when no row has any.
    """
    part = summary[summary["table"] == "5"] if (summary["table"] == "5").any() else summary
    part = part[part["ms_per_image_mean"].notna()].reset_index(drop=True)
    if not len(part):
        return None
    plt = _pyplot()
    labels = [f"{r['row']}" if not r["table"] or (summary["table"] == r["table"]).all() else f"T{r['table']} {r['row']}"
              for _, r in part.iterrows()]
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.35 * len(part)))
    ys = list(range(len(part)))[::-1]
    values = [float(v) for v in part["ms_per_image_mean"]]
    errs = [float(v) if _finite(v) else 0.0 for v in part["ms_per_image_std"]]
    ax.barh(ys, values, xerr=errs if any(errs) else None, color="tab:orange", capsize=2)
    for y, v in zip(ys, values):
        ax.text(v, y, f" {v:.1f}", va="center", fontsize=7)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("training ms per image (validation excluded)")
    ax.set_title("Table 5: training cost" if (part["table"] == "5").all() else "training cost", fontsize=9)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
