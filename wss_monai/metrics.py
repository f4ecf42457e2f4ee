"""Evaluation of integer label maps: per-slice 2D Dice, per-volume 3D Dice, HD95 in mm.

All functions take integer label maps (class index per pixel), as NumPy arrays or torch
tensors on any device, and return NumPy float64 arrays whose last axis is the class index
(column ``c`` is class ``c``, background included, so ``scores[:, 1]`` is class 1).

Empty masks are the delicate part, and every function makes its convention explicit:

- ``dice_2d(..., empty="one")``: a class absent from both prediction and target of a slice
  scores 1. This is the convention of the authors' reference code; it inflates averages
  because every correctly empty slice counts as a perfect one.
- ``empty="nan"``: that 0/0 case is NaN (undefined) and is left out of NaN-aware means. A
  false positive on a slice without the class still scores 0 and still counts.
- ``empty="skip"``: every slice whose *target* lacks the class is NaN, whatever was predicted
  (MONAI ``DiceMetric(ignore_empty=True)``): Dice over the slices that contain the class only,
  so false positives on other slices are not seen.
- ``hd95_mm``: NaN when prediction or target of a class is empty (no surface to measure), or,
  with ``missing="diagonal"``, the physical diagonal of the volume as a worst-case penalty when
  exactly one of them is empty.

:class:`VolumeScores` accumulates batches of slice predictions (slices of a volume in any
order, over several batches), stacks them per volume and summarises everything in one flat
dict of floats, ready to log to MLflow.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

EMPTY_CONVENTIONS = ("one", "nan", "skip")
MISSING_HD_CONVENTIONS = ("nan", "diagonal")

__all__ = [
    "EMPTY_CONVENTIONS",
    "confusion_counts",
    "dice_from_counts",
    "dice_2d",
    "dice_3d",
    "hd95_mm",
    "VolumeScores",
]


# --------------------------------------------------------------------------------------------
# input handling


def _to_numpy_labels(labels: Any, name: str) -> np.ndarray:
    """A label map as an integer NumPy array (detached from torch, moved to the CPU)."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        if np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels)):
            # argmax outputs of MONAI post-transforms (AsDiscrete) are float tensors of integers
            labels = labels.astype(np.int64)
        else:
            raise TypeError(f"{name} must be an integer label map, got dtype {labels.dtype}.")
    return labels


def _as_slices(labels: Any, name: str) -> np.ndarray:
    """(H, W), (N, H, W) or (N, 1, H, W) label maps as (N, H, W)."""
    labels = _to_numpy_labels(labels, name)
    if labels.ndim == 2:
        return labels[None]
    if labels.ndim == 4 and labels.shape[1] == 1:  # MONAI's channel-first (B, 1, H, W)
        return labels[:, 0]
    if labels.ndim != 3:
        raise ValueError(f"{name} must have shape (H, W), (N, H, W) or (N, 1, H, W), got {labels.shape}.")
    return labels


def _check_range(labels: np.ndarray, num_classes: int, name: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name} holds values in [{labels.min()}, {labels.max()}], outside the class range "
            f"[0, {num_classes - 1}] (num_classes={num_classes}); weak labels (255 = unannotated) "
            "cannot be scored, use the full labels."
        )


def _check_pair(pred: np.ndarray, target: np.ndarray, num_classes: int) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {pred.shape} and {target.shape}.")
    _check_range(pred, num_classes, "pred")
    _check_range(target, num_classes, "target")


def _check_empty(empty: str) -> str:
    if empty not in EMPTY_CONVENTIONS:
        raise ValueError(f"empty must be one of {EMPTY_CONVENTIONS}, got {empty!r}.")
    return empty


# --------------------------------------------------------------------------------------------
# Dice


