"""The fallback journal: the MLflow operations a run could not send, kept in its output folder until a sync."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


FALLBACK_NAME = "mlflow_fallback.jsonl"
"""The fallback journal in a training run's output folder (see :class:`ResilientRun`)."""


class FallbackJournal:
    """An append-only JSON-lines file of the MLflow operations a run could not send.

    One operation per line, flushed and fsynced as it is written, so a killed process loses at
    most the line it was writing (a torn last line is skipped on reading). Operations: ``run``
    (which run the following lines belong to), ``config`` (the config and the params), ``params``,
    ``metrics`` (with step and timestamp), ``tags``, ``artifacts`` (paths of local files),
    ``dataset`` (a dataset input: name, digest, source, context), ``status``; ``skipped``, what
    could not be kept (an MLflow model: the journal holds no models; the sync summary repeats the
    note); and ``synced``, written by :func:`sync_fallback`, marking everything above it as sent
    to a store.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def append(self, op: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(dict(op), default=str)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        entries = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            if isinstance(entry, dict) and "op" in entry:
                entries.append(entry)
        return entries

    @staticmethod
    def _start(entries: Sequence[Mapping], target: str | None = None) -> int:
        """Index after the last ``synced`` marker (for ``target``, or any)."""
        start = 0
        for i, entry in enumerate(entries):
            if entry["op"] == "synced" and (target is None or entry.get("to") == target):
                start = i + 1
        return start

    def pending(self, target: str | None = None) -> list[dict]:
        """Operations not yet synced (to ``target``; None: to any store), ``run`` lines left out."""
        entries = self.read()
        return [e for e in entries[self._start(entries, target):] if e["op"] not in ("run", "synced")]

    def identity(self) -> dict | None:
        """The first ``run`` line with a server run id, else the first ``run`` line, else None."""
        runs = [e for e in self.read() if e["op"] == "run"]
        with_id = [e for e in runs if e.get("run_id")]
        return (with_id or runs or [None])[0]


def sync_command(journal: str | os.PathLike, tracking_uri: str | None = None) -> str:
    """The command that sends a fallback journal to its tracking store."""
    to = f" --to {tracking_uri}" if tracking_uri else ""
    return f"python -m wss_monai.tracking sync --from {journal}{to}"
