"""Fixtures for the data-layer tests: one small prepared ACDC phantom for the session.

``prepared_acdc`` is read-only (tests that damage files copy it first with ``copy_prepared``).
Layout: 5 phantom patients (two volumes each: ED and ES), 64 x 64 slices, 1 validation patient,
weak strategies erosion and random_disc, bounds tags/upper/common/individual/volume3d.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prepared_acdc(acdc_raw, tmp_path_factory) -> Path:
    from data_prep.cli import main

    out = tmp_path_factory.mktemp("data_layer") / "acdc_prepared"
    argv = ["acdc", "--src", str(acdc_raw), "--out", str(out), "--size", "64", "--val", "1", "--test", "0",
            "--weak", "erosion,random_disc", "--seed", "0"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(argv)
    assert code == 0, err.getvalue()
    return out


@pytest.fixture(scope="session")
def manifest(prepared_acdc) -> dict:
    return json.loads((prepared_acdc / "dataset.json").read_text())


@pytest.fixture()
def copy_prepared(prepared_acdc, tmp_path):
    """A private copy of the prepared dataset, for tests that delete or corrupt files."""

    def copy() -> Path:
        target = tmp_path / "prepared_copy"
        shutil.copytree(prepared_acdc, target)
        return target

    return copy
