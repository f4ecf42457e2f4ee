"""Fixtures of the engine tests that train through a bundle: a tiny prepared phantom and bundle runners.

- ``tiny_prepared``: the session's ACDC phantom (tests/conftest.py, read-only) prepared at 32 x 32 with
  1 validation and 1 test patient (3 training patients: 6 iterations of 8 slices per epoch).
- ``bundle_cli``: ``python -m monai.bundle run ...`` as a child process (its own process group),
  from the repository root, one torch thread: ``bundle_cli(args, env=...)`` -> Popen.
- ``bundle_in_process``: the same run in this process (``monai.bundle.scripts.run``), one torch thread.
- ``engine_mlflow_db``: one SQLite MLflow store for these tests (creating MLflow's tables takes seconds).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wss_monai.processes import preexec_supervised_child

REPO = Path(__file__).resolve().parents[2]
TRAIN_2D = "bundles/wss_segmentation/configs/train.json"


@pytest.fixture(scope="session")
def tiny_prepared(prepare_tiny_acdc, tmp_path_factory) -> Path:
    return prepare_tiny_acdc(tmp_path_factory.mktemp("engine") / "prepared_acdc", weak="erosion")


@pytest.fixture(scope="session")
def engine_mlflow_db(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('engine_mlflow') / 'mlruns.db'}"


@pytest.fixture()
def bundle_cli():
    def _start(args, env=None, **popen) -> subprocess.Popen:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", **(env or {})}
        command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", TRAIN_2D, *map(str, args)]
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.STDOUT)
        return subprocess.Popen(command, cwd=REPO, text=True, encoding="utf-8", errors="replace", env=full_env, start_new_session=True,
                                preexec_fn=preexec_supervised_child(), **popen)  # answers SIGINT even if pytest ignores it

    return _start


@pytest.fixture()
def bundle_in_process():
    """``bundle_in_process(**overrides)``: train.json of wss_segmentation run here (no logging.conf), one torch thread."""
    import torch
    from monai.bundle.scripts import run

    before = torch.get_num_threads()
    torch.set_num_threads(1)

    def _run(**overrides):
        overrides.setdefault("progress", False)
        overrides.setdefault("log_model", False)  # seconds per run on 2 cores; test_run_content.py logs one
        return run(config_file=str(REPO / TRAIN_2D), meta_file=str(REPO / "bundles/wss_segmentation/configs/metadata.json"),
                   logging_file=False, **overrides)

    yield _run
    torch.set_num_threads(before)
