"""Fixtures of the bundle tests: a tiny prepared phantom, a shared MLflow store, bundle runners.

- ``prepared_acdc``: the session's ACDC phantom (tests/conftest.py, read-only) prepared at 32 x 32
  with 1 validation and 1 test patient (3 training patients, 2 volumes of 7-9 slices each).
- ``mlflow_db``: one SQLite store for the session (creating MLflow's tables takes seconds).
- ``run_bundle``: ``python -m monai.bundle run`` in this process (``monai.bundle.scripts.run``).
- ``cli``: the same as a real subprocess, from the repository root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
BUNDLE = "wss_segmentation"
BUNDLE_NAMES = (BUNDLE,)


def bundle_of(regime: str) -> str:
    return BUNDLE


def config(bundle: str, name: str) -> str:
    return str(BUNDLES / bundle / "configs" / name)


@pytest.fixture(scope="session")
def prepared_acdc(prepare_tiny_acdc, tmp_path_factory) -> Path:
    return prepare_tiny_acdc(tmp_path_factory.mktemp("bundles") / "prepared_acdc", weak="erosion,random_disc")


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlruns.db'}"


@pytest.fixture()
def run_bundle():
    """``run_bundle(bundle, file, **overrides)``: a bundle config run in this process (no logging.conf).

    ``evaluate.json`` is an overlay: it runs as ``[train.json, evaluate.json]``."""
    from monai.bundle.scripts import run

    def _run(bundle: str, file: str = "train.json", **overrides):
        if file == "train.json":
            overrides.setdefault("progress", False)
            overrides.setdefault("log_model", False)  # seconds per run on 2 cores; tests/engine/test_run_content.py logs one
        if file == "evaluate.json":
            file = [config(bundle, "train.json"), config(bundle, "evaluate.json")]
        files = file if isinstance(file, list) else config(bundle, file)
        return run(config_file=files, meta_file=config(bundle, "metadata.json"), logging_file=False, **overrides)

    return _run


@pytest.fixture()
def cli():
    """``cli(args, cwd=...)``: ``python -m monai.bundle ARGS`` as a subprocess -> CompletedProcess."""

    def _cli(args, cwd=REPO, timeout=300, env=None):
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
        return subprocess.run([sys.executable, "-m", "monai.bundle", *map(str, args)], cwd=cwd, capture_output=True,
                              text=True, encoding="utf-8", errors="replace", timeout=timeout, env=full_env)

    return _cli


def run_info(output_dir) -> dict:
    return json.loads((Path(output_dir) / "run.json").read_text())


def mlflow_run(tracking_uri: str, run_id: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri).get_run(run_id)


class Helpers:
    """Handed out by the ``helpers`` fixture (test modules need no import of this file)."""

    REPO = REPO
    BUNDLES = BUNDLES
    BUNDLE_NAMES = BUNDLE_NAMES
    bundle_of = staticmethod(bundle_of)
    config = staticmethod(config)
    run_info = staticmethod(run_info)
    mlflow_run = staticmethod(mlflow_run)


@pytest.fixture()
def helpers() -> type[Helpers]:
    return Helpers


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The bundle tests run tiny networks: one thread is as fast, and robust on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
