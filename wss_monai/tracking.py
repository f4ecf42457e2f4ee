"""MLflow glue shared by the bundles and the pipelines.

Conventions (README.md, "Tracking with MLflow"):

- the default store is a SQLite file in the working folder, ``sqlite:///<abs cwd>/mlruns.db``
  (MLflow 3 refuses its old file store); a server URL (``http://host:port``) works the same way;
- one experiment per dataset and target (``acdc-lv``), one run per training, named after its
  regime and seed plus a unique suffix (MLflow otherwise resumes an unfinished run of that name);
- params are the few values runs are compared on (regime, loss weights, learning rate, dataset
  fingerprint...: one screen of the runs table); the whole resolved config is the artifact
  ``config.json``; metrics are logged per epoch (step = epoch); artifacts are files and folders;
- the data a run trained on is an MLflow dataset input (:meth:`TrackedRun.log_dataset`), the best
  network an MLflow model (:meth:`TrackedRun.log_model`);
- experiments are tagged as model-training experiments (:data:`EXPERIMENT_KIND_TAG`), so that
  the MLflow 3 UI opens them on runs, not on its GenAI pages.

Example::

    from wss_monai import tracking

    with tracking.tracked_run("acdc-lv", regime="individual", seed=0, config=cfg, params={"lr": 5e-4}) as run:
        for epoch in range(epochs):
            run.log_metrics({"train_loss": loss, "val_dice_3d_mean": dice}, epoch=epoch)
        run.log_artifacts("checkpoints/best.pt", "dice_curves.png")
    table = tracking.runs_dataframe("acdc-lv", best_of=["val_dice_3d_mean"])

``python -m wss_monai.tracking serve`` starts a local MLflow server (UI and REST API) on
127.0.0.1 over the default store and prints its URL.

Trainings log through :class:`ResilientRun`: when the store does not answer (a server down at the
start or killed mid-run), what it could not take goes to ``mlflow_fallback.jsonl`` in the run's
output folder, and ``python -m wss_monai.tracking sync --from RUN_DIR [--to URI]``
(:func:`sync_fallback`) sends it later, into the same run.

MLflow is imported lazily: importing this module stays cheap.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as _dt
import hashlib
import ipaddress
import json
import logging
import math
import os
import posixpath
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_DB_NAME",
    "default_tracking_uri",
    "resolve_tracking_uri",
    "experiment_name",
    "unique_run_name",
    "flatten_config",
    "metric_key",
    "EXPERIMENT_KIND_TAG",
    "TRAINING_EXPERIMENT_KIND",
    "TrackedRun",
    "start_run",
    "tracked_run",
    "FALLBACK_NAME",
    "FallbackJournal",
    "ResilientRun",
    "SyncResult",
    "reachable",
    "sync_command",
    "sync_fallback",
    "runs_dataframe",
    "experiment_runs",
    "ui_command",
    "LocalServer",
    "start_local_server",
    "main",
]

DEFAULT_DB_NAME = "mlruns.db"
DEFAULT_ARTIFACTS_DIR = "mlartifacts"

# MLflow 3 limits (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH / MAX_ENTITY_KEY_LENGTH), kept
# here so that flattening a config does not import MLflow; the tests check they still agree.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_KEY_LENGTH = 250

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""Experiment tag by which the MLflow 3 UI chooses its view (its values are in the UI bundle, not in the Python API)."""

TRAINING_EXPERIMENT_KIND = "custom_model_development"
"""The value of :data:`EXPERIMENT_KIND_TAG` that opens an experiment on its runs and training charts
(the other choice, ``genai_development``, opens on traces and evaluations)."""

_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_REMOTE_SCHEMES = ("http", "https", "databricks", "databricks-uc")


# --------------------------------------------------------------------------------------------
# where runs go


def default_tracking_uri(workdir: str | os.PathLike | None = None) -> str:
    """``sqlite:///<abs workdir>/mlruns.db``, the working folder by default.

    Example::

        >>> default_tracking_uri("/data/exp")
        'sqlite:////data/exp/mlruns.db'
    """
    folder = Path(workdir) if workdir is not None else Path.cwd()
    return f"sqlite:///{(folder / DEFAULT_DB_NAME).resolve()}"


