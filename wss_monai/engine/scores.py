"""The validation and test metric of the bundles: :class:`~wss_monai.metrics.VolumeScores` as an ignite metric.

Per iteration the prediction's argmax and the label stay on the device (uint8); the ids of the
slices are kept on the host. At the end of the pass everything is moved to the host once, gathered
across ranks under ``torch.distributed`` (duplicates from padded samplers dropped), stacked per
volume and scored: per-class 2D Dice with both empty-slice conventions, per-volume 3D Dice and
HD95 in mm with each volume's 3D spacing. Every score lands in ``engine.state.metrics`` with a
prefix (``val_dice_3d_mean``, ``val_dice_2d_nan_lv``, ``val_hd95_mean``...); the metric's own
name (the evaluator's key metric, ``val_dice_3d_mean``) holds the key score, with -1 for an
undefined (NaN) score so that model selection and the learning-rate schedule stay ordered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from ignite.metrics import Metric

from wss_monai.engine.distributed import world_size
from wss_monai.engine.errors import as_bool
from wss_monai.metrics import VolumeScores

__all__ = ["VolumeScoresMetric"]


def _ids(value: Any) -> list:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().reshape(-1).tolist()
    if isinstance(value, np.ndarray):
        return value.reshape(-1).tolist()
    return list(value)


class VolumeScoresMetric(Metric):
    """2D and 3D Dice and HD95 of a validation or test pass (see the module docstring).

    Args:
        num_classes: classes C, background included.
        class_names: names per class index (``{0: "background", 1: "lv"}``); metric-safe.
        spacing: volume name -> (row, column, slice distance) mm (``volume_spacing_3d``); without
            it the batch's in-plane ``spacing`` is used with 1 mm between slices.
        prefix: prepended to every score name (``val_``, ``test_``).
        key: the score returned as this metric's value (``dice_3d_mean``).
        hd95: compute HD95 (the slowest part).
        output_transform: maps ``engine.state.output`` to ``(pred_logits, targets_dict)``; the
            default reads MONAI's ``{"pred": logits, "label": {"label", "volume", "slice", ...}}``.

    After a pass, :attr:`last_scores` keeps the unaveraged per-volume arrays
    (:meth:`VolumeScores.scores`) and :attr:`last_volume_names` the volume names by id.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Mapping | None = None,
        spacing: Mapping[str, Any] | None = None,
        prefix: str = "val_",
        key: str = "dice_3d_mean",
        hd95: bool = True,
        output_transform: Callable | None = None,
    ) -> None:
        self.num_classes = int(num_classes)
        self.class_names = class_names
        self.spacing = {str(k): tuple(float(s) for s in v) for k, v in (spacing or {}).items()}
        self.prefix = str(prefix)
        self.key = str(key)
        self.hd95 = as_bool(hd95, "hd95")  # --hd95 false arrives as a string
        self.last_scores: dict[str, Any] | None = None
        self.last_summary: dict[str, float] | None = None
        self.last_volume_names: dict[int, str] = {}
        super().__init__(output_transform=output_transform or (lambda output: output))

    def reset(self) -> None:
        self._preds: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._volumes: list[int] = []
        self._slices: list[int] = []
        self._names: list[str] = []
        self._inplane: list[tuple[float, float]] = []

    def iteration_completed(self, engine: Engine) -> None:
        self.update(self._output_transform(engine.state.output))

    def update(self, output: Any) -> None:
        if isinstance(output, Mapping):
            pred, targets = output["pred"], output["label"]
        else:
            pred, targets = output
        if not isinstance(targets, Mapping) or "label" not in targets:
            raise ValueError(
                "VolumeScoresMetric needs the targets dict of PrepareEvalBatch (keys label, volume, slice); "
                f"got {type(targets).__name__}."
            )
        pred = torch.as_tensor(pred)
        labels = torch.as_tensor(targets["label"])
        if pred.dim() == 4:  # logits or probabilities (B, C, H, W)
            pred = pred.argmax(dim=1)
        dtype = torch.uint8 if self.num_classes <= 256 else torch.int32
        self._preds.append(pred.detach().to(dtype))
        self._labels.append(labels.detach().to(dtype) if labels.dim() == 3 else labels.detach()[:, 0].to(dtype))
        n = pred.shape[0]
        volumes = _ids(targets["volume"])
        slices = _ids(targets["slice"])
        names = list(targets.get("volume_name") or [str(v) for v in volumes])
        if not (len(volumes) == len(slices) == len(names) == n):
            raise ValueError(f"VolumeScoresMetric: batch of {n} predictions with {len(volumes)} volume ids and {len(slices)} slice ids.")
        self._volumes += [int(v) for v in volumes]
        self._slices += [int(s) for s in slices]
        self._names += [str(x) for x in names]
        spacing = targets.get("spacing")
        if spacing is not None:
            rows = torch.as_tensor(spacing).detach().cpu().reshape(n, -1).tolist()
            self._inplane += [(float(r[0]), float(r[1])) for r in rows]
        else:
            self._inplane += [(1.0, 1.0)] * n

    def _gathered(self) -> tuple[np.ndarray, np.ndarray, list[int], list[int], list[str], list[tuple[float, float]]]:
        preds = torch.cat(self._preds).cpu().numpy() if self._preds else np.zeros((0, 1, 1), np.uint8)
        labels = torch.cat(self._labels).cpu().numpy() if self._labels else np.zeros((0, 1, 1), np.uint8)
        local = (preds, labels, self._volumes, self._slices, self._names, self._inplane)
        world = world_size()
        if world == 1:
            return local
        import torch.distributed as dist

        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, local)
        seen: set[tuple[int, int]] = set()
        keep_p, keep_l, vols, slcs, names, inplane = [], [], [], [], [], []
        for p, l, v, s, nm, sp in parts:
            for i in range(len(v)):
                if (v[i], s[i]) in seen:  # a padded sampler repeats samples
                    continue
                seen.add((v[i], s[i]))
                keep_p.append(p[i])
                keep_l.append(l[i])
                vols.append(v[i])
                slcs.append(s[i])
                names.append(nm[i])
                inplane.append(sp[i])
        return np.stack(keep_p), np.stack(keep_l), vols, slcs, names, inplane

    def compute(self) -> dict[str, float]:
        preds, labels, volumes, slices, names, inplane = self._gathered()
        if len(volumes) == 0:
            raise ValueError("VolumeScoresMetric: no slices were scored (empty validation/test loader?).")
        spacing = np.array(
            [self.spacing.get(name, (row, col, 1.0)) for name, (row, col) in zip(names, inplane)], dtype=np.float64
        )
        scores = VolumeScores(self.num_classes, class_names=self.class_names, hd95=self.hd95)
        scores.update(preds, labels, volume=volumes, slice=slices, spacing=spacing)
        summary = scores.aggregate()
        self.last_scores = scores.scores()
        self.last_volume_names = {int(v): n for v, n in zip(volumes, names)}
        self.last_summary = {f"{self.prefix}{k}": float(v) for k, v in summary.items()}
        return self.last_summary

    def completed(self, engine: Engine, name: str) -> None:
        result = self.compute()
        engine.state.metrics.update(result)
        value = result.get(f"{self.prefix}{self.key}", float("nan"))
        # model selection needs an ordered value: an undefined score (no target anywhere) is -1
        engine.state.metrics[name] = value if np.isfinite(value) else -1.0
