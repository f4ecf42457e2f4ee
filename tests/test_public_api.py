"""The public names that users, bundles and docs rely on (the contract in DESIGN.md)."""

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


def test_every_registered_term_name_resolves_to_a_loss_class():
    for name in losses.TERM_REGISTRY:
        assert issubclass(losses.resolve_term(name), losses.LossTerm), name


def test_networks_of_the_papers_are_exported():
    assert {"ENet", "ResUNet"} <= set(networks.__all__)
