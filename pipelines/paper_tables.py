"""The papers' tables as runs: which (table, row, seed) a reproduction trains, on which data, with what.

``python -m pipelines.reproduce`` (:mod:`pipelines.reproduce`) plans its runs here: each row of
the chosen tables of Kervadec et al. (MedIA 2019) is a regime trained by its bundle, once per
seed; Table 4's fixed bounds are rows of their own, on a copy of the dataset prepared with those
bounds, and Table 5 times training at batch 1. Every run has a key,
``<dataset>/t<table>/<row>/s<seed>``, and MLflow tags (:meth:`PlannedRun.tags`) by which a rerun
finds it again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TABLES", "TABLE1_ROWS", "TABLE3_ROWS", "TABLE5_ROWS", "TABLE5_EPOCHS", "HYBRID_N", "PlannedRun", "plan_runs",
           "bounds_pairs", "variant_bounds"]

TABLES = ("1", "2", "3", "4", "5")

TABLE1_ROWS = ("partial", "lagrangian_tags", "tags", "lagrangian_common", "common", "lagrangian_individual", "individual",
               "volume3d", "full")
TABLE3_ROWS = ("partial", "tags", "common", "individual", "full")
TABLE5_ROWS = ("partial", "tags", "lagrangian_tags", "common", "lagrangian_common", "full")
HYBRID_N = (5, 10, 25)

TABLE5_EPOCHS = 2
"""Epochs of a Table 5 run (timing needs few; at batch 1 an epoch is long)."""

PAPER_SLICE_AREA = 256 * 256
"""Pixels of the papers' slices: Table 4's fixed bounds are on this grid."""

TAG_KEY, TAG_TABLE, TAG_ROW, TAG_PIPELINE, TAG_INTERRUPTED = "wss.key", "wss.table", "wss.row", "wss.pipeline", "wss.interrupted"


@dataclass(frozen=True)
class PlannedRun:
    """One (table, row, seed) of the reproduction.

    ``prepared`` is the dataset it trains on (a Table 4 bounds variant has its own);
    ``overrides`` are bundle keys (Table 5: ``batch_size`` 1); ``epochs`` caps its epochs.
    """

    key: str
    table: str
    row: str
    regime: str
    seed: int
    prepared: Path
    overrides: Mapping[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    bounds: tuple[float, float] | None = None

    @property
    def base_name(self) -> str:
        """The run name of the first attempt (``t1-individual-s0``)."""
        return f"t{self.table}-{self.row}-s{self.seed}"

    def tags(self) -> dict[str, str]:
        out = {TAG_KEY: self.key, TAG_TABLE: self.table, TAG_ROW: self.row, TAG_PIPELINE: "reproduce"}
        if self.bounds is not None:
            out["wss.bounds"] = f"{self.bounds[0]:g},{self.bounds[1]:g}"
        return out


def bounds_pairs() -> list[tuple[str, tuple[float, float]]]:
    """Table 4's fixed bounds as (row, (lo, hi)) in the paper's pixels, from ``paper_numbers.json``."""
    from pipelines.reporting import paper

    return [(e["row"], (float(e["bounds"][0]), float(e["bounds"][1]))) for e in paper.paper_rows("4", "vertebral") if "bounds" in e]


def variant_bounds(pair: tuple[float, float], slice_area: int) -> tuple[float, float]:
    """A paper bound pair moved to slices of ``slice_area`` pixels (same share of the image)."""
    scale = slice_area / PAPER_SLICE_AREA
    return round(pair[0] * scale, 1), round(pair[1] * scale, 1)


def plan_runs(
    tables: Sequence[str],
    *,
    dataset: str,
    seeds: Sequence[int],
    prepared: Path,
    variants: Mapping[str, tuple[Path, tuple[float, float]]] | None = None,
    hybrid_n: Sequence[int] = HYBRID_N,
    training_patients: int | None = None,
    only: Sequence[str] | None = None,
    epochs: int | None = None,
) -> tuple[list[PlannedRun], list[str]]:
    """The runs of the chosen tables, and notes on what was left out and why.

    Args:
        tables: table numbers (``"1"`` ... ``"5"``).
        dataset: the ``--dataset`` name (part of every key).
        seeds: the seeds (every row runs once per seed).
        prepared: the prepared dataset.
        variants: Table 4 rows -> (their prepared variant, bounds in pixels as prepared).
        hybrid_n: Table 2's n; an n the training patients cannot provide is left out.
        training_patients: patients of the training split (for the hybrid check).
        only: keep only these rows (names of rows or regimes).
        epochs: epoch cap of every run (Table 5: at most :data:`TABLE5_EPOCHS`).
    """
    notes: list[str] = []
    rows: list[tuple[str, str, str, Path, dict, int | None, tuple | None]] = []  # table, row, regime, prepared, overrides, epochs, bounds
    for table in tables:
        if table == "1":
            rows += [(table, r, r, prepared, {}, epochs, None) for r in TABLE1_ROWS]
        elif table == "2":
            ns = []
            for n in hybrid_n:
                if training_patients is not None and n >= training_patients:
                    notes.append(f"Table 2: n = {n} left out (the dataset has {training_patients} training patients)")
                else:
                    ns.append(n)
            names = ["common"] + [name for n in ns for name in (f"full_{n}", f"hybrid_{n}")] + ["full"]
            rows += [(table, r, r, prepared, {}, epochs, None) for r in names]
        elif table == "3":
            rows += [(table, r, r, prepared, {}, epochs, None) for r in TABLE3_ROWS]
        elif table == "4":
            rows.append((table, "individual", "individual", prepared, {}, epochs, None))
            for row, (folder, bounds) in (variants or {}).items():
                rows.append((table, row, "common", folder, {}, epochs, bounds))
        elif table == "5":
            cap = min(epochs, TABLE5_EPOCHS) if epochs else TABLE5_EPOCHS
            rows += [(table, r, r, prepared, {"batch_size": 1}, cap, None) for r in TABLE5_ROWS]
        else:
            raise ValueError(f"unknown table {table!r}")
    if only:
        wanted = set(only)
        rows = [r for r in rows if r[1] in wanted or r[2] in wanted]
    plan = [PlannedRun(key=f"{dataset}/t{t}/{row}/s{seed}", table=t, row=row, regime=regime, seed=seed, prepared=folder,
                       overrides=overrides, epochs=cap, bounds=bounds)
            for seed in seeds for (t, row, regime, folder, overrides, cap, bounds) in rows]
    return plan, notes
