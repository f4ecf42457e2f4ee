"""Batch preparation for MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator`` (``prepare_batch``).

The trainer calls ``prepare_batch(batch, device, non_blocking)`` and then
``loss_function(network(inputs), targets)``: here ``inputs`` is the image and ``targets`` the dict
of named tensors the regime's :class:`~wss_monai.losses.WeakSupervisionLoss` reads (``weak``,
``bounds``, ``image``, ``volume``, ``spacing``, plus ``label``/``full`` when the regime uses full
masks). Only those keys are moved to the device, with ``non_blocking`` copies and no host
synchronisation; strings and unused keys stay behind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["PrepareWeakBatch", "PrepareEvalBatch", "as_tensor"]


def as_tensor(value: Any) -> Any:
    """A plain ``torch.Tensor`` (MONAI ``MetaTensor`` metadata dropped), other values unchanged."""
    if isinstance(value, torch.Tensor) and type(value) is not torch.Tensor:
        as_plain = getattr(value, "as_tensor", None)
        if callable(as_plain):
            return as_plain()
    return value


def _to(value: Any, device: Any, non_blocking: bool) -> Any:
    value = as_tensor(value)
    if isinstance(value, torch.Tensor) and device is not None:
        return value.to(device, non_blocking=non_blocking)
    return value


class PrepareWeakBatch:
    """``(image, {key: tensor})`` for training: the network input and the loss's batch dict.

    Args:
        keys: batch keys passed to the loss besides ``image`` (missing keys are skipped); a
            regime's :attr:`~wss_monai.regimes.RegimeSpec.batch_keys`.
        image_key: the network input.

    Example::

        prepare = PrepareWeakBatch(keys=("weak", "bounds", "volume"))
        inputs, targets = prepare(batch, torch.device("cpu"))
        loss = loss_fn(network(inputs), targets)
    """

    def __init__(self, keys: Sequence[str] = ("weak", "bounds", "volume", "spacing"), image_key: str = "image") -> None:
        if isinstance(keys, str):
            keys = (keys,)
        self.keys = tuple(k for k in keys if k != image_key)
        self.image_key = image_key

    def __call__(self, batchdata: Mapping[str, Any], device: Any = None, non_blocking: bool = False, **kwargs: Any):
        if not isinstance(batchdata, Mapping) or self.image_key not in batchdata:
            raise ValueError(f"{type(self).__name__}: expected a batch dict with the key '{self.image_key}', got {type(batchdata).__name__}.")
        image = _to(batchdata[self.image_key], device, non_blocking)
        targets: dict[str, Any] = {"image": image}
        for key in self.keys:
            if key in batchdata:
                targets[key] = _to(batchdata[key], device, non_blocking)
        return image, targets


class PrepareEvalBatch:
    """``(image, {"label", "volume", "slice", "volume_name"})`` for validation and test.

    ``label`` goes to the device (the metric compares it there with the prediction); the ids stay
    on the host.
    """

    def __init__(self, image_key: str = "image", label_key: str = "label") -> None:
        self.image_key = image_key
        self.label_key = label_key

    def __call__(self, batchdata: Mapping[str, Any], device: Any = None, non_blocking: bool = False, **kwargs: Any):
        if not isinstance(batchdata, Mapping) or self.image_key not in batchdata:
            raise ValueError(f"{type(self).__name__}: expected a batch dict with the key '{self.image_key}', got {type(batchdata).__name__}.")
        image = _to(batchdata[self.image_key], device, non_blocking)
        targets: dict[str, Any] = {}
        if self.label_key in batchdata:
            targets["label"] = _to(batchdata[self.label_key], device, non_blocking)
        for key in ("volume", "slice", "volume_name", "spacing"):
            if key in batchdata:
                targets[key] = as_tensor(batchdata[key])
        return image, targets
