"""Suite-wide settings: deterministic, small, single-threaded torch so tests are quick on 2 cores."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

try:
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
except ImportError:  # data_prep tests still run without torch
    pass


# -- Phantom raw datasets, generated once per session (tiny: a few small cases each) ------------

import pytest  # noqa: E402

PHANTOM_CASES = {"acdc": 5, "promise12": 4, "vertebral": 3}


def _phantom(tmp_path_factory, dataset: str):
    from data_prep.phantoms import generate

    root = tmp_path_factory.mktemp(f"{dataset}_phantom") / "raw"
    return generate(dataset, root, cases=PHANTOM_CASES[dataset], seed=0, small=True)


@pytest.fixture(scope="session")
def acdc_raw(tmp_path_factory):
    """ACDC layout, small: training/patient001-005 (one per group NOR, MINF, DCM, HCM, RV)."""
    return _phantom(tmp_path_factory, "acdc")


@pytest.fixture(scope="session")
def promise12_raw(tmp_path_factory):
    """PROMISE12 layout, small: Case00-03 spread over TrainingData_Part1/2/3."""
    return _phantom(tmp_path_factory, "promise12")


@pytest.fixture(scope="session")
def vertebral_raw(tmp_path_factory):
    """Vertebral-body layout, small (15 x 64 x 64): Img_01-03.nii and their _Labels.nii."""
    return _phantom(tmp_path_factory, "vertebral")
