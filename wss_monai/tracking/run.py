"""One MLflow run logged through an explicit client: :class:`TrackedRun`, :func:`start_run`, :func:`tracked_run`."""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wss_monai.tracking.naming import unique_run_name
from wss_monai.tracking.params import flatten_config, metric_key
from wss_monai.tracking.store import get_or_create_experiment, resolve_tracking_uri, store_client


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
    experiment_id = get_or_create_experiment(client, experiment, uri)
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
