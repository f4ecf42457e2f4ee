"""Sending a fallback journal to a store once it answers, into the same run: :func:`sync_fallback`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from wss_monai.tracking.journal import FALLBACK_NAME, FallbackJournal
from wss_monai.tracking.queries import find_run
from wss_monai.tracking.record import RunRecord
from wss_monai.tracking.run import TrackedRun
from wss_monai.tracking.server import reachable
from wss_monai.tracking.store import get_or_create_experiment, resolve_tracking_uri, store_client


def _forget_artifact_repo(run_id: str) -> None:
    """Drop MLflow's process-wide cache of the run's artifact repository (keyed by run id only).

    The cached repository holds the URL of the server the run was logged through; after the server
    moved (or in the process that logged the run), artifacts would go to the old URL.
    """
    try:
        from mlflow.tracking._tracking_service import utils

        utils._artifact_repos_cache.pop(run_id, None)
    except (ImportError, AttributeError):  # other MLflow versions: nothing cached that way
        pass


@dataclass
class SyncResult:
    """What :func:`sync_fallback` sent: the run, and counts of each kind of operation."""

    run_id: str
    run_name: str
    tracking_uri: str
    created: bool
    operations: int = 0
    metrics: int = 0
    params: int = 0
    tags: int = 0
    artifacts: int = 0
    datasets: int = 0
    missing: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not self.operations and not self.created:
            return f"nothing to sync: run {self.run_name!r} ({self.run_id}) in {self.tracking_uri} already has everything"
        how = "created" if self.created else "existing"
        text = (f"synced {self.operations} operations to {how} run {self.run_name!r} ({self.run_id}) in {self.tracking_uri}: "
                f"{self.metrics} metric values, {self.params} params, {self.tags} tags, {self.artifacts} artifacts, "
                f"{self.datasets} dataset inputs")
        if self.missing:
            text += f"; {len(self.missing)} artifact file(s) no longer exist: {', '.join(self.missing)}"
        if self.skipped:
            text += "; not in the journal, so not synced: " + "; ".join(self.skipped)
        return text


def sync_fallback(source: str | os.PathLike, to: str | None = None) -> SyncResult:
    """Send the unsynced operations of a fallback journal to a tracking store.

    Args:
        source: the journal (``mlflow_fallback.jsonl``) or the training run's output folder.
        to: the store; None = the one the run was meant for (recorded in the journal).

    The operations go to the run the journal names when the store has it (a server that died
    mid-run), else to a run created with the journal's name, experiment, tags and start time
    (a server unreachable from the start). A ``synced`` line is appended, so a second sync sends
    only what came after; ``run.json`` beside the journal then names the run. Metric steps and
    timestamps are kept.

    Raises:
        FileNotFoundError / ValueError: no journal, or not one. ConnectionError: the store
        does not answer (nothing was sent).
    """
    from mlflow.entities import Metric

    path = Path(source)
    if path.is_dir():
        path = path / FALLBACK_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such fallback journal (a training run writes {FALLBACK_NAME} in its output folder).")
    journal = FallbackJournal(path)
    entries = journal.read()
    header = next((e for e in entries if e["op"] == "run"), None)
    if header is None:
        raise ValueError(f"{path}: not an MLflow fallback journal (no 'run' line).")
    target = resolve_tracking_uri(to or header.get("tracking_uri"))
    ok, reason = reachable(target)
    if not ok:
        raise ConnectionError(f"{target} does not answer ({reason}); nothing was synced, run the command again when it does.")
    start = FallbackJournal._start(entries, target)
    todo = [e for e in entries[start:] if e["op"] not in ("run", "synced")]
    client = store_client(target)
    run_id = next((e.get("run_id") for e in reversed(entries[:start]) if e["op"] == "synced" and e.get("to") == target), None)
    if run_id is None:
        for entry in entries:
            if entry["op"] == "run" and entry.get("run_id") and find_run(client, entry["run_id"]) is not None:
                run_id = entry["run_id"]
                break
    created = run_id is None
    if created:
        experiment_id = get_or_create_experiment(client, header["experiment"], target)
        made = client.create_run(experiment_id, run_name=header["run_name"], start_time=header.get("start_time"),
                                 tags=dict(header.get("tags") or {}))
        run_id = made.info.run_id
    else:
        experiment_id = client.get_run(run_id).info.experiment_id
    _forget_artifact_repo(run_id)
    run = TrackedRun(run_id, target, experiment_id, header["run_name"], client)
    result = SyncResult(run_id, header["run_name"], target, created)
    for entry in todo:
        op = entry["op"]
        if op == "config":
            result.params += len(run.log_config(entry["config"], params=entry.get("params")))
        elif op == "dataset":
            run.log_dataset(entry["name"], entry["digest"], entry["source"], entry.get("context") or "training")
            result.datasets += 1
        elif op == "skipped":
            note = f"{entry.get('what', 'an operation')} ({entry.get('reason', 'not journalled')})"
            result.skipped.append(f"{note}: {entry['note']}" if entry.get("note") else note)
        elif op == "params":
            run.log_params(entry["params"])
            result.params += len(entry["params"])
        elif op == "metrics":
            batch = [Metric(k, float(v), int(entry["timestamp"]), int(entry["step"])) for k, v in entry["metrics"].items()]
            for i in range(0, len(batch), 1000):
                client.log_batch(run_id, metrics=batch[i:i + 1000])
            result.metrics += len(batch)
        elif op == "tags":
            run.set_tags(entry["tags"])
            result.tags += len(entry["tags"])
        elif op == "artifacts":
            for item in entry["paths"]:
                if Path(item).exists():
                    run.log_artifacts(item, artifact_path=entry.get("artifact_path"))
                    result.artifacts += 1
                else:
                    result.missing.append(item)
        elif op == "status":
            if entry["status"] == "RUNNING":
                client.update_run(run_id, status="RUNNING")
            else:
                client.set_terminated(run_id, status=entry["status"], end_time=entry.get("time"))
        result.operations += 1
    if todo or created:
        journal.append({"op": "synced", "to": target, "run_id": run_id, "operations": result.operations, "time": int(time.time() * 1000)})
    RunRecord(path.parent).note_synced_run(run_id, experiment_id, target)
    return result
