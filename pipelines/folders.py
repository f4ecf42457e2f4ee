"""The output folder a pipeline is given: checked before anything is written.

A pipeline writes a whole tree under ``--out`` (prepared data, runs, an MLflow store, a report),
so an ``--out`` that is an existing file, or that lies inside the raw data it reads, must stop
the command with one line before the first folder is made (``--out`` inside ``--src`` would mix
outputs into the raw dataset, which the next preparation reads back as cases).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["output_problem"]


def output_problem(out: Path, option: str = "--out", inputs: Mapping[str, Path] | None = None) -> str | None:
    """Why ``out`` cannot be the output folder (one line naming it), or None when it can.

    Args:
        out: the folder the command will write into (it may not exist yet).
        option: the option that named it, for the message.
        inputs: option -> input folder the output may not equal or lie inside (symlinks followed).
    """
    resolved = Path(out).expanduser().resolve()
    if resolved.exists() and not resolved.is_dir():
        return f"{option} {resolved}: is a file; choose a folder"
    for name, folder in (inputs or {}).items():
        source = Path(folder).expanduser().resolve()
        if resolved == source or source in resolved.parents:
            return f"{option} {resolved}: lies inside {name} {source}, which it would fill with outputs; choose a folder outside it"
    return None
