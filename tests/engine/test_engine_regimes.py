"""wss_monai.regimes: names -> data and loss of a regime, the papers' weights, clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from wss_monai.regimes import (
    BASE_REGIMES,
    REGULARIZERS,
    UnknownRegimeError,
    dense_crf_weight,
    get_regime,
    regime_names,
)

CONTRACT = ["full", "partial", "tags", "upper", "common", "individual", "volume3d", "lagrangian_tags",
            "lagrangian_common", "lagrangian_individual", "logbarrier_individual"]


def test_contract_names_exist():
    assert set(CONTRACT) <= set(BASE_REGIMES)
    for name in CONTRACT + ["hybrid_5", "full_10", "individual+gated_crf", "partial+dense_crf", "partial+kernel_cut",
                            "partial+entropy", "partial+normalized_cut", "individual+gated_crf+entropy"]:
        assert get_regime(name).name == name


@pytest.mark.parametrize(
    "name,bounds,sampling,full,full_patients,terms",
    [
        ("full", None, "slices", True, 0, [("cross_entropy", 1.0)]),
        ("partial", None, "slices", False, 0, [("partial_ce", 1.0)]),
        ("tags", "tags", "slices", False, 0, [("partial_ce", 1.0), ("size", 0.01)]),
        ("upper", "upper", "slices", False, 0, [("partial_ce", 1.0), ("size", 0.01)]),
        ("common", "common", "slices", False, 0, [("partial_ce", 1.0), ("size", 0.01)]),
        ("individual", "individual", "slices", False, 0, [("partial_ce", 1.0), ("size", 0.01)]),
        ("lagrangian_tags", "tags", "slices", False, 0, [("lagrangian", 1.0)]),
        ("lagrangian_individual", "individual", "slices", False, 0, [("lagrangian", 1.0)]),
        ("logbarrier_individual", "individual", "slices", False, 0, [("partial_ce", 1.0), ("log_barrier", 0.01)]),
        ("volume3d", "volume3d", "volume", False, 0, [("partial_ce", 1.0), ("size", 0.01)]),
        ("hybrid_7", "common", "hybrid", False, 7, [("partial_ce", 1.0), ("size", 0.01)]),
        ("full_3", None, "slices", True, 3, [("cross_entropy", 1.0)]),
    ],
)
def test_regime_table(name, bounds, sampling, full, full_patients, terms):
    spec = get_regime(name)
    assert (spec.bounds, spec.sampling, spec.full, spec.full_patients) == (bounds, sampling, full, full_patients)
    assert [(t["name"], t["weight"]) for t in spec.terms] == terms
    assert spec.routing == name.startswith("hybrid_")
    assert spec.dataloader_kwargs() == {"weak": None, "bounds": bounds, "sampling": sampling,
                                        "full_patients": full_patients, "full": full}
    if name == "volume3d":
        assert spec.to_dict()["terms"][1]["args"] == {"per_volume": True, "volume_size": "mean"}  # the mean slice size (see SizePenalty)
    assert ("label" in spec.batch_keys) == (full or spec.routing)
    assert ("full" in spec.batch_keys) == spec.routing


def _last(name, **kwargs):
    term = get_regime(name, **kwargs).to_dict()["terms"][-1]
    return {"name": term["name"], "weight": term["weight"], "args": term["args"]}


def test_regularizer_weights_from_the_papers():
    gated = _last("individual+gated_crf")
    assert gated == {"name": "gated_crf", "weight": 0.1, "args": {"kernels": [{"weight": 1.0, "xy": 6.0, "image": 0.1}], "radius": 5}}
    assert _last("partial+entropy") == {"name": "entropy", "weight": 0.1, "args": {}}
    crf = _last("partial+dense_crf", image_size=(256, 256))
    assert crf["weight"] == pytest.approx(2e-9 * 128 * 128) == pytest.approx(dense_crf_weight((256, 256)))
    assert crf["args"] == {"sigma_xy": 80.0, "sigma_intensity": pytest.approx(15 / 255), "scale_factor": 0.5}
    assert _last("partial+dense_crf")["weight"] == crf["weight"]  # 256 x 256 by default
    assert _last("partial+dense_crf", image_size=(64, 32))["weight"] == pytest.approx(2e-9 * 32 * 16)
    kc = _last("partial+kernel_cut", image_size=(256, 256))
    assert kc["weight"] == crf["weight"] and kc["weight"] * kc["args"]["gamma"] == pytest.approx(0.1)
    assert _last("partial+normalized_cut")["weight"] == 0.1
    combo = get_regime("individual+gated_crf+entropy")
    assert combo.regularizers == ("gated_crf", "entropy") and [t["name"] for t in combo.terms][-2:] == ["gated_crf", "entropy"]


@pytest.mark.parametrize(
    "name,fragment",
    [
        ("individul", "no base regime 'individul'"),
        ("individual+crf", "no regularizer 'crf'"),
        ("hybrid_0", "n >= 1"),
        ("full_0", "n >= 1"),
        ("hybrid_x", "no base regime"),
        ("", "empty"),
        ("partial+entropy+entropy", "given twice"),
    ],
)
def test_unknown_names_list_the_valid_ones(name, fragment):
    with pytest.raises(UnknownRegimeError) as caught:
        get_regime(name)
    message = str(caught.value)
    assert fragment in message
    for valid in ("individual", "hybrid_<n>", "full_<n>", "<regime>+<regularizer>", *REGULARIZERS):
        assert valid in message
    assert isinstance(caught.value, ValueError)


def test_one_bundle_runs_every_regime():
    for name in ("volume3d+entropy", "hybrid_3", "full_3", "full", "individual"):
        assert get_regime(name).bundle == "wss_segmentation"
    assert "hybrid_<n>" in regime_names()


def _batch(b=4, c=2, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(b, h, w, dtype=torch.int64)
    label[:, 4:10, 5:11] = 1
    weak = torch.full((b, h, w), 255, dtype=torch.int64)
    weak[:, 6:8, 7:9] = 1
    bounds = torch.tensor([[0.0, math.inf], [30.0, 40.0]]).expand(b, c, 2).clone()
    return {
        "image": torch.rand(b, 1, h, w, generator=g),
        "weak": weak,
        "label": label,
        "bounds": bounds,
        "volume": torch.tensor([0, 0, 1, 1]),
        "spacing": torch.ones(b, 2),
        "full": torch.tensor([True, True, False, False]),
    }


@pytest.mark.parametrize("name", [*BASE_REGIMES, "hybrid_2", "full_2", *[f"partial+{r}" for r in REGULARIZERS]])
def test_every_regime_loss_takes_logits_and_the_batch(name):
    spec = get_regime(name, image_size=(16, 16))
    loss = spec.build_loss()
    batch = _batch()
    targets = {k: v for k, v in batch.items() if k in (*spec.batch_keys, "image")}
    logits = torch.randn(4, 2, 16, 16, requires_grad=True)
    value = loss(logits, targets)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    expected = {t["name"] for t in spec.terms} | {"total"} | ({"full_ce"} if spec.routing else set())
    assert set(loss.terms()) == expected


def test_loss_terms_override():
    from wss_monai.losses import EntropyMinimization, PartialCrossEntropy

    spec = get_regime("individual").with_terms({"partial_ce": {"weight": 1.0, "term": PartialCrossEntropy},
                                                 "entropy": {"weight": 0.5, "term": EntropyMinimization}})
    loss = spec.build_loss()
    assert loss.keys == ["partial_ce", "entropy"] and loss.weights["entropy"] == 0.5