def confusion_counts(pred: Any, target: Any, num_classes: int) -> np.ndarray:
    """Per-slice confusion matrices of two label maps.

    Args:
        pred: predicted labels, shape (N, H, W), (N, 1, H, W) or (H, W).
        target: true labels, same shape.
        num_classes: number of classes C (labels must lie in [0, C)).

    Returns:
        int64 array (N, C, C): ``counts[n, t, p]`` = pixels of slice n with target t predicted p.
    """
    pred, target = _as_slices(pred, "pred"), _as_slices(target, "target")
    _check_pair(pred, target, num_classes)
    n = pred.shape[0]
    # One bincount over (slice, target, pred) codes: no one-hot tensors, linear in the pixels.
    codes = (np.arange(n).reshape(n, 1, 1) * num_classes + target.astype(np.int64)) * num_classes + pred
    counts = np.bincount(codes.ravel(), minlength=n * num_classes * num_classes)
    return counts.reshape(n, num_classes, num_classes)


def dice_from_counts(counts: np.ndarray, empty: str = "nan") -> np.ndarray:
    """Dice per class from confusion matrices (..., C, C) (target on axis -2, prediction on -1).

    Returns:
        float64 array (..., C); the empty-mask case follows ``empty`` (see the module docstring).
    """
    _check_empty(empty)
    counts = np.asarray(counts, dtype=np.float64)
    overlap = np.diagonal(counts, axis1=-2, axis2=-1)
    target_size = counts.sum(axis=-1)
    pred_size = counts.sum(axis=-2)
    denominator = target_size + pred_size
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = 2.0 * overlap / denominator
    both_empty = denominator == 0
    dice[both_empty] = 1.0 if empty == "one" else np.nan
    if empty == "skip":
        dice[target_size == 0] = np.nan
    return dice


def dice_2d(pred: Any, target: Any, num_classes: int, empty: str = "nan") -> np.ndarray:
    """Dice of every slice and class.

    Args:
        pred: predicted labels, shape (N, H, W), (N, 1, H, W) or (H, W); NumPy or torch.
        target: true labels, same shape.
        num_classes: number of classes C, background included.
        empty: ``"one"`` (reference code: absent from both = 1), ``"nan"`` (absent from both =
            NaN) or ``"skip"`` (absent from the target = NaN); see the module docstring.

    Returns:
        float64 array (N, C); column c is class c.

    Example::

        >>> target = np.zeros((2, 4, 4), int); target[0, :2, :2] = 1   # slice 1 has no class 1
        >>> dice_2d(target, target, 2, empty="one")[:, 1]
        array([1., 1.])
        >>> dice_2d(target, target, 2, empty="nan")[:, 1]
        array([ 1., nan])
    """
    return dice_from_counts(confusion_counts(pred, target, num_classes), empty=empty)


def dice_3d(
    pred: Any, target: Any, volume: Any, num_classes: int, empty: str = "nan"
) -> tuple[np.ndarray, np.ndarray]:
    """Dice of every volume and class, from its slices.

    The slices of a volume may come in any order: 3D Dice only needs the voxel counts summed
    over the slices that share a volume id.

    Args:
        pred: predicted labels of N slices, shape (N, H, W) or (N, 1, H, W).
        target: true labels, same shape.
        volume: (N,) volume id of each slice (any hashable, sortable values: ints or strings).
        num_classes: number of classes C, background included.
        empty: what a class absent from the volume scores, as for :func:`dice_2d`.

    Returns:
        ``(volume_ids, dice)``: the sorted unique ids (V,) and a float64 array (V, C).

    Example::

        >>> pred = np.ones((3, 4, 4), int); target = pred.copy(); target[2] = 0
        >>> ids, dice = dice_3d(pred, target, [7, 7, 9], num_classes=2)
        >>> ids, dice[:, 1]
        (array([7, 9]), array([1., 0.]))
    """
    counts = confusion_counts(pred, target, num_classes)
    volume = np.asarray(volume.detach().cpu() if isinstance(volume, torch.Tensor) else volume).reshape(-1)
    if volume.shape[0] != counts.shape[0]:
        raise ValueError(f"volume must hold one id per slice ({counts.shape[0]}), got {volume.shape[0]}.")
    ids, index = np.unique(volume, return_inverse=True)
    per_volume = np.zeros((len(ids), num_classes, num_classes), dtype=np.int64)
    np.add.at(per_volume, index.reshape(-1), counts)
    return ids, dice_from_counts(per_volume, empty=empty)


