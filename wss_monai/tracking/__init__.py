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

MLflow is imported lazily: importing this package stays cheap.

The package holds one idea per module:

- :mod:`~wss_monai.tracking.store`: which store a run goes to (URIs), its client, its experiments;
- :mod:`~wss_monai.tracking.naming`: experiment and run names;
- :mod:`~wss_monai.tracking.params`: params from a config, within MLflow's limits;
- :mod:`~wss_monai.tracking.run`: one run logged through an explicit client (:class:`TrackedRun`);
- :mod:`~wss_monai.tracking.journal`, :mod:`~wss_monai.tracking.resilient`,
  :mod:`~wss_monai.tracking.sync`: the run that outlives its server, its journal and the sync;
- :mod:`~wss_monai.tracking.queries`: reading runs back (``runs_dataframe``);
- :mod:`~wss_monai.tracking.record`: the files of a run's output folder (:class:`RunRecord`);
- :mod:`~wss_monai.tracking.server`: whether a server answers, and a local one;
- :mod:`~wss_monai.tracking.cli`: ``python -m wss_monai.tracking``.
"""

from __future__ import annotations

from wss_monai.tracking.cli import main
from wss_monai.tracking.journal import FALLBACK_NAME, FallbackJournal, sync_command
from wss_monai.tracking.naming import experiment_name, unique_run_name
from wss_monai.tracking.params import MAX_KEY_LENGTH, MAX_PARAM_VALUE_LENGTH, flatten_config, metric_key
from wss_monai.tracking.queries import experiment_runs, run_names_starting_with, runs_dataframe
from wss_monai.tracking.record import RunRecord
from wss_monai.tracking.resilient import ResilientRun
from wss_monai.tracking.run import TrackedRun, start_run, tracked_run
from wss_monai.tracking.server import LocalServer, reachable, start_local_server
from wss_monai.tracking.store import (
    DEFAULT_ARTIFACTS_DIR,
    DEFAULT_DB_NAME,
    EXPERIMENT_KIND_TAG,
    TRAINING_EXPERIMENT_KIND,
    default_tracking_uri,
    resolve_tracking_uri,
    store_client,
    ui_command,
)
from wss_monai.tracking.sync import SyncResult, sync_fallback

# Private helpers the tests have always reached as ``tracking._name`` (from the single module this
# package replaces); their homes are the local server and the command line.
from wss_monai.tracking.cli import _build_parser  # noqa: F401
from wss_monai.tracking.server import _group_alive, _is_loopback  # noqa: F401

__all__ = [
    "DEFAULT_DB_NAME",
    "DEFAULT_ARTIFACTS_DIR",
    "MAX_KEY_LENGTH",
    "MAX_PARAM_VALUE_LENGTH",
    "default_tracking_uri",
    "resolve_tracking_uri",
    "store_client",
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
    "run_names_starting_with",
    "ui_command",
    "LocalServer",
    "start_local_server",
    "RunRecord",
    "main",
]
