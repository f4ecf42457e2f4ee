"""Regime weights that depend on the slice size carry the papers' 256 x 256 settings over."""

import pytest
import torch

from wss_monai.losses import SizePenalty
from wss_monai.regimes import LAMBDA, get_regime, size_weight


def _size_weight(name, image_size):
    return {t["name"]: t["weight"] for t in get_regime(name, image_size=image_size).terms}["size"]


@pytest.mark.parametrize("name", ["tags", "upper", "common", "individual", "volume3d", "hybrid_3", "individual+gated_crf"])
def test_the_papers_lambda_on_256_slices_and_scaled_with_the_area_elsewhere(name):
    assert _size_weight(name, None) == pytest.approx(LAMBDA)
    assert _size_weight(name, (256, 256)) == pytest.approx(1e-2)
    assert _size_weight(name, (64, 64)) == pytest.approx(0.16)
    assert _size_weight(name, (48, 48)) == pytest.approx(1e-2 * 65536 / 2304)
    assert _size_weight(name, (128, 64)) == pytest.approx(0.08)


def test_the_same_relative_size_error_costs_the_same_at_every_resolution():
    """Weighted penalty for a prediction of 1/8 of the slice against an upper bound of 1/16."""
    costs = []
    for side in (32, 48, 64, 256):
        hw = side * side
        probs = torch.zeros(1, 2, side, side)
        probs[:, 1].view(-1)[: hw // 8] = 1.0
        probs[:, 0] = 1.0 - probs[:, 1]
        bounds = torch.tensor([[[0.0, float("inf")], [0.0, hw / 16]]])
        value = SizePenalty()(probs, bounds=bounds)
        costs.append(size_weight((side, side)) * float(value))
    assert costs == pytest.approx([costs[-1]] * len(costs), rel=1e-5)


def test_log_barrier_and_lagrangian_weights_do_not_depend_on_the_slice_size():
    assert {t["name"]: t["weight"] for t in get_regime("logbarrier_individual", image_size=(48, 48)).terms}["log_barrier"] == LAMBDA
    assert [t["weight"] for t in get_regime("lagrangian_individual", image_size=(48, 48)).terms] == [1.0]
