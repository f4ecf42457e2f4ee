"""Suite-wide settings and fixtures.

Settings: deterministic, small, single-threaded torch so tests are quick on 2 cores.
Fixtures: the phantom raw datasets (``acdc_raw``, ``promise12_raw``, ``vertebral_raw``), small
and generated once per session; treat them as read-only (copy one before changing it).
"""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

try:
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
except ImportError:  # data_prep tests still run without torch
    pass


PHANTOM_CASES = {"acdc": 5, "promise12": 4, "vertebral": 3}


def _phantom(tmp_path_factory, dataset: str):
    from pipelines.testkit.phantoms import generate

    root = tmp_path_factory.mktemp(f"{dataset}_phantom") / "raw"
    return generate(dataset, root, cases=PHANTOM_CASES[dataset], seed=0, small=True)


@pytest.fixture(scope="session")
def acdc_raw(tmp_path_factory):
    """ACDC layout, small (about 60 x 64 x 7, 6-10 frames): training/patient001-005, groups NOR, MINF, DCM, HCM, RV."""
    return _phantom(tmp_path_factory, "acdc")


@pytest.fixture(scope="session")
def promise12_raw(tmp_path_factory):
    """PROMISE12 layout, small (48-64 square, 8-12 slices): Case00-03 spread over TrainingData_Part1/2/3."""
    return _phantom(tmp_path_factory, "promise12")


@pytest.fixture(scope="session")
def vertebral_raw(tmp_path_factory):
    """Vertebral-body layout, small (15 x 64 x 64): Img_01-03.nii and Img_01-03_Labels.nii."""
    return _phantom(tmp_path_factory, "vertebral")


@pytest.fixture(scope="session")
def prepare_tiny_acdc(acdc_raw):
    """``prepare_tiny_acdc(out, weak="erosion")``: the ACDC phantom prepared at 32 x 32, 1 validation and 1 test patient."""
    import contextlib
    import io

    from data_prep.cli import main

    def _prepare(out, weak: str = "erosion"):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(["acdc", "--src", str(acdc_raw), "--out", str(out), "--size", "32", "--val", "1", "--test", "1",
                         "--weak", weak])
        assert code == 0
        return out

    return _prepare
