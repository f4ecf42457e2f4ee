"""VolumeScores: slice predictions accumulated per volume and summarised as 2D Dice, 3D Dice and HD95."""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from wss_monai.metrics.dice import confusion_counts, dice_from_counts
from wss_monai.metrics.distance import hd95_mm
from wss_monai.metrics.labels import MISSING_HD_CONVENTIONS, _as_slices, _check_empty, _check_pair


def _nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Mean that ignores NaN and is NaN (without a RuntimeWarning) when everything is NaN."""
    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _class_names(class_names: Mapping | Sequence[str] | None, num_classes: int) -> list[str]:
    """Metric-name-safe class names, index c -> name (``c1`` when none is given)."""
    names = [f"c{c}" for c in range(num_classes)]
    if class_names is None:
        return names
    items = class_names.items() if isinstance(class_names, Mapping) else enumerate(class_names)
    for key, name in items:  # dataset.json writes {"0": "background", "1": "lv"}
        c = int(key)
        if 0 <= c < num_classes:
            names[c] = re.sub(r"[^0-9A-Za-z_]+", "_", str(name)).strip("_") or names[c]
    if len(set(names)) != num_classes:
        raise ValueError(f"class names must be distinct once made metric-safe, got {names}.")
    return names


class VolumeScores:
    """Accumulate slice predictions of a validation set and score them in 2D and 3D.

    Slices arrive in batches with the id of their volume and their index in it; the slices of
    one volume may be spread over several batches in any order. :meth:`aggregate` stacks them
    per volume (axis 0 = slice index) and returns one flat dict of floats:

    - ``dice_2d_<conv>_<class>`` and ``dice_2d_<conv>_mean``: per-slice Dice averaged over all
      slices, for each empty-slice convention in ``conventions`` (default both ``one`` and
      ``nan``, see :func:`dice_2d`); NaN slices are left out of the average;
    - ``dice_3d_<class>``, ``dice_3d_mean``: per-volume Dice averaged over volumes;
    - ``hd95_<class>``, ``hd95_mean``: per-volume HD95 in mm averaged over the volumes where
      it is defined (see :func:`hd95_mm` and ``hd95_missing``);
    - ``n_slices``, ``n_volumes``.

    ``_mean`` is the mean over classes (foreground only unless ``include_background``) of the
    per-class averages. ``<class>`` is the class name (``class_names``, e.g. the ``labels`` of
    dataset.json) or ``c<index>``. :meth:`scores` gives the unaveraged per-slice and
    per-volume arrays behind these numbers.

    Args:
        num_classes: number of classes C, background included.
        class_names: names per class index, a sequence or a mapping such as {"1": "lv"}.
        include_background: include class 0 in the per-class keys and means.
        conventions: empty-slice conventions reported for 2D Dice.
        empty_3d: convention for a class absent from a whole volume (default ``"nan"``).
        hd95: compute HD95 (the costliest part: a distance computation per volume and class).
        hd95_missing: ``"nan"`` or ``"diagonal"``, see :func:`hd95_mm`.

    Example::

        scores = VolumeScores(num_classes=2, class_names={"1": "lv"})
        for batch in val_loader:
            pred = model(batch["image"]).argmax(1)
            scores.update(pred, batch["label"], volume=batch["volume"], slice=batch["slice"],
                          spacing=batch["spacing"])
        summary = scores.aggregate()      # {"dice_2d_one_lv": ..., "dice_3d_mean": ..., ...}
        scores.reset()
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Mapping | Sequence[str] | None = None,
        include_background: bool = False,
        conventions: Sequence[str] = ("one", "nan"),
        empty_3d: str = "nan",
        hd95: bool = True,
        hd95_missing: str = "nan",
    ):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background and one class), got {num_classes}.")
        for convention in (*conventions, empty_3d):
            _check_empty(convention)
        if hd95_missing not in MISSING_HD_CONVENTIONS:
            raise ValueError(f"hd95_missing must be one of {MISSING_HD_CONVENTIONS}, got {hd95_missing!r}.")
        self.num_classes = num_classes
        self.class_names = _class_names(class_names, num_classes)
        self.include_background = include_background
        self.conventions = tuple(conventions)
        self.empty_3d = empty_3d
        self.hd95 = hd95
        self.hd95_missing = hd95_missing
        self.reset()

    def reset(self) -> None:
        """Forget every slice seen so far (call it before each validation pass)."""
        # volume id -> slice index -> (pred, target), and volume id -> spacing (row, col, slice)
        self._slices: dict[Any, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        self._spacing: dict[Any, tuple[float, float, float]] = {}
        self._spacing_guessed = False

    @staticmethod
    def _ids(values: Any, n: int, name: str) -> list:
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().tolist()
        values = np.asarray(values).reshape(-1).tolist()
        if len(values) != n:
            raise ValueError(f"{name} must hold one value per slice of the batch ({n}), got {len(values)}.")
        return values

    def update(self, pred: Any, target: Any, volume: Any, slice: Any, spacing: Any = None) -> None:  # noqa: A002
        """Add a batch of slices.

        Args:
            pred: predicted labels (B, H, W) or (B, 1, H, W).
            target: true labels, same shape.
            volume: (B,) volume id of each slice.
            slice: (B,) index of each slice in its volume.
            spacing: (B, 3) mm per pixel as (row, column, slice distance), i.e. the slice's two
                array axes then the stacking axis; one (3,) spacing for the whole batch; or
                the list of three (B,) tensors that torch's default collate makes of it.
                (B, 2) or None gives 1 mm for what is missing (HD95 is then partly in pixels,
                with a warning). The first spacing seen for a volume is used for all of it.
        """
        pred, target = _as_slices(pred, "pred"), _as_slices(target, "target")
        _check_pair(pred, target, self.num_classes)
        n = pred.shape[0]
        volumes = self._ids(volume, n, "volume")
        indices = [int(i) for i in self._ids(slice, n, "slice")]
        spacings = self._batch_spacing(spacing, n)
        for b in range(n):
            slices = self._slices.setdefault(volumes[b], {})
            if indices[b] in slices:
                raise ValueError(f"slice {indices[b]} of volume {volumes[b]!r} was given twice.")
            if slices and next(iter(slices.values()))[0].shape != pred[b].shape:
                raise ValueError(f"the slices of volume {volumes[b]!r} differ in shape.")
            # uint8 copies: the caller's buffers may be reused, and labels fit in a byte
            dtype = np.uint8 if self.num_classes <= 256 else np.int32
            slices[indices[b]] = (pred[b].astype(dtype), target[b].astype(dtype))
            self._spacing.setdefault(volumes[b], spacings[b])

    def _batch_spacing(self, spacing: Any, n: int) -> list[tuple[float, float, float]]:
        if spacing is None:
            self._spacing_guessed = True
            return [(1.0, 1.0, 1.0)] * n
        if isinstance(spacing, (list, tuple)) and spacing and all(
            isinstance(s, torch.Tensor) and s.ndim == 1 for s in spacing
        ):
            # torch's default collate turns a per-sample [row, col, slice] list into one (B,)
            # tensor per component: put the components back on the last axis
            spacing = torch.stack([s.detach().cpu() for s in spacing], dim=1)
        if isinstance(spacing, torch.Tensor):
            spacing = spacing.detach().cpu().numpy()
        spacing = np.asarray(spacing, dtype=np.float64)
        if spacing.ndim == 1:
            spacing = np.broadcast_to(spacing, (n, spacing.shape[0]))  # one spacing for the batch
        if spacing.ndim != 2 or spacing.shape[0] != n or spacing.shape[1] not in (2, 3):
            raise ValueError(f"spacing must have shape (B, 3) or (B, 2) with B={n}, got {spacing.shape}.")
        if spacing.shape[1] == 2:
            self._spacing_guessed = True
            spacing = np.concatenate([spacing, np.ones((n, 1))], axis=1)
        return [tuple(float(s) for s in row) for row in spacing]

    def volumes(self) -> dict[Any, tuple[np.ndarray, np.ndarray, tuple[float, float, float]]]:
        """Stacked volumes: id -> (pred (D, H, W), target (D, H, W), spacing for (D, H, W) axes).

        Slice ``i`` of a volume lands at depth ``i - first index``; missing indices (a gap) are
        filled with background in both maps, with a warning, since 3D distances cross them.
        """
        stacked = {}
        for vid in sorted(self._slices, key=str):
            slices = self._slices[vid]
            first, last = min(slices), max(slices)
            if len(slices) != last - first + 1:
                warnings.warn(
                    f"volume {vid!r} lacks {last - first + 1 - len(slices)} slice(s) between {first} and {last}; "
                    "they count as background.",
                    stacklevel=2,
                )
            shape = (last - first + 1, *next(iter(slices.values()))[0].shape)
            pred = np.zeros(shape, dtype=np.uint8 if self.num_classes <= 256 else np.int32)
            target = np.zeros_like(pred)
            for index, (p, t) in slices.items():
                pred[index - first], target[index - first] = p, t
            row, col, depth = self._spacing[vid]
            stacked[vid] = (pred, target, (depth, row, col))
        return stacked

    def _classes(self) -> range:
        return range(0 if self.include_background else 1, self.num_classes)

    def _per_class(self, prefix: str, per_class: np.ndarray) -> dict[str, float]:
        """``<prefix>_<class>`` for each scored class and ``<prefix>_mean`` over them."""
        out = {f"{prefix}_{self.class_names[c]}": float(per_class[c]) for c in self._classes()}
        out[f"{prefix}_mean"] = float(_nanmean(per_class[list(self._classes())]))
        return out

    def scores(self) -> dict[str, Any]:
        """Unaveraged scores of everything received since the last :meth:`reset`.

        Returns:
            a dict with ``volume`` (V,) ids, ``dice_3d`` (V, C), ``hd95`` (V, C) in mm (absent
            if ``hd95=False``), ``slice_volume`` (N,) and ``slice_index`` (N,) of every slice
            received, and ``dice_2d_<convention>`` (N, C) for each convention. Column c is
            class c. Use it for per-volume tables and plots; :meth:`aggregate` averages it.
        """
        if not self._slices:
            raise ValueError("VolumeScores has no slices: call update() before scoring.")
        stacked = self.volumes()
        slice_counts, volume_counts, slice_volume, slice_index = [], [], [], []
        for vid, (pred, target, _) in stacked.items():
            counts = confusion_counts(pred, target, self.num_classes)
            # rows of gap-filled slices are not slices anybody predicted: leave them out of 2D
            slice_counts.append(counts[self._real_slice_mask(vid)])
            volume_counts.append(counts.sum(axis=0))
            indices = sorted(self._slices[vid])
            slice_volume += [vid] * len(indices)
            slice_index += indices
        slice_counts = np.concatenate(slice_counts)
        out: dict[str, Any] = {
            "volume": np.array(list(stacked)),
            "slice_volume": np.array(slice_volume),
            "slice_index": np.array(slice_index),
            "dice_3d": dice_from_counts(np.stack(volume_counts), empty=self.empty_3d),
        }
        for convention in self.conventions:
            out[f"dice_2d_{convention}"] = dice_from_counts(slice_counts, empty=convention)
        if self.hd95:
            if self._spacing_guessed:
                warnings.warn(
                    "some slices came without (row, column, slice) spacing: 1 mm was assumed, "
                    "so HD95 is partly in pixels.",
                    stacklevel=3,
                )
            out["hd95"] = np.stack(
                [
                    hd95_mm(pred, target, spacing, self.num_classes, self.include_background, self.hd95_missing)
                    for pred, target, spacing in stacked.values()
                ]
            )
        return out

    def aggregate(self) -> dict[str, float]:
        """Score everything received since the last :meth:`reset`; see the class docstring."""
        if not self._slices:
            raise ValueError("VolumeScores.aggregate() called before any update().")
        scores = self.scores()
        summary: dict[str, float] = {}
        for convention in self.conventions:
            per_class = _nanmean(scores[f"dice_2d_{convention}"], axis=0)
            summary.update(self._per_class(f"dice_2d_{convention}", per_class))
        summary.update(self._per_class("dice_3d", _nanmean(scores["dice_3d"], axis=0)))
        if self.hd95:
            summary.update(self._per_class("hd95", _nanmean(scores["hd95"], axis=0)))
        summary["n_slices"] = float(len(scores["slice_index"]))
        summary["n_volumes"] = float(len(scores["volume"]))
        return summary

    def _real_slice_mask(self, vid: Any) -> np.ndarray:
        slices = self._slices[vid]
        first, last = min(slices), max(slices)
        return np.isin(np.arange(first, last + 1), list(slices))