# --------------------------------------------------------------------------------------------
# Hausdorff distance


def _check_spacing(spacing: Any, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in np.asarray(spacing, dtype=np.float64).reshape(-1))
    if len(spacing) == 1:
        spacing = spacing * ndim
    if len(spacing) != ndim or not all(s > 0 and np.isfinite(s) for s in spacing):
        raise ValueError(f"spacing must be {ndim} positive numbers (mm per array axis), got {spacing}.")
    return spacing


def hd95_mm(
    pred: Any,
    target: Any,
    spacing: Any,
    num_classes: int,
    include_background: bool = False,
    missing: str = "nan",
) -> np.ndarray:
    """95th-percentile symmetric Hausdorff distance of each class, in mm.

    The distance is the larger of the two directed 95th percentiles between the surface voxels
    of prediction and target (voxels of the mask with a face neighbour outside it), measured
    with the voxel ``spacing`` (MONAI ``compute_hausdorff_distance(percentile=95)``, as in
    MedPy's ``hd95`` used by the scribble toolboxes).

    Args:
        pred: predicted labels of one volume, shape (D, H, W) (or (H, W) for one slice).
        target: true labels, same shape.
        spacing: mm per array axis, in the array's axis order (e.g. (slice distance, row, column)
            for a (D, H, W) volume); one number means isotropic.
        num_classes: number of classes C.
        include_background: also score class 0 (otherwise its column is NaN).
        missing: ``"nan"`` (default): NaN when the prediction or the target of a class is empty.
            ``"diagonal"``: when exactly one of them is empty, the length of the volume's
            diagonal in mm (the largest distance possible inside it), so a missed organ
            counts as a failure instead of vanishing from NaN-aware means. Both empty is NaN.

    Returns:
        float64 array (C,).

    Example::

        >>> target = np.zeros((8, 8, 8), int); target[2:5, 2:5, 2:5] = 1
        >>> pred = np.roll(target, 1, axis=0)          # shifted by one slice
        >>> float(hd95_mm(pred, target, spacing=(3.0, 1.0, 1.0), num_classes=2)[1])
        3.0
    """
    with warnings.catch_warnings():
        # importing MONAI 1.6 under torch 2.13 repeats a torch.jit deprecation notice ~70 times
        warnings.filterwarnings("ignore", message=".*torch.jit.*", category=DeprecationWarning)
        from monai.metrics import compute_hausdorff_distance

    if missing not in MISSING_HD_CONVENTIONS:
        raise ValueError(f"missing must be one of {MISSING_HD_CONVENTIONS}, got {missing!r}.")
    pred, target = _to_numpy_labels(pred, "pred"), _to_numpy_labels(target, "target")
    _check_pair(pred, target, num_classes)
    if pred.ndim not in (2, 3):
        raise ValueError(f"hd95_mm scores one volume (D, H, W) or one slice (H, W), got shape {pred.shape}.")
    spacing = _check_spacing(spacing, pred.ndim)
    diagonal = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing))))

    scores = np.full(num_classes, np.nan)
    for c in range(0 if include_background else 1, num_classes):
        pred_c, target_c = pred == c, target == c
        has_pred, has_target = bool(pred_c.any()), bool(target_c.any())
        if not (has_pred and has_target):
            # Decided here rather than by MONAI, which warns and returns inf or nan.
            if missing == "diagonal" and has_pred != has_target:
                scores[c] = diagonal
            continue
        with warnings.catch_warnings():
            # MONAI 1.6 warns about a deprecated argument of its own internal call
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
            value = compute_hausdorff_distance(
                torch.from_numpy(pred_c[None, None]),
                torch.from_numpy(target_c[None, None]),
                include_background=True,
                percentile=95,
                spacing=list(spacing),
            )
        scores[c] = float(value.reshape(-1)[0])
    return scores


# --------------------------------------------------------------------------------------------
# accumulation over a validation set


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
