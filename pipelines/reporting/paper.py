"""The papers' published numbers (``pipelines/paper_numbers.json``), looked up by table, dataset and row.

The numbers are kept as data, not code, so that a reader can check them against the papers and
a report can place them beside ours. A row is a wss-monai regime name (``individual``,
``hybrid_5``...) or ``bounds_<lo>_<hi>`` for Table 4's fixed bounds.

Example::

    >>> paper_value("1", "acdc", "individual")["value"]
    0.8708
    >>> dataset_key("acdc-lv"), dataset_key("vertebral-vb"), dataset_key("acdc-rv")
    ('acdc', 'vertebral', None)
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

__all__ = ["PAPER_NUMBERS", "load", "dataset_key", "paper_rows", "paper_value", "lookup", "DEFAULT_TABLES"]

PAPER_NUMBERS = Path(__file__).resolve().parents[1] / "paper_numbers.json"

DEFAULT_TABLES = {"acdc": ("1", "2", "midl-1"), "vertebral": ("3", "4"), "promise12": ("3",)}
"""Where a row of a run that belongs to no table is looked up, in order, per dataset."""


@functools.lru_cache(maxsize=1)
def load() -> dict[str, Any]:
    """The parsed ``paper_numbers.json``."""
    return json.loads(PAPER_NUMBERS.read_text(encoding="utf-8"))


def dataset_key(name: str | None) -> str | None:
    """The papers' dataset a prepared dataset's name stands for (``acdc-lv`` -> ``acdc``), or None.

    Only the names ``paper_numbers.json`` lists under ``datasets.<key>.names`` match, exactly
    (case aside): the papers measured the left ventricle of ACDC, so a dataset that merely
    starts with ``acdc`` (``acdc-rv``, ``acdc-myo-lv``, a custom ``acdc-test``) must not be shown
    beside the LV numbers. A name matched nothing: no paper value, an empty cell.
    """
    text = str(name or "").strip().lower()
    if not text:
        return None
    for key, entry in load()["datasets"].items():
        names = entry.get("names", []) if isinstance(entry, dict) else []
        if text in (str(n).lower() for n in names):
            return key
    return None


def paper_rows(table: str, dataset: str | None) -> list[dict[str, Any]]:
    """The paper's rows of ``table`` for ``dataset`` (dataset-agnostic tables use the key ``*``)."""
    entry = load()["tables"].get(str(table))
    if not entry:
        return []
    rows = entry["rows"]
    return list(rows.get(dataset or "", rows.get("*", [])))


def paper_value(table: str, dataset: str | None, row: str) -> dict[str, Any] | None:
    """The paper's entry for ``row`` in ``table`` (``{"row", "label", "value", ...}`` plus ``table``), or None."""
    for entry in paper_rows(table, dataset):
        if entry["row"] == row:
            return {**entry, "table": str(table), "metric": load()["tables"][str(table)].get("metric", "dsc")}
    return None


def lookup(dataset: str | None, row: str, table: str | None = None) -> dict[str, Any] | None:
    """The paper's Dice for a report row: from ``table`` when given, else the dataset's tables in turn."""
    tables = (str(table),) if table else DEFAULT_TABLES.get(dataset or "", ())
    for name in tables:
        found = paper_value(name, dataset, row)
        if found is not None:
            return found
    return None


def table_title(table: str) -> str:
    entry = load()["tables"].get(str(table))
    return entry["title"] if entry else ""


def table_note(table: str) -> str:
    entry = load()["tables"].get(str(table))
    return entry.get("note", "") if entry else ""
