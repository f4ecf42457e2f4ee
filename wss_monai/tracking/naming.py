"""Names of experiments and runs: one experiment per dataset and target, a fresh name per training."""

from __future__ import annotations

import datetime as _dt
import re
import uuid


def slug(text: str) -> str:
    return re.sub(r"[^0-9a-z_]+", "-", str(text).strip().lower()).strip("-")


def experiment_name(dataset: str, target: str | None = None) -> str:
    """One experiment per dataset and target, e.g. ``experiment_name("ACDC", "LV") == "acdc-lv"``."""
    parts = [slug(dataset)] + ([slug(target)] if target else [])
    if not all(parts):
        raise ValueError(f"experiment needs a non-empty dataset (and target) name, got {dataset!r}, {target!r}.")
    return "-".join(parts)


def unique_run_name(regime: str, seed: int | None = None, *, now: _dt.datetime | None = None) -> str:
    """``<regime>-s<seed>-<YYYYmmdd-HHMMSS>-<6 hex>``: readable, sortable, never reused.

    MLflow resumes an unfinished run that has the same name, so every training gets a fresh
    name; the regime and seed are also logged as the tags ``regime`` and ``seed`` so reports
    never parse names.

    Example::

        >>> unique_run_name("individual+gated_crf", 3)            # doctest: +SKIP
        'individual+gated_crf-s3-20250101-120000-a1b2c3'
    """
    regime = str(regime).strip()
    if not regime or re.search(r"\s", regime):
        raise ValueError(f"regime must be a non-empty name without spaces (e.g. 'individual'), got {regime!r}.")
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    seed_part = f"-s{int(seed)}" if seed is not None else ""
    return f"{regime}{seed_part}-{stamp}-{uuid.uuid4().hex[:6]}"
