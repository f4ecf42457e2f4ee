"""Partial cross-entropy on K classes with annotated background (issue 13): the ACDC three-structure
case as data_prep writes it (class index on annotated pixels, background annotated as 0, 255 elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wss_monai.losses import PartialCrossEntropy


def scribbled_batch():
    """4 classes (background, RV, myocardium, LV), strokes of each and of the background, the rest 255."""
    weak = torch.full((2, 1, 16, 16), 255, dtype=torch.long)
    weak[0, 0, 2, 2:10] = 0
    weak[0, 0, 8, 4:8] = 1
    weak[0, 0, 10, 4:9] = 2
    weak[1, 0, 12, 3:6] = 3
    weak[1, 0, 1, :] = 0
    logits = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    return logits.softmax(dim=1), weak


def test_every_annotated_class_counts_background_included():
    probs, weak = scribbled_batch()
    label = weak[:, 0]
    annotated = label != 255
    expected = -torch.log(probs.gather(1, label.clamp(max=3).unsqueeze(1)).squeeze(1))[annotated].mean()
    assert PartialCrossEntropy()(probs, weak=weak) == pytest.approx(float(expected), rel=1e-6)


def test_unannotated_pixels_do_not_matter():
    probs, weak = scribbled_batch()
    other = probs.clone()
    for b in range(2):
        other[b, :, weak[b, 0] == 255] = torch.tensor([0.97, 0.01, 0.01, 0.01])[:, None]
    assert PartialCrossEntropy()(probs, weak=weak) == pytest.approx(float(PartialCrossEntropy()(other, weak=weak)), rel=1e-6)


def test_gradient_pushes_each_stroke_towards_its_class():
    _, weak = scribbled_batch()
    logits = torch.zeros(2, 4, 16, 16, requires_grad=True)
    PartialCrossEntropy()(logits.softmax(dim=1), weak=weak).backward()
    grad = logits.grad
    for cls, (b, row, col) in {0: (0, 2, 3), 1: (0, 8, 5), 2: (0, 10, 5), 3: (1, 12, 4)}.items():
        assert grad[b, cls, row, col] < 0  # descending raises the annotated class's logit
        assert all(grad[b, other, row, col] > 0 for other in range(4) if other != cls)
    for b in range(2):
        assert torch.count_nonzero(grad[b][:, weak[b, 0] == 255]) == 0


def test_a_prepared_acdc_weak_slice_is_valid_input():
    """uint8 slices as data_prep writes them (0..3 and 255) go straight in."""
    weak = np.full((16, 16), 255, dtype=np.uint8)
    weak[3, 3:9], weak[7, 2:6] = 0, 3
    probs = torch.full((1, 4, 16, 16), 0.25)
    loss = PartialCrossEntropy()(probs, weak=torch.from_numpy(weak.astype(np.int64))[None, None])
    assert float(loss) == pytest.approx(float(np.log(4.0)), rel=1e-6)
