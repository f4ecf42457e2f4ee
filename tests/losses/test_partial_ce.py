"""Partial cross-entropy: -mean log p over the annotated pixels of the batch (MedIA 2019 sec. 4.3.1)."""

import math

import pytest
import torch
import torch.nn.functional as F

from wss_monai.losses import CrossEntropy, PartialCrossEntropy


def slow_partial_ce(probs, label, classes=None, eps=1e-10):
    """The obvious formula: loop over images and pixels, mean of -log p of the annotated ones."""
    b, _, h, w = probs.shape
    total, count = 0.0, 0
    for n in range(b):
        for i in range(h):
            for j in range(w):
                y = int(label[n, i, j])
                if y == 255 or (classes is not None and y not in classes):
                    continue
                total += -math.log(max(float(probs[n, y, i, j]), eps))
                count += 1
    return total / max(count, 1)


def random_case(b=3, c=3, h=5, w=6, seed=0, annotated=0.3):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(b, c, h, w, generator=g, dtype=torch.float64) * 2, dim=1)
    label = torch.randint(0, c, (b, h, w), generator=g)
    weak = torch.where(torch.rand(b, h, w, generator=g) < annotated, label, torch.full_like(label, 255))
    return probs, weak, label


@pytest.mark.parametrize("classes", [None, [1], [1, 2]])
def test_equals_the_slow_formula(classes):
    probs, weak, _ = random_case()
    value = PartialCrossEntropy(classes=classes)(probs, weak=weak)
    assert value.dtype == torch.float64 and value.dim() == 0
    assert value.item() == pytest.approx(slow_partial_ce(probs, weak, classes), abs=1e-6)


def test_full_mask_gives_the_ordinary_cross_entropy():
    probs, _, label = random_case()
    expected = F.nll_loss(torch.log(probs), label)
    assert CrossEntropy()(probs, label=label).item() == pytest.approx(expected.item(), abs=1e-9)
    assert PartialCrossEntropy(label_key="label")(probs, label=label).item() == pytest.approx(expected.item(), abs=1e-9)
    assert PartialCrossEntropy()(probs, weak=label).item() == pytest.approx(expected.item(), abs=1e-9)


def test_gradient_matches_finite_differences():
    probs, weak, _ = random_case(b=2, c=2, h=3, w=4)
    probs = probs.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: PartialCrossEntropy()(p, weak=weak), (probs,))
    assert torch.autograd.gradcheck(lambda p: PartialCrossEntropy(classes=[1])(p, weak=weak), (probs,))


def test_reductions():
    probs, weak, _ = random_case()
    term = PartialCrossEntropy(reduction="none")
    per_pixel = term(probs, weak=weak)
    assert per_pixel.shape == weak.shape
    assert torch.all(per_pixel[weak == 255] == 0)
    total = PartialCrossEntropy(reduction="sum")(probs, weak=weak)
    assert total.item() == pytest.approx(per_pixel.sum().item())
    mean = PartialCrossEntropy()(probs, weak=weak)
    assert mean.item() == pytest.approx(total.item() / int((weak != 255).sum()))
    with pytest.raises(ValueError, match="reduction"):
        PartialCrossEntropy(reduction="avg")


def test_extreme_logits_give_finite_loss_and_gradient():
    logits = torch.tensor([1e4, -1e4]).view(1, 2, 1, 1).repeat(2, 1, 4, 4).requires_grad_(True)
    weak = torch.full((2, 4, 4), 255)
    weak[:, 0, 0] = 1  # the class whose probability is exactly 0
    weak[:, 1, 1] = 0
    value = PartialCrossEntropy()(torch.softmax(logits, dim=1), weak=weak)
    value.backward()
    assert torch.isfinite(value) and value.item() > 10
    assert torch.isfinite(logits.grad).all()


def test_empty_weak_label_gives_zero_with_zero_gradient():
    probs = torch.softmax(torch.randn(2, 2, 4, 4), dim=1).requires_grad_(True)
    value = PartialCrossEntropy()(probs, weak=torch.full((2, 4, 4), 255))
    value.backward()
    assert value.item() == 0.0
    assert torch.all(probs.grad == 0)


def test_channel_first_labels_and_empty_batch():
    probs, weak, _ = random_case()
    a = PartialCrossEntropy()(probs, weak=weak)
    b = PartialCrossEntropy()(probs, weak=weak.unsqueeze(1))
    assert a.item() == b.item()
    empty = PartialCrossEntropy()(torch.zeros(0, 2, 4, 4), weak=torch.zeros(0, 4, 4, dtype=torch.long))
    assert empty.item() == 0.0


def test_clear_errors_name_the_batch_key():
    probs, weak, _ = random_case()
    with pytest.raises(ValueError, match="'weak'"):
        PartialCrossEntropy()(probs)
    with pytest.raises(ValueError, match="'weak'.*shape"):
        PartialCrossEntropy()(probs, weak=weak[:, :2])
    bad = weak.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match="'weak' holds the value 7"):
        PartialCrossEntropy()(probs, weak=bad)
    with pytest.raises(ValueError, match="'label'"):
        CrossEntropy()(probs, weak=weak)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        PartialCrossEntropy()(probs[0], weak=weak)
