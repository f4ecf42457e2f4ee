"""Fixtures of the pipeline tests: tiny phantoms, made once per session.

Every pipeline test trains real bundle runs, so the data are as small as the bundles accept
(4 patients or volumes, 32 x 32 slices) and every run is 1-2 epochs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the bundle runs the pipelines start inherit it


@pytest.fixture(scope="session")
def tiny_vertebral_raw(tmp_path_factory) -> Path:
    """A raw vertebral-body phantom: 4 small volumes, 2 for training (read-only: copy before changing)."""
    from pipelines.testkit.phantoms import generate

    return Path(generate("vertebral", tmp_path_factory.mktemp("tiny_vertebral") / "raw", cases=4, seed=0, small=True))


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory) -> Path:
    """A prepared 4-patient phantom at 32 x 32 (3 training patients, 1 validation)."""
    from pipelines.phantom_data import prepare_phantom

    return prepare_phantom(tmp_path_factory.mktemp("tiny_prepared"), cases=4, size=32, inplane=48, log=None)