def resolve_tracking_uri(uri: str | os.PathLike | None = None, workdir: str | os.PathLike | None = None) -> str:
    """The tracking URI to use for ``uri`` (None or "" = :func:`default_tracking_uri`).

    - ``http(s)://host:port`` (a tracking server) and database URLs are returned as given,
      except that a relative SQLite path is made absolute (against ``workdir`` or the cwd), so
      that a later change of folder does not silently open another database;
    - a path to a ``.db``/``.sqlite`` file becomes a SQLite URI;
    - ``file:`` URIs and folders (MLflow's old file store) are refused with a clear message.
    """
    if uri is None or str(uri).strip() == "":
        return default_tracking_uri(workdir)
    text = str(uri).strip()
    if text in ("databricks", "databricks-uc"):  # MLflow's own shorthands for hosted tracking
        return text
    base = Path(workdir) if workdir is not None else Path.cwd()
    scheme = text.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) else ""
    if scheme in _REMOTE_SCHEMES:
        return text.rstrip("/")
    if scheme == "sqlite":
        prefix = "sqlite:///"
        if text.startswith(prefix) and not text.startswith(prefix + "/") and text != prefix + ":memory:":
            return f"{prefix}{(base / text[len(prefix):]).resolve()}"
        return text
    if scheme.split("+")[0] in _SQL_SCHEMES:
        return text
    if scheme == "file" or (not scheme and not text.lower().endswith((".db", ".sqlite", ".sqlite3"))):
        raise ValueError(
            f"tracking URI {text!r} is an MLflow file store, which MLflow 3 refuses; use a SQLite file "
            f"such as {default_tracking_uri(workdir)!r} (the default) or a server URL (http://host:port)."
        )
    if scheme:
        raise ValueError(
            f"tracking URI {text!r} has an unknown scheme {scheme!r}; use a SQLite file (sqlite:///PATH.db or PATH.db), "
            f"a server URL (http://host:port, https://...) or a database URL ({', '.join(_SQL_SCHEMES[1:])})."
        )
    return f"sqlite:///{(base / text).resolve()}"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if uri.startswith("sqlite:///") and not uri.endswith(":memory:"):
        return Path(uri[len("sqlite:///") :])
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-z_]+", "-", str(text).strip().lower()).strip("-")


def experiment_name(dataset: str, target: str | None = None) -> str:
    """One experiment per dataset and target, e.g. ``experiment_name("ACDC", "LV") == "acdc-lv"``."""
    parts = [_slug(dataset)] + ([_slug(target)] if target else [])
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


# --------------------------------------------------------------------------------------------
# params from a config


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def metric_key(key: str) -> str:
    """A name MLflow accepts for a param or metric, as close to ``key`` as possible.

    Characters outside letters, digits, ``_ - . space : /`` become ``_``; ``/`` is kept as a
    separator but empty, ``.`` and ``..`` path segments are removed (MLflow refuses names that
    would resolve to another path); names longer than 250 characters are cut and end with a
    hash of the full name, so that they stay distinct.
    """
    text = re.sub(r"[^\w\-. :/]", "_", str(key))
    segments = [s if s.strip(".") else "_" for s in text.split("/") if s]
    text = "/".join(segments) or "_"
    if len(text) > MAX_KEY_LENGTH:
        text = f"{text[: MAX_KEY_LENGTH - 9]}-{_short_hash(str(key))}"
    return text


def _param_value(value: Any) -> str:
    """Strings as they are, other scalars and scalar lists as compact JSON (``true``, ``[1, 2]``)."""
    if isinstance(value, str):
        return value
    if callable(getattr(value, "tolist", None)):
        value = value.tolist()  # NumPy / torch scalars and arrays
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf / nan
    try:
        return json.dumps(value, separators=(", ", ": "), default=str)
    except (TypeError, ValueError):
        return str(value)


def _truncate(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    marker = f" ...[truncated {len(value)} chars, sha1 {_short_hash(value)}]"
    return value[: limit - len(marker)] + marker


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool, int, float)) or getattr(value, "ndim", None) == 0


