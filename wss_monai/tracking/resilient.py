"""A training's MLflow run that outlives its tracking server: :class:`ResilientRun`."""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wss_monai.tracking.journal import FallbackJournal, sync_command
from wss_monai.tracking.log import first_line, logger
from wss_monai.tracking.naming import unique_run_name
from wss_monai.tracking.params import metric_key
from wss_monai.tracking.queries import find_run
from wss_monai.tracking.run import TrackedRun
from wss_monai.tracking.server import reachable
from wss_monai.tracking.store import get_or_create_experiment, resolve_tracking_uri, store_client


class ResilientRun:
    """An MLflow run that never stops a training: what the store cannot take goes to a journal.

    Made by :meth:`start`; it has the methods of :class:`TrackedRun` (``log_config``,
    ``log_params``, ``log_metrics``, ``log_artifacts``, ``log_dataset``, ``log_model``,
    ``set_tags``, ``finish``); a model is never journalled (offline it is skipped with a note). Before each
    operation on an HTTP server, :func:`reachable` asks ``/health`` (instant when nobody
    listens). When the server does not answer, or an operation fails, the run goes *offline*
    for the rest of the process: one warning names the journal (``mlflow_fallback.jsonl`` in the
    run's output folder) and the command that sends it later (:func:`sync_command`), and that
    operation and every later one are appended to the journal instead. Nothing is lost; training
    goes on. A journal that still holds unsynced operations keeps a resumed run offline too, so
    the operations stay in order.

    Attributes: ``run_id`` (the store's run id; None when the run could not be created),
    ``offline`` (bool), ``journal`` (:class:`FallbackJournal`), ``offline_reason``.
    """

    def __init__(self, experiment: str, run_name: str, tracking_uri: str, fallback: str | os.PathLike,
                 tags: Mapping[str, Any] | None = None) -> None:
        self.experiment = experiment
        self.run_name = run_name
        self.tracking_uri = tracking_uri
        self.journal = FallbackJournal(fallback)
        self.tags = {metric_key(k): str(v) for k, v in (tags or {}).items()}
        self.run: TrackedRun | None = None
        self.offline = False
        self.offline_reason: str | None = None
        self.local_id: str | None = None
        self.start_time = int(time.time() * 1000)
        self._known_run_id: str | None = None

    @property
    def run_id(self) -> str | None:
        """The store's id of this run (known even offline when the run was created or is resumed)."""
        return self.run.run_id if self.run is not None else self._known_run_id

    @property
    def experiment_id(self) -> str | None:
        return self.run.experiment_id if self.run is not None else None

    @classmethod
    def start(
        cls,
        experiment: str,
        regime: str,
        seed: int | None = None,
        *,
        tracking_uri: str | None = None,
        run_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        fallback: str | os.PathLike,
        resume: bool = False,
        resume_run_id: str | None = None,
    ) -> "ResilientRun":
        """Create the run and log ``config`` (artifact) and ``params``; or, with ``resume``, reopen ``resume_run_id`` (status RUNNING).

        A resumed run logs no params (they are the first start's). Its journal, when it still
        holds unsynced operations, keeps it offline; a resumed run whose id the store does not
        know is created anew (with a warning). A fresh run moves an old journal in its folder
        aside (``mlflow_fallback.<time>.jsonl``).
        """
        uri = resolve_tracking_uri(tracking_uri)
        all_tags = {"regime": regime, **({"seed": str(seed)} if seed is not None else {}), **(tags or {})}
        self = cls(experiment, run_name or unique_run_name(regime, seed), uri, fallback, all_tags)
        now = lambda: int(time.time() * 1000)  # noqa: E731
        if resume and self.journal.pending():
            # earlier operations of this run are still waiting: keep the new ones after them
            known = self.journal.identity() or {}
            self.local_id = known.get("local_id")
            self.start_time = known.get("start_time") or self.start_time
            self._go_offline(f"{self.journal.path.name} still holds operations not yet synced", run_id=known.get("run_id") or resume_run_id)
            self.journal.append({"op": "status", "status": "RUNNING", "time": now()})
            return self
        if not resume and self.journal.path.exists():
            aside = self.journal.path.with_name(f"{self.journal.path.stem}.{_dt.datetime.now():%Y%m%d-%H%M%S}.jsonl")
            os.replace(self.journal.path, aside)
            logger.warning(f"an older fallback journal was in the run's folder: moved to {aside}")
        ok, reason = reachable(uri)
        if ok:
            try:
                client = store_client(uri)
                if resume and resume_run_id:
                    found = find_run(client, resume_run_id)
                    if found is not None:
                        client.update_run(resume_run_id, status="RUNNING")
                        self.run = TrackedRun(resume_run_id, uri, found.info.experiment_id, found.info.run_name, client)
                        return self
                    logger.warning(f"MLflow run {resume_run_id} is not in {uri}; the resumed training logs to a new run {self.run_name!r}")
                experiment_id = get_or_create_experiment(client, experiment, uri)
                made = client.create_run(experiment_id, run_name=self.run_name, start_time=self.start_time, tags=self.tags)
                self.run = TrackedRun(made.info.run_id, uri, experiment_id, self.run_name, client)
            except Exception as err:
                ok, reason = False, first_line(err)
        if self.run is not None:
            if config is not None or params:
                self.log_config(config or {}, params=params)  # goes to the journal if the store fails now
            return self
        self._go_offline(reason, run_id=resume_run_id if resume else None)
        if resume and resume_run_id:
            self.journal.append({"op": "status", "status": "RUNNING", "time": now()})
        elif config is not None or params:
            self.journal.append({"op": "config", "config": _jsonable(config or {}), "params": _jsonable(params or {})})
        return self

    # ----------------------------------------------------------------------------------------

    def _go_offline(self, reason: str, run_id: str | None = None) -> None:
        if self.offline:
            return
        self.offline = True
        self.offline_reason = reason
        if run_id and self.run is None:
            self._known_run_id = run_id
        if self.local_id is None:
            self.local_id = f"offline-{uuid.uuid4().hex}"
        self.journal.append({
            "op": "run", "run_id": run_id or self.run_id, "local_id": self.local_id, "experiment": self.experiment,
            "run_name": self.run_name, "tracking_uri": self.tracking_uri, "tags": self.tags, "start_time": self.start_time,
            "time": int(time.time() * 1000), "reason": reason,
        })
        logger.warning(
            f"MLflow tracking store {self.tracking_uri} cannot be used ({reason}); training goes on and this run's "
            f"metrics, params, tags and artifacts are kept in {self.journal.path}; send them to the store when it "
            f"answers again with: {sync_command(self.journal.path)}"
        )

    def _do(self, op: dict, action: Callable[[TrackedRun], Any]) -> None:
        if not self.offline and self.run is not None:
            ok, reason = reachable(self.tracking_uri)
            if ok:
                try:
                    action(self.run)
                    return
                except Exception as err:
                    reason = first_line(err)
            self._go_offline(reason)
        self.journal.append(op)

    def log_config(self, config: Mapping[str, Any], artifact_file: str = "config.json",
                   params: Mapping[str, Any] | None = None) -> None:
        op = {"op": "config", "config": _jsonable(config), "params": _jsonable(params or {})}
        self._do(op, lambda run: run.log_config(config, artifact_file, params=params))

    def log_dataset(self, name: str, digest: str, source: str | os.PathLike, context: str = "training") -> None:
        """:meth:`TrackedRun.log_dataset`; offline it is journalled and sent by :func:`sync_fallback`."""
        op = {"op": "dataset", "name": str(name), "digest": str(digest), "source": str(source), "context": str(context)}
        self._do(op, lambda run: run.log_dataset(name, digest, source, context))

    def log_model(self, network, input_example, *, name: str = "model", extra_files: Sequence[str | os.PathLike] = (),
                  registered_model_name: str | None = None, fallback_note: str = "") -> str | None:
        """:meth:`TrackedRun.log_model`, or None when it cannot be done.

        Offline the model is skipped: the journal holds operations, not models. A ``skipped``
        line records it (with ``fallback_note``, e.g. where the checkpoint is) and the sync summary
        repeats it. A model that cannot be exported or logged while the store answers is a
        warning, not a reason to go offline: the run's other records still go to the store.
        """
        if not self.offline and self.run is not None:
            ok, reason = reachable(self.tracking_uri)
            if ok:
                try:
                    return self.run.log_model(network, input_example, name=name, extra_files=extra_files,
                                              registered_model_name=registered_model_name)
                except Exception as err:
                    logger.warning(f"could not log the model {name!r} to MLflow ({first_line(err)}); {fallback_note}".rstrip("; "))
                    return None
            self._go_offline(reason)
        self.journal.append({"op": "skipped", "what": f"model {name!r}", "note": fallback_note,
                             "reason": "the fallback journal holds no models", "time": int(time.time() * 1000)})
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._do({"op": "params", "params": _jsonable(params)}, lambda run: run.log_params(params))

    def log_metrics(self, metrics: Mapping[str, float], epoch: int | None = None) -> None:
        values = {metric_key(k): float(v.item() if hasattr(v, "item") else v) for k, v in metrics.items()}
        op = {"op": "metrics", "metrics": values, "step": int(epoch) if epoch is not None else 0, "timestamp": int(time.time() * 1000)}
        self._do(op, lambda run: run.log_metrics(metrics, epoch=epoch))

    def log_artifacts(self, *paths: str | os.PathLike, artifact_path: str | None = None) -> None:
        for path in map(Path, paths):
            if not path.exists():
                raise FileNotFoundError(f"no such file or folder to log as artifact: {path}")
        op = {"op": "artifacts", "paths": [str(Path(p).resolve()) for p in paths], "artifact_path": artifact_path}
        self._do(op, lambda run: run.log_artifacts(*paths, artifact_path=artifact_path))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._do({"op": "tags", "tags": {metric_key(k): str(v) for k, v in tags.items()}}, lambda run: run.set_tags(tags))

    def finish(self, status: str = "FINISHED") -> None:
        op = {"op": "status", "status": status, "time": int(time.time() * 1000)}
        self._do(op, lambda run: run.finish(status))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
