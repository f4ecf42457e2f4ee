"""Every term of Losses I: finite values and gradients on the hard cases (extreme logits, empty
weak labels, all-zero bounds, empty batch), float32 under autocast, and CPU/GPU agreement."""

import pytest
import torch

from wss_monai.losses import (
    CentroidPenalty,
    ClassProportionKL,
    ClassRatioPenalty,
    CrossEntropy,
    EntropyMinimization,
    LagrangianProposalLoss,
    LogBarrierPenalty,
    MomentPenalty,
    PartialCrossEntropy,
    SizePenalty,
    WeakSupervisionLoss,
)

TERMS = {
    "partial_ce": lambda: PartialCrossEntropy(),
    "cross_entropy": lambda: CrossEntropy(),
    "size": lambda: SizePenalty(),
    "size_3d": lambda: SizePenalty(per_volume=True),
    "log_barrier": lambda: LogBarrierPenalty(),
    "log_barrier_ref": lambda: LogBarrierPenalty(zero_lower_active=True, per_volume=True),
    "lagrangian": lambda: LagrangianProposalLoss(max_iter=50),
    "entropy": lambda: EntropyMinimization(),
    "class_proportion": lambda: ClassProportionKL(target=[0.8, 0.15, 0.05], form="bernoulli"),
    "class_ratio": lambda: ClassRatioPenalty(lower=0.1, upper=0.2),
    "centroid": lambda: CentroidPenalty(bounds=[[2.0, 3.0], [2.0, 3.0]]),
    "intensity": lambda: MomentPenalty("intensity", bounds=[[0.2, 0.4]]),
    "regime": lambda: WeakSupervisionLoss({
        "partial_ce": {"weight": 1.0, "term": {"_target_": "wss_monai.losses.PartialCrossEntropy"}},
        "size": {"weight": 0.01, "term": {"_target_": "wss_monai.losses.SizePenalty"}},
        "entropy": {"weight": 0.1, "term": {"_target_": "wss_monai.losses.EntropyMinimization"}},
    }),
}


def batch_for(b, c=3, h=8, w=8, bounds_value=None, weak_empty=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    weak = torch.full((b, h, w), 255)
    if not weak_empty:
        weak[:, 3:5, 3:5] = 1
        weak[:, 0, 0] = 2
    bounds = torch.zeros(b, c, 2)
    bounds[:, 0, 1] = float("inf")
    bounds[:, 1:] = torch.tensor([4.0, 20.0]) if bounds_value is None else torch.tensor(bounds_value)
    return {
        "weak": weak,
        "label": torch.randint(0, c, (b, h, w), generator=g),
        "bounds": bounds,
        "image": torch.rand(b, 1, h, w, generator=g),
        "volume": torch.arange(b) // 2,
    }


def run(name, logits, batch):
    logits = logits.clone().requires_grad_(True)
    value = TERMS[name]()(torch.softmax(logits, dim=1), **batch)
    value.backward()
    return value, logits.grad


@pytest.mark.parametrize("name", sorted(TERMS))
def test_extreme_logits(name):
    logits = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1)).sign() * 1e4
    logits[:, 1] = -1e4  # class 1 probability exactly 0 everywhere, class 0 or 2 exactly 1
    value, grad = run(name, logits, batch_for(4))
    assert value.dim() == 0 and torch.isfinite(value)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("name", sorted(TERMS))
def test_empty_weak_labels_and_all_zero_bounds(name):
    logits = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    value, grad = run(name, logits, batch_for(4, bounds_value=[0.0, 0.0], weak_empty=True))
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    if name == "partial_ce":
        assert value.item() == 0.0 and torch.all(grad == 0)


@pytest.mark.parametrize("name", sorted(TERMS))
def test_empty_batch(name):
    value, grad = run(name, torch.zeros(0, 3, 8, 8), batch_for(0))
    assert value.item() == 0.0 and grad.shape == (0, 3, 8, 8)


@pytest.mark.parametrize("name", sorted(TERMS))
def test_autocast_probabilities_are_summed_in_float32(name):
    logits = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    batch = batch_for(4)
    reference = TERMS[name]()(torch.softmax(logits, dim=1), **batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        probs = torch.softmax(logits.to(torch.bfloat16), dim=1).to(torch.bfloat16)
        value = TERMS[name]()(probs, **batch)
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(reference.item(), rel=0.05, abs=2e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(TERMS))
def test_gpu_matches_cpu(name):
    logits = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    batch = batch_for(4, h=16, w=16)
    cpu_value, cpu_grad = run(name, logits, batch)
    gpu_value, gpu_grad = run(name, logits.cuda(), {k: v.cuda() for k, v in batch.items()})
    assert gpu_value.device.type == "cuda"
    assert gpu_value.item() == pytest.approx(cpu_value.item(), rel=1e-4, abs=1e-6)
    assert torch.allclose(gpu_grad.cpu(), cpu_grad, rtol=1e-3, atol=1e-6)