def flatten_config(
    config: Mapping[str, Any], sep: str = ".", max_value_length: int = MAX_PARAM_VALUE_LENGTH
) -> dict[str, str]:
    """Flatten a nested config into MLflow params: ``{"optimizer.lr": "0.0005", ...}``.

    - nested mappings join their keys with ``sep``; lists of scalars become one JSON value
      (``"[0.9, 0.99]"``), lists holding mappings or lists are indexed (``transforms.0._target_``);
      empty containers are kept as ``{}`` / ``[]``;
    - keys are made MLflow-safe with :func:`metric_key` (keys may contain ``/``); two keys that
      become equal are told apart by a hash suffix instead of overwriting each other;
    - values longer than ``max_value_length`` (MLflow's limit) are cut and say so, with the
      length and a hash of the full value (log the full config as an artifact:
      :meth:`TrackedRun.log_config` does).

    Example::

        >>> flatten_config({"optimizer": {"lr": 5e-4, "betas": [0.9, 0.99]}, "loss/size": {"w": 1e-2}})
        {'optimizer.lr': '0.0005', 'optimizer.betas': '[0.9, 0.99]', 'loss/size.w': '0.01'}
    """
    flat: dict[str, str] = {}

    def put(raw_key: str, value: Any) -> None:
        key = metric_key(raw_key)
        if key in flat:
            key = metric_key(f"{key[: MAX_KEY_LENGTH - 9]}-{_short_hash(raw_key)}")
        flat[key] = _truncate(_param_value(value), max_value_length)

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            if not value:
                put(prefix, {})
            for k, v in value.items():
                walk(f"{prefix}{sep}{k}" if prefix else str(k), v)
        elif isinstance(value, (list, tuple)) and not all(_is_scalar(v) for v in value):
            for i, v in enumerate(value):
                walk(f"{prefix}{sep}{i}" if prefix else str(i), v)
        else:
            put(prefix, list(value) if isinstance(value, tuple) else value)

    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping, got {type(config).__name__}.")
    walk("", config)
    return flat


# --------------------------------------------------------------------------------------------
# logging a run


_READY_STORES: set[str] = set()  # SQLite files this process has seen created and upgraded


def store_client(tracking_uri: str):
    """An ``MlflowClient`` of ``tracking_uri``; a new SQLite store is created once, under a file lock.

    MLflow creates (or upgrades) a SQLite store's tables the first time a process opens it; two
    bundle runs starting at once on a new file both ran the migrations and one died with
    ``duplicate column name: step``. For a SQLite URI the client is made, and its first query run,
    inside an exclusive ``flock`` on ``<db>.lock``: the first process creates the tables, the
    others wait and find them ready.
    """
    from mlflow import MlflowClient

    db = _sqlite_path(tracking_uri)
    if db is None or str(db) in _READY_STORES:
        return MlflowClient(tracking_uri=tracking_uri)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, MLflow's own behaviour
        return MlflowClient(tracking_uri=tracking_uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=tracking_uri)
            client.search_experiments(max_results=1)
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    _READY_STORES.add(str(db))
    return client


def _mark_training_experiment(client, experiment) -> None:
    """Tag ``experiment`` as a model-training one (:data:`EXPERIMENT_KIND_TAG`) unless it already has a kind.

    Without the tag, MLflow 3.x opens an experiment on its GenAI landing page and the runs, their
    Dice and their charts are one click away. A kind a user chose (in the UI or by hand) is kept.
    """
    if (experiment.tags or {}).get(EXPERIMENT_KIND_TAG):
        return
    try:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT_KIND)
    except Exception as err:  # a read-only or older store: the UI's default view, nothing lost
        logger.warning(f"could not tag experiment {experiment.name!r} as a training experiment: {_first_line(err)}")


def _get_or_create_experiment(client, name: str, tracking_uri: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        _mark_training_experiment(client, experiment)
        return experiment.experiment_id
    artifact_location = None
    db = _sqlite_path(tracking_uri)
    if db is not None:
        # beside the database, not in "./mlruns" of whatever folder this process runs in
        artifact_location = (db.parent / DEFAULT_ARTIFACTS_DIR / _slug(name)).as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location,
                                        tags={EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT_KIND})
    except MlflowException:
        # another process created it between our two calls
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        _mark_training_experiment(client, experiment)
        return experiment.experiment_id


