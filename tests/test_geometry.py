"""wss_monai.geometry: the plan data_prep prepares with, and its inverse that inference maps results back with."""

import numpy as np
import pytest

from wss_monai.geometry import apply_plan, invert_plan, plan_inplane, restore_volume, stack_slices, take_slice


@pytest.mark.parametrize("mode", ["stretch", "pad-crop"])
def test_labels_round_trip_through_the_plan(mode):
    """Nearest-neighbour forward then inverse gives back a label map resampled up (pixel centres, no shift)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(20, 16, 5)).astype(np.uint8)
    plan = plan_inplane((20, 16), (1.0, 1.25), (40, 40), mode=mode)
    forward = apply_plan(labels, plan, (0, 1), order=0)
    assert forward.shape == (40, 40, 5)
    back = invert_plan(forward, plan, (0, 1), order=0)
    assert back.shape == labels.shape and np.array_equal(back, labels)


def test_restore_volume_stacks_along_the_slice_axis():
    volume = np.arange(4 * 6 * 3).reshape(4, 6, 3).astype(np.uint8)
    plan = plan_inplane((4, 3), (1.0, 1.0), (4, 3))
    slices = [take_slice(volume, 1, i) for i in range(6)]
    assert np.array_equal(stack_slices(slices, 1), volume)
    assert np.array_equal(restore_volume(slices, {"slice_axis": 1, "plan": plan.to_dict()}), volume)
