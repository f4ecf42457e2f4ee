"""The tracking store: which URI a run goes to, its client, and its experiments.

The default store is a SQLite file in the working folder; a server URL works the same way.
MLflow is imported when a client is made, not when this module is.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from wss_monai.tracking.log import first_line, logger
from wss_monai.tracking.naming import slug


DEFAULT_DB_NAME = "mlruns.db"
DEFAULT_ARTIFACTS_DIR = "mlartifacts"

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""Experiment tag by which the MLflow 3 UI chooses its view (its values are in the UI bundle, not in the Python API)."""

TRAINING_EXPERIMENT_KIND = "custom_model_development"
"""The value of :data:`EXPERIMENT_KIND_TAG` that opens an experiment on its runs and training charts
(the other choice, ``genai_development``, opens on traces and evaluations)."""

_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
_REMOTE_SCHEMES = ("http", "https", "databricks", "databricks-uc")


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


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if uri.startswith("sqlite:///") and not uri.endswith(":memory:"):
        return Path(uri[len("sqlite:///") :])
    return None


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

    db = sqlite_path(tracking_uri)
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
        logger.warning(f"could not tag experiment {experiment.name!r} as a training experiment: {first_line(err)}")


def get_or_create_experiment(client, name: str, tracking_uri: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        _mark_training_experiment(client, experiment)
        return experiment.experiment_id
    artifact_location = None
    db = sqlite_path(tracking_uri)
    if db is not None:
        # beside the database, not in "./mlruns" of whatever folder this process runs in
        artifact_location = (db.parent / DEFAULT_ARTIFACTS_DIR / slug(name)).as_uri()
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


def ui_command(tracking_uri: str | None = None) -> str:
    """The shell command that opens the MLflow UI on a store, e.g. for a closing message."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri}"
