"""The public names that users, bundles and docs rely on (the loss contract in README.md, "Losses")."""

import inspect

import wss_monai.losses as losses
import wss_monai.networks as networks

CONTRACT_LOSSES = [
    "PartialCrossEntropy", "SizePenalty", "LogBarrierPenalty", "LagrangianProposalLoss",
    "EntropyMinimization", "ClassProportionKL", "CentroidPenalty",
    "DenseCRFLoss", "NormalizedCutLoss", "KernelCutLoss", "GatedCRFLoss", "WeakSupervisionLoss",
]


def test_every_contract_loss_is_importable_from_wss_monai_losses():
    missing = [name for name in CONTRACT_LOSSES if not hasattr(losses, name)]
    assert missing == []


def test_every_loss_term_takes_probs_and_the_batch_as_keywords():
    for name in CONTRACT_LOSSES:
        forward = inspect.signature(getattr(losses, name).forward)
        params = list(forward.parameters.values())
        assert params[1].name in ("probs", "logits", "pred"), name
        assert any(p.kind is p.VAR_KEYWORD for p in params), f"{name}.forward must accept the batch as **keywords"


def test_every_term_of_the_bundle_tables_is_a_public_loss_class_by_its_target():
    import json
    from pathlib import Path

    from monai.bundle import ConfigComponent

    config = json.loads((Path(__file__).parents[1] / "bundles" / "wss_segmentation" / "configs" / "train.json").read_text())
    tables = [spec["loss_terms"] for spec in config["regimes"].values() if "loss_terms" in spec] + [config["regularizers"]]
    targets = {entry["term"]["_target_"] for table in tables for entry in table.values()}
    assert targets and all(t.startswith("wss_monai.losses.") for t in targets)
    for target in targets:
        cls = ConfigComponent({"_target_": target, "_mode_": "callable"}).instantiate()  # the class itself
        assert issubclass(cls, losses.LossTerm) and cls.__name__ in CONTRACT_LOSSES + ["CrossEntropy"], target
    assert not any(hasattr(losses, name) for name in ("TERM_REGISTRY", "register_term", "resolve_term"))


def test_networks_of_the_papers_are_exported():
    assert {"ENet", "ResUNet"} <= set(networks.__all__)
