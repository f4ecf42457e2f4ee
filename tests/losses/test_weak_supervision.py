"""WeakSupervisionLoss: one mechanism for every regime (weighted terms from config, hybrid routing)."""

import json

import pytest
import torch

from wss_monai.losses import (
    CrossEntropy,
    LogBarrierPenalty,
    PartialCrossEntropy,
    SizePenalty,
    WeakSupervisionLoss,
)

INF = float("inf")


def term(name, weight=1.0, **args):
    """A config entry naming its class by ``_target_``, as the bundle's regime tables do."""
    classes = {"partial_ce": "PartialCrossEntropy", "size": "SizePenalty", "entropy": "EntropyMinimization",
               "log_barrier": "LogBarrierPenalty"}
    return {"name": name, "weight": weight, "term": {"_target_": f"wss_monai.losses.{classes[name]}", **args}}


def table(*entries):
    """The dict form: name -> {weight, term}."""
    return {e["name"]: {"weight": e["weight"], "term": e["term"]} for e in entries}


def make_batch(b=4, c=2, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    probs = torch.softmax(logits, dim=1)
    label = torch.randint(0, c, (b, h, w), generator=g)
    weak = torch.full((b, h, w), 255)
    weak[:, 3:5, 3:5] = 1
    bounds = torch.zeros(b, c, 2, dtype=torch.float64)
    bounds[:, 0] = torch.tensor([0.0, INF])
    bounds[:, 1:] = torch.tensor([5.0, 12.0], dtype=torch.float64)
    return logits, probs, {"weak": weak, "bounds": bounds, "label": label, "volume": torch.arange(b)}


def test_total_is_the_weighted_sum_of_the_terms():
    _, probs, batch = make_batch()
    loss = WeakSupervisionLoss([term("partial_ce"), term("size", 0.01), term("entropy", 0.1)])
    total = loss(probs, batch)
    pce = PartialCrossEntropy()(probs, **batch)
    size = SizePenalty()(probs, **batch)
    from wss_monai.losses import EntropyMinimization

    ent = EntropyMinimization()(probs)
    assert total.item() == pytest.approx((pce + 0.01 * size + 0.1 * ent).item(), abs=1e-12)
    values = loss.terms()
    assert values["partial_ce"] == pytest.approx(pce.item()) and values["size"] == pytest.approx(size.item())
    assert values["total"] == pytest.approx(total.item())
    assert set(loss.last_values) == {"partial_ce", "size", "entropy", "total"}
    assert loss(probs, **batch).item() == total.item()  # keywords work the same as a dict


def test_hybrid_routing_full_ce_on_flagged_samples_and_weak_terms_on_the_rest():
    _, probs, batch = make_batch(b=5)
    full = torch.tensor([True, False, True, False, False])
    label = batch["label"].clone()
    label[~full] = 200  # garbage: would raise if a weak sample's full mask were read
    loss = WeakSupervisionLoss(table(term("partial_ce"), term("size", 0.01)), full_weight=1.0)
    total = loss(probs, {**batch, "label": label, "full": full})
    weak_idx = torch.tensor([1, 3, 4])
    sub = {"weak": batch["weak"][weak_idx], "bounds": batch["bounds"][weak_idx]}
    expected_ce = CrossEntropy()(probs[full], label=label[full])
    expected = expected_ce + PartialCrossEntropy()(probs[weak_idx], **sub) + 0.01 * SizePenalty()(probs[weak_idx], **sub)
    assert total.item() == pytest.approx(expected.item(), abs=1e-12)
    assert loss.terms()["full_ce"] == pytest.approx(expected_ce.item())
    with pytest.raises(ValueError, match="holds the value 200"):  # the garbage is really invalid
        CrossEntropy()(probs, label=label)


def test_hybrid_gradient_reaches_only_the_routed_terms():
    _, probs, batch = make_batch(b=3)
    probs = probs.clone().requires_grad_(True)
    loss = WeakSupervisionLoss([term("size")])
    full = torch.tensor([1, 0, 1])
    batch["bounds"][:, 1] = torch.tensor([0.0, 0.0], dtype=torch.float64)  # size pushes every weak sample
    loss(probs, {**batch, "full": full}).backward()
    assert torch.all(probs.grad[1, 1] != 0) and torch.all(probs.grad[1, 0] == 0)
    ce_grad = torch.autograd.grad(CrossEntropy()(probs[[0, 2]], label=batch["label"][[0, 2]]), probs)[0]
    assert torch.allclose(probs.grad[[0, 2]], ce_grad[[0, 2]])


def test_empty_subsets_and_empty_batch():
    _, probs, batch = make_batch(b=3)
    loss = WeakSupervisionLoss(table(term("partial_ce"), term("size", 0.01)))
    all_full = loss(probs, {**batch, "full": torch.ones(3, dtype=torch.bool)})
    assert all_full.item() == pytest.approx(CrossEntropy()(probs, label=batch["label"]).item())
    assert loss.terms()["size"] == 0.0
    all_weak = loss(probs, {**batch, "full": torch.zeros(3, dtype=torch.bool), "label": None})
    assert loss.terms()["full_ce"] == 0.0
    assert all_weak.item() == pytest.approx(loss(probs, weak=batch["weak"], bounds=batch["bounds"]).item())
    empty = loss(probs[:0], {k: v[:0] for k, v in batch.items()} | {"full": torch.zeros(0, dtype=torch.bool)})
    assert empty.item() == 0.0


def test_volume_mode_in_hybrid_batches():
    _, probs, batch = make_batch(b=6)
    volume = torch.tensor([4, 9, 4, 9, 2, 2])
    bounds = batch["bounds"].clone()
    bounds[:, 1] = torch.tensor([30.0, 60.0], dtype=torch.float64)
    loss = WeakSupervisionLoss([term("size", per_volume=True)])
    full = torch.tensor([0, 1, 0, 1, 0, 0]).bool()  # volume 9 is fully annotated
    total = loss(probs, {**batch, "bounds": bounds, "volume": volume, "full": full})
    keep = torch.tensor([0, 2, 4, 5])
    weak_part = SizePenalty(per_volume=True)(probs[keep], bounds=bounds[keep], volume=volume[keep])
    assert total.item() == pytest.approx(weak_part.item() + loss.terms()["full_ce"], abs=1e-12)
    with pytest.raises(ValueError, match=r"volume\(s\) \[4\]"):
        loss(probs, {**batch, "bounds": bounds, "volume": volume, "full": torch.tensor([1, 1, 0, 1, 0, 0]).bool()})


def test_built_from_json_text_file_and_dict_forms(tmp_path):
    _, probs, batch = make_batch()
    config = [term("partial_ce"), term("size", 0.01, per_volume=False)]
    reference = WeakSupervisionLoss(config)(probs, batch)
    path = tmp_path / "loss.json"
    path.write_text(json.dumps({"terms": config, "full_weight": 2.0}))
    for built in (
        WeakSupervisionLoss(json.dumps(config)),
        WeakSupervisionLoss(table(*config)),
        WeakSupervisionLoss([{"name": "partial_ce", "term": "wss_monai.losses.PartialCrossEntropy"},
                             {"name": "size", "weight": 0.01, "term": {"_target_": "wss_monai.losses.SizePenalty", "_mode_": "callable"}}]),
        WeakSupervisionLoss([{"name": "partial_ce", "term": PartialCrossEntropy()}, {"name": "size", "weight": 0.01, "term": SizePenalty}]),
        WeakSupervisionLoss.from_config(str(path)),
        WeakSupervisionLoss.from_config(json.dumps({"terms": config})),
    ):
        assert built(probs, batch).item() == pytest.approx(reference.item())
    assert WeakSupervisionLoss.from_config(path).full_weight == 2.0


def test_unknown_or_malformed_terms_give_clear_errors():
    with pytest.raises(ValueError, match="'sise': Cannot locate class or function path: 'wss_monai.losses.SisePenalty'"):
        WeakSupervisionLoss([{"name": "sise", "term": {"_target_": "wss_monai.losses.SisePenalty"}}])
    with pytest.raises(ValueError, match="no term"):
        WeakSupervisionLoss([{"name": "size"}])  # there is no registry of names: the class is named by _target_
    with pytest.raises(ValueError, match="_target_"):
        WeakSupervisionLoss([{"name": "size", "term": {"per_volume": True}}])
    with pytest.raises(ValueError, match="weight must be a number"):
        WeakSupervisionLoss([term("size", "high")])
    with pytest.raises(ValueError, match="unknown field"):
        WeakSupervisionLoss([{**term("size"), "wieght": 1}])
    with pytest.raises(ValueError, match="unknown field"):
        WeakSupervisionLoss([{"name": "size", "args": {"per_volume": True}, "term": "wss_monai.losses.SizePenalty"}])
    with pytest.raises(TypeError, match="bad args for wss_monai.losses.SizePenalty"):
        WeakSupervisionLoss([term("size", nope=1)])
    with pytest.raises(TypeError, match="must give an nn.Module"):
        WeakSupervisionLoss([{"name": "size", "term": {"_target_": "builtins.dict", "_mode_": "callable"}}])
    with pytest.raises(ValueError, match="JSON"):
        WeakSupervisionLoss("{not json")


def test_any_module_by_its_dotted_path_and_logging_keys():
    loss = WeakSupervisionLoss([{**term("size"), "key": "size_tags"}, term("size"), term("size"),
                                {"name": "mine", "term": {"_target_": "torch.nn.Identity"}}])
    assert loss.keys == ["size_tags", "size", "size_2", "mine"]
    assert isinstance(loss["mine"], torch.nn.Identity) and isinstance(loss["size_2"], SizePenalty)


def test_epoch_hooks_reach_the_log_barrier_and_logits_input():
    logits, probs, batch = make_batch()
    loss = WeakSupervisionLoss([term("log_barrier", 0.01)], softmax=True)
    loss.step_epoch()
    assert loss["log_barrier"].t == pytest.approx(5.5)
    loss.set_epoch(3)
    assert loss["log_barrier"].t == pytest.approx(5 * 1.1**3)
    barrier = LogBarrierPenalty()
    barrier.set_epoch(3)
    assert loss(logits, batch).item() == pytest.approx(0.01 * barrier(probs, **batch).item())


def test_monai_trainer_style_call_with_a_batch_dict():
    logits, _, batch = make_batch()
    loss = WeakSupervisionLoss(table(term("partial_ce")), softmax=True)
    value = loss(logits.float(), {"weak": batch["weak"]})  # loss_function(pred, target_dict)
    assert value.dim() == 0 and torch.isfinite(value)
    with pytest.raises(TypeError, match="batch dict"):
        loss(logits, batch["weak"])