@dataclass
class TrackedRun:
    """One MLflow run, logged through an explicit client (no global active run).

    Build it with :func:`start_run` or :func:`tracked_run`.
    """

    run_id: str
    tracking_uri: str
    experiment_id: str
    run_name: str
    client: Any = field(repr=False, default=None)

    def __post_init__(self):
        if self.client is None:
            self.client = store_client(self.tracking_uri)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log already-flat params (made MLflow-safe as in :func:`flatten_config`)."""
        from mlflow.entities import Param

        flat = flatten_config(dict(params))
        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat.items()])

    def log_config(self, config: Mapping[str, Any], artifact_file: str = "config.json",
                   params: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Log the full config as a JSON artifact and ``params`` (the values runs are compared on) as params.

        The config is not flattened into params: a bundle config gives some 200 of them (its
        ``imports`` first), which buries the scores under columns in the UI's runs table.

        Returns:
            the params as logged (made MLflow-safe as in :func:`flatten_config`).
        """
        from mlflow.entities import Param

        flat = flatten_config(dict(params or {}))
        if flat:
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat.items()])
        if artifact_file:
            self.client.log_text(self.run_id, json.dumps(config, indent=2, default=str), artifact_file)
        return flat

    def log_dataset(self, name: str, digest: str, source: str | os.PathLike, context: str = "training") -> None:
        """Record the data the run used as an MLflow dataset input (the UI's Dataset column).

        The dataset is described, not uploaded: ``name`` (e.g. ``acdc-lv``), ``digest`` (what tells
        two preparations of one dataset apart: :attr:`wss_monai.data.PreparedDataset.fingerprint`)
        and ``source``, the folder it was read from (an MLflow local source). ``context`` becomes
        the input tag ``mlflow.data.context``.
        """
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        described = MetaDataset(LocalArtifactDatasetSource(str(source)), name=str(name), digest=str(digest)).to_dict()
        entity = Dataset(name=described["name"], digest=described["digest"], source_type=described["source_type"],
                         source=described["source"])
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, str(context))])])

    def log_model(self, network, input_example, *, name: str = "model", extra_files: Sequence[str | os.PathLike] = (),
                  registered_model_name: str | None = None) -> str:
        """Log a PyTorch network as an MLflow model of this run (the UI's "Logged models"); returns its ``models:/`` URI.

        The network is saved as ``torch.export``'s ``pt2`` archive (MLflow's
        ``serialization_format="pt2"``): loading it back with ``mlflow.pytorch.load_model``
        rebuilds the traced graph without unpickling code, and MLflow checks the archive is free
        of pickles first. The export traces the network on ``input_example`` (a float32 array,
        e.g. one slice ``(1, 1, H, W)``), which is also stored with the model, with the signature
        inferred from it and the network's output. ``extra_files`` are copied into the model
        (``extra_files/`` of its artifacts). The requirements are given (torch), not inferred:
        MLflow would otherwise load the model in a subprocess to find them, and would validate the
        input example by loading it again; both cost seconds per run for nothing this library
        needs. ``registered_model_name`` also registers it (a new version under that name).

        MLflow logs models through its process-wide tracking URI: it is pointed at this run's
        store for the call and put back after.
        """
        import mlflow
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        example = np.ascontiguousarray(np.asarray(input_example, dtype=np.float32))
        network = network.eval()
        with torch.no_grad():
            output = network(torch.from_numpy(example)).detach().cpu().numpy()
        signature = infer_signature(example, output)
        # made here, in the run's experiment: MLflow would put it in the process's active experiment
        experiment_id = self.experiment_id or self.client.get_run(self.run_id).info.experiment_id
        params = self.client.get_run(self.run_id).data.params
        model = self.client.create_logged_model(experiment_id, name=name, source_run_id=self.run_id, params=params)
        previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            info = mlflow.pytorch.log_model(
                network,
                name=name,
                model_id=model.model_id,
                run_id=self.run_id,
                signature=signature,
                input_example=example,
                serialization_format="pt2",
                extra_files=[str(f) for f in extra_files] or None,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                registered_model_name=registered_model_name,
                validate_serving_input=False,
            )
        finally:
            mlflow.set_tracking_uri(previous)
        return info.model_uri

    def log_metrics(self, metrics: Mapping[str, float], epoch: int | None = None) -> None:
        """Log scalar metrics for one epoch (MLflow step = ``epoch``); NaN is kept (MLflow stores it).

        Example: ``run.log_metrics({"train_loss": 0.3, "val_dice_3d_lv": 0.81}, epoch=4)``.
        """
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        step = int(epoch) if epoch is not None else 0
        batch = []
        for key, value in metrics.items():
            if hasattr(value, "item"):
                value = value.item()
            batch.append(Metric(metric_key(key), float(value), timestamp, step))
        self.client.log_batch(self.run_id, metrics=batch)

    def log_artifacts(self, *paths: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Log files and folders (a folder keeps its name: ``ckpt/`` -> ``<artifact_path>/ckpt/...``)."""
        for path in map(Path, paths):
            if path.is_dir():
                target = posixpath.join(artifact_path, path.name) if artifact_path else path.name
                self.client.log_artifacts(self.run_id, str(path), artifact_path=target)
            elif path.is_file():
                self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)
            else:
                raise FileNotFoundError(f"no such file or folder to log as artifact: {path}")

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(metric_key(k), str(v)) for k, v in tags.items()])

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the run ended: ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self.client.set_terminated(self.run_id, status=status)


def start_run(
    experiment: str,
    regime: str,
    seed: int | None = None,
    *,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    config: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> TrackedRun:
    """Create a run in ``experiment`` (created if needed) and return it, running.

    Args:
        experiment: experiment name, e.g. ``experiment_name("acdc", "lv")``.
        regime: training regime (``individual``, ``hybrid_5``, ``partial+dense_crf``...).
        seed: the run's seed.
        tracking_uri: see :func:`resolve_tracking_uri`; None = SQLite in the cwd.
        run_name: defaults to :func:`unique_run_name`; give a unique one if you pass it.
        config: resolved config, logged with :meth:`TrackedRun.log_config` (the artifact ``config.json``).
        tags: extra tags; ``regime`` and ``seed`` are always set.
        params: the values runs are compared on, logged as params (keep them to one screen).
    """
    uri = resolve_tracking_uri(tracking_uri)
    client = store_client(uri)
    experiment_id = _get_or_create_experiment(client, experiment, uri)
    name = run_name or unique_run_name(regime, seed)
    all_tags = {"regime": regime, **({"seed": str(seed)} if seed is not None else {}), **(tags or {})}
    run = client.create_run(experiment_id, run_name=name, tags={metric_key(k): str(v) for k, v in all_tags.items()})
    tracked = TrackedRun(run.info.run_id, uri, experiment_id, name, client)
    if config is not None or params:
        try:
            tracked.log_config(config or {}, artifact_file="config.json" if config is not None else "", params=params)
        except BaseException:
            tracked.finish("FAILED")  # never leave a RUNNING run behind
            raise
    return tracked


@contextlib.contextmanager
def tracked_run(experiment: str, regime: str, seed: int | None = None, **kwargs: Any) -> Iterator[TrackedRun]:
    """:func:`start_run` as a context manager: the run ends ``FINISHED``, ``FAILED`` on an
    exception, or ``KILLED`` on Ctrl+C."""
    run = start_run(experiment, regime, seed, **kwargs)
    try:
        yield run
    except KeyboardInterrupt:
        run.finish("KILLED")
        raise
    except BaseException:
        run.finish("FAILED")
        raise
    run.finish("FINISHED")


# --------------------------------------------------------------------------------------------
# a run that outlives its tracking server

FALLBACK_NAME = "mlflow_fallback.jsonl"
"""The fallback journal in a training run's output folder (see :class:`ResilientRun`)."""

logger = logging.getLogger("wss_monai.tracking")


def _first_line(err: BaseException | str) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _health_timeout() -> float:
    try:
        return min(10.0, float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")))
    except ValueError:
        return 10.0


def reachable(tracking_uri: str, timeout: float | None = None) -> tuple[bool, str]:
    """Whether the tracking server at ``tracking_uri`` answers at all: ``(True, "")`` or ``(False, reason)``.

    One GET of ``<uri>/health``; any HTTP answer (even 401 or 404) counts as reachable, only a
    refused or timed-out connection does not. A refused connection is known at once, where
    MLflow's own client would retry for minutes. Database URIs are reported reachable (their
    errors show when they are used).
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return True, ""
    host = urllib.parse.urlsplit(tracking_uri).hostname or ""
    opener = _NO_PROXY_OPENER if _is_loopback(host) else urllib.request.build_opener()
    try:
        with opener.open(f"{tracking_uri}/health", timeout=_health_timeout() if timeout is None else timeout):
            return True, ""
    except urllib.error.HTTPError:
        return True, ""
    except (urllib.error.URLError, OSError) as err:
        return False, _first_line(getattr(err, "reason", err))


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
                    found = _get_run_or_none(client, resume_run_id)
                    if found is not None:
                        client.update_run(resume_run_id, status="RUNNING")
                        self.run = TrackedRun(resume_run_id, uri, found.info.experiment_id, found.info.run_name, client)
                        return self
                    logger.warning(f"MLflow run {resume_run_id} is not in {uri}; the resumed training logs to a new run {self.run_name!r}")
                experiment_id = _get_or_create_experiment(client, experiment, uri)
                made = client.create_run(experiment_id, run_name=self.run_name, start_time=self.start_time, tags=self.tags)
                self.run = TrackedRun(made.info.run_id, uri, experiment_id, self.run_name, client)
            except Exception as err:
                ok, reason = False, _first_line(err)
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
                    reason = _first_line(err)
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
                    logger.warning(f"could not log the model {name!r} to MLflow ({_first_line(err)}); {fallback_note}".rstrip("; "))
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


def _get_run_or_none(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        if getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST" or "not found" in str(err).lower():
            return None
        raise


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
            if entry["op"] == "run" and entry.get("run_id") and _get_run_or_none(client, entry["run_id"]) is not None:
                run_id = entry["run_id"]
                break
    created = run_id is None
    if created:
        experiment_id = _get_or_create_experiment(client, header["experiment"], target)
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
    info_path = path.parent / "run.json"
    try:
        info = json.loads(info_path.read_text())
        if isinstance(info, dict) and (not info.get("run_id") or info.get("run_id") == run_id):
            info.update(run_id=run_id, experiment_id=experiment_id, tracking_uri=target, tracking_synced=True)
            tmp = info_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(info, indent=2, default=str))
            os.replace(tmp, info_path)
    except (OSError, json.JSONDecodeError):
        pass
    return result


# --------------------------------------------------------------------------------------------
# reading runs back


def experiment_runs(experiment: str, tracking_uri: str | None = None, *, client=None,
                    order_by: Sequence[str] = ("attributes.start_time ASC",)) -> list:
    """Every run of ``experiment`` (MLflow ``Run`` objects, oldest first), read page by page.

    Raises:
        ValueError: the experiment does not exist (the message lists those that do).
    """
    uri = resolve_tracking_uri(tracking_uri)
    client = client or store_client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"no experiment {experiment!r} in {uri}; experiments there: {', '.join(names) or 'none'}")
    runs, token = [], None
    while True:
        page = client.search_runs([found.experiment_id], max_results=1000, page_token=token, order_by=list(order_by))
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def runs_dataframe(
    experiment: str,
    tracking_uri: str | None = None,
    *,
    best_of: Sequence[str] = (),
    best: str = "max",
):
    """All runs of an experiment as a pandas DataFrame, one row per run, oldest first.

    Columns: ``run_id``, ``run_name``, ``regime``, ``seed``, ``status``, ``start_time``,
    ``end_time`` (UTC timestamps), ``params.<key>`` (strings), ``metrics.<key>`` (the latest
    value of each metric), ``tags.<key>``; and for each metric in ``best_of``,
    ``best.<metric>`` and ``best_epoch.<metric>`` from its history (the papers report the best
    epoch's validation 3D Dice).

    Args:
        experiment: experiment name.
        tracking_uri: see :func:`resolve_tracking_uri`.
        best_of: metrics whose best value over epochs is wanted.
        best: ``"max"`` (Dice) or ``"min"`` (losses, HD95).

    Raises:
        ValueError: the experiment does not exist (the message lists those that do).
    """
    import pandas as pd

    if best not in ("max", "min"):
        raise ValueError(f"best must be 'max' or 'min', got {best!r}.")
    uri = resolve_tracking_uri(tracking_uri)
    client = store_client(uri)
    rows = []
    for run in experiment_runs(experiment, uri, client=client):
        row = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "regime": run.data.tags.get("regime"),
            "seed": run.data.tags.get("seed"),
            "status": run.info.status,
            "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
            "end_time": pd.to_datetime(run.info.end_time, unit="ms", utc=True) if run.info.end_time else pd.NaT,
        }
        row.update({f"params.{k}": v for k, v in run.data.params.items()})
        row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
        row.update({f"tags.{k}": v for k, v in run.data.tags.items() if not k.startswith("mlflow.")})
        for key in best_of:
            history = client.get_metric_history(run.info.run_id, key)
            values = [(m.value, m.step) for m in history if not math.isnan(m.value)]
            if values:
                value, step = (max if best == "max" else min)(values, key=lambda vs: vs[0])
            else:
                value, step = math.nan, None
            row[f"best.{key}"], row[f"best_epoch.{key}"] = value, step
        rows.append(row)
    columns = ["run_id", "run_name", "regime", "seed", "status", "start_time", "end_time"]
    frame = pd.DataFrame(rows, columns=None if rows else columns)
    return frame.sort_values("start_time", ignore_index=True) if rows else frame


def ui_command(tracking_uri: str | None = None) -> str:
    """The shell command that opens the MLflow UI on a store, e.g. for a closing message."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri}"


# --------------------------------------------------------------------------------------------
# a local tracking server


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


# local requests must not go through an HTTP proxy set in the environment
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with _NO_PROXY_OPENER.open(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process remains in process group ``pgid``."""
    proc = Path("/proc")
    if proc.is_dir():
        # /proc rather than killpg(pgid, 0): an orphaned worker that exited stays a zombie
        # until init reaps it (never, in some containers) and killpg still "finds" it
        for stat in proc.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":  # fields: state, ppid, pgrp, ...
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class LocalServer:
    """Handle of an ``mlflow server`` started by :func:`start_local_server`.

    The server runs in its own process group (whose id is ``pid``), so :meth:`stop` reaches the
    uvicorn worker it spawns as well, and only processes this handle started.
    """

    url: str
    pid: int
    host: str
    port: int
    backend_store_uri: str
    artifacts_dir: Path
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def api(self, path: str, payload: Mapping[str, Any] | None = None, timeout: float = 30.0) -> dict:
        """Call the server's REST API: ``api("/api/2.0/mlflow/runs/get?run_id=...")`` (GET), or POST ``payload``.

        Goes straight to the server, never through a proxy from the environment (it is local).
        """
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"})
        with opener.open(request, timeout=timeout) as response:
            return json.loads(response.read())

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server: SIGTERM to its process group, SIGKILL after ``timeout`` seconds.

        Returns once the server process has exited and been reaped. Safe to call twice.
        """
        atexit.unregister(self.stop)
        pgid = self.pid  # start_new_session=True made the server its own group leader
        if self.process.poll() is None or _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and (self.process.poll() is None or _group_alive(pgid)):
                time.sleep(0.1)
            if _group_alive(pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_local_server(
    port: int | None = None,
    host: str = "127.0.0.1",
    backend_store_uri: str | None = None,
    artifacts_dir: str | os.PathLike | None = None,
    timeout: float = 90.0,
    workers: int = 1,
    log_path: str | os.PathLike | None = None,
) -> LocalServer:
    """Start ``mlflow server`` as a subprocess and wait until it answers.

    Args:
        port: TCP port; None = a free one.
        host: interface to bind; 127.0.0.1 (this machine only) by default. Anything else
            exposes the UI and REST API to the network and is warned about.
        backend_store_uri: where runs are stored (see :func:`resolve_tracking_uri`); None = the
            SQLite file in the working folder.
        artifacts_dir: where the server keeps artifacts it receives; None = ``mlartifacts``
            beside the SQLite file (or in the cwd).
        timeout: seconds to wait for ``/health`` to answer before giving up (the server is
            then stopped and ``TimeoutError`` raised).
        workers: uvicorn worker processes (MLflow's default is 4; 1 suits a laptop or tests).
        log_path: file for the server's output; None = a temporary file.

    Returns:
        a :class:`LocalServer` with ``.url``, ``.pid`` and ``.stop()``; it is also a context
        manager, and is stopped at interpreter exit if still running.

    Example::

        with start_local_server(backend_store_uri="sqlite:////tmp/x/mlruns.db") as server:
            print(server.url)   # http://127.0.0.1:<port>
    """
    backend = resolve_tracking_uri(backend_store_uri)
    if backend.startswith(("http://", "https://")):
        raise ValueError(f"backend_store_uri must be a database, not a server URL: {backend!r}.")
    db = _sqlite_path(backend)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    if artifacts_dir is None:
        artifacts_dir = (db.parent if db is not None else Path.cwd()) / DEFAULT_ARTIFACTS_DIR
    artifacts_dir = Path(artifacts_dir).resolve()
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    if not _is_loopback(host):
        warnings.warn(
            f"binding the MLflow server to {host!r} exposes it beyond this machine; 127.0.0.1 keeps it local.",
            stacklevel=2,
        )
    if port is None:
        port = _free_port(host)
    elif not _port_is_free(host, port):
        raise OSError(f"port {port} on {host} is already in use; choose another or pass port=None.")
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="mlflow-server-", suffix=".log")
        os.close(handle)
        log_path = name
    log_path = Path(log_path)

    command = [
        sys.executable, "-m", "mlflow", "server",
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
        "--backend-store-uri", backend,
        "--artifacts-destination", str(artifacts_dir),
    ]  # fmt: skip
    env = dict(os.environ)
    # MLflow 3 also starts a job runner for GenAI jobs: not needed to track runs, and heavy
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(artifacts_dir.parent),
            start_new_session=True,  # its own process group, stoppable as a whole
        )
    url_host = f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "") else host)
    server = LocalServer(
        url=f"http://{url_host}:{port}",
        pid=process.pid,
        host=host,
        port=port,
        backend_store_uri=backend,
        artifacts_dir=artifacts_dir,
        log_path=log_path,
        process=process,
    )
    atexit.register(server.stop)

    deadline = time.monotonic() + timeout
    while not _answers(server.url):
        if process.poll() is not None:
            server.stop()
            raise RuntimeError(
                f"mlflow server exited with code {process.returncode} before answering; "
                f"its log ({log_path}) ends with:\n{_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(
                f"mlflow server did not answer {server.url}/health within {timeout:g} s; "
                f"its log ({log_path}) ends with:\n{_tail(log_path)}"
            )
        time.sleep(0.25)
    return server


# --------------------------------------------------------------------------------------------
# command line


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m wss_monai.tracking",
        description="MLflow tracking helpers of wss-monai.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="start a local MLflow server (UI + REST API) and print its URL",
        description="Start `mlflow server` on the given store, print its URL, stop on Ctrl+C.",
    )
    serve.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, this machine only)")
    serve.add_argument(
        "--backend-store-uri",
        "--tracking-uri",
        dest="backend_store_uri",
        default=None,
        help=f"runs store (default: sqlite:///<cwd>/{DEFAULT_DB_NAME})",
    )
    serve.add_argument("--artifacts-dir", default=None, help=f"artifact folder (default: {DEFAULT_ARTIFACTS_DIR}/ beside the store)")
    serve.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the server to answer")

    uri = commands.add_parser("uri", help="print the tracking URI that would be used, and the `mlflow ui` command")
    uri.add_argument("--tracking-uri", default=None)

    runs = commands.add_parser("runs", help="print the runs of an experiment as CSV")
    runs.add_argument("experiment")
    runs.add_argument("--tracking-uri", default=None)
    runs.add_argument("--best-of", action="append", default=[], help="metric whose best epoch is wanted (repeatable)")

    sync = commands.add_parser(
        "sync",
        help="send a run's fallback journal (kept while the tracking server was unreachable) to a store",
        description=f"Send the operations a training kept in {FALLBACK_NAME} (its tracking store did not answer) "
        "to the store: the same run when the store has it, else a new run with the same name. Running it twice "
        "sends nothing twice.",
    )
    sync.add_argument("--from", dest="source", required=True, help=f"the journal, or the training run's output folder holding {FALLBACK_NAME}")
    sync.add_argument("--to", dest="target", default=None, help="tracking URI (default: the one the run was meant for)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "uri":
            resolved = resolve_tracking_uri(args.tracking_uri)
            print(resolved)
            print(ui_command(resolved))
            return 0
        if args.command == "runs":
            runs_dataframe(args.experiment, args.tracking_uri, best_of=args.best_of).to_csv(sys.stdout, index=False)
            return 0
        if args.command == "sync":
            try:
                print(sync_fallback(args.source, args.target).summary())
            except ConnectionError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            return 0
        server = start_local_server(
            port=args.port,
            host=args.host,
            backend_store_uri=args.backend_store_uri,
            artifacts_dir=args.artifacts_dir,
            timeout=args.timeout,
        )
    except (ValueError, OSError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"MLflow server (UI and REST API): {server.url}")
    print(f"  store: {server.backend_store_uri}\n  artifacts: {server.artifacts_dir}\n  log: {server.log_path}")
    print(f"  log runs to it with --tracking_uri {server.url}; Ctrl+C stops it (pid {server.pid}).", flush=True)

    def _interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # the server is in its own session: stop it on our way out

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        server.process.wait()
        print(f"mlflow server exited with code {server.process.returncode}; see {server.log_path}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping the server", file=sys.stderr)
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
