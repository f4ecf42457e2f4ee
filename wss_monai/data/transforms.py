"""MONAI dictionary transforms for the weakly supervised 2D samples of a prepared dataset.

A sample dict (see :mod:`wss_monai.data.datalist`) goes through

1. :class:`LoadSliced` - image float32 (1, H, W), weak/label uint8 (H, W) (255 kept exactly),
   ``None`` paths stay ``None`` (never opened);
2. :class:`SizeBoundsd` - the entry's bounds -> (C, 2) float32, background row (0, inf);
3. (training, optional) :class:`RandWeakAffined` - flips, rotation, scaling of image, weak and
   label together, with the size bounds (and the pixel spacing) following the scaling;
4. :class:`FormatSampled` - the batch dtypes: weak/label int64 (H, W) (255 where unknown), flags
   and ids as 0-d tensors.

Steps 1-2 are deterministic (cached by ``CacheDataset``), 3 is random, 4 is cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from wss_monai.data.datalist import UNANNOTATED

__all__ = ["LoadSliced", "SizeBoundsd", "AugmentParams", "RandWeakAffined", "FormatSampled", "scale_bounds"]


def _read_nifti(path: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        image = nib.load(str(path))
        array = np.asanyarray(image.dataobj)
    except Exception as error:  # nibabel raises several types; name the file
        raise OSError(f"{path}: cannot read the NIfTI slice ({error})") from error
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2D slice, got shape {array.shape}")
    return array, np.asarray(image.affine, dtype=np.float64)


class LoadSliced(MapTransform):
    """Load the 2D NIfTI slices of a sample, keeping integer maps integer.

    - ``image_key``: path -> float32 tensor (1, H, W); its affine (4, 4) float64 goes to
      ``affine_key`` (the slice's geometry in the prepared dataset, before any augmentation).
    - ``label_keys`` (weak labels, full labels): path -> uint8 tensor (H, W), read without any
      intensity scaling, so 255 (unannotated) stays 255; a ``None`` path stays ``None`` and
      no file is opened (a weak training sample's full mask). Values must be integers in 0..255
      and the shape must match the image's.

    Example:
        >>> LoadSliced()({"image": "a.nii", "weak": "a_weak.nii.gz", "label": None})  # doctest: +SKIP
    """

    def __init__(
        self,
        image_key: str = "image",
        label_keys: Sequence[str] = ("weak", "label"),
        affine_key: str | None = "affine",
    ) -> None:
        if isinstance(label_keys, str):
            label_keys = (label_keys,)
        super().__init__([image_key, *label_keys], allow_missing_keys=True)
        self.image_key = image_key
        self.label_keys = tuple(label_keys)
        self.affine_key = affine_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        if self.image_key not in d or d[self.image_key] is None:
            raise KeyError(f"LoadSliced: the sample has no {self.image_key!r} path")
        image_path = path = d[self.image_key]
        array, affine = _read_nifti(path)
        if not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"{path}: image of non-numeric type {array.dtype}")
        d[self.image_key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
        if self.affine_key:
            d[self.affine_key] = torch.from_numpy(affine)
        shape = tuple(array.shape)
        for key in self.label_keys:
            path = d.get(key)
            if path is None:
                d[key] = None
                continue
            labels, _ = _read_nifti(path)
            if not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"{path}: label maps must be stored as integers, got {labels.dtype}")
            if labels.size and (labels.min() < 0 or labels.max() > 255):
                raise ValueError(f"{path}: label values must lie in 0..255, got {labels.min()}..{labels.max()}")
            if tuple(labels.shape) != shape:
                raise ValueError(f"{path}: shape {labels.shape} differs from the shape {shape} of {image_path}")
            d[key] = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.uint8))
        return d


class SizeBoundsd(MapTransform):
    """Per-class size bounds of a slice as a (C, 2) float32 tensor (lower, upper) in pixels.

    Input: the entry's rule list ``[[lo, hi], ...]`` for classes 1..K (K = C - 1), or ``None``
    (unconstrained). Output row 0 (background) is always (0, inf): background is never
    constrained. With ``None`` every row is (0, inf). A class absent from the slice has (0, 0).

    Example:
        >>> SizeBoundsd(num_classes=2)({"bounds": [[730.8, 893.2]]})["bounds"]
        tensor([[  0.0000,      inf],
                [730.8000, 893.2000]])
    """

    def __init__(self, keys: KeysCollection = "bounds", num_classes: int = 2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes counts the background too and must be >= 2, got {num_classes}")
        self.num_classes = int(num_classes)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            out = torch.zeros(self.num_classes, 2, dtype=torch.float32)
            out[:, 1] = math.inf
            rows = d[key]
            if rows is not None:
                rows = torch.as_tensor(rows, dtype=torch.float32).reshape(-1, 2) if len(rows) else torch.zeros(0, 2)
                if rows.shape[0] != self.num_classes - 1:
                    raise ValueError(
                        f"SizeBoundsd: {key!r} has {rows.shape[0]} class rows, expected {self.num_classes - 1} (classes 1..{self.num_classes - 1})"
                    )
                if torch.isnan(rows).any() or (rows < 0).any() or (rows[:, 0] > rows[:, 1]).any():
                    raise ValueError(f"SizeBoundsd: {key!r} must hold 0 <= lower <= upper per class, got {rows.tolist()}")
                out[1:] = rows
            d[key] = out
        return d


def scale_bounds(bounds: torch.Tensor, area_factor: float) -> torch.Tensor:
    """Size bounds after an in-plane zoom that multiplies areas by ``area_factor`` (= s^2).

    Every finite bound is multiplied; ``inf`` stays ``inf`` and (0, 0) stays (0, 0).
    """
    out = bounds.clone()
    finite = torch.isfinite(out)
    out[finite] = out[finite] * float(area_factor)
    return out


@dataclass(frozen=True)
class AugmentParams:
    """One draw of :class:`RandWeakAffined`: flips, quarter turns, angle (degrees) and zoom ``scale``."""

    flip_rows: bool = False
    flip_cols: bool = False
    quarter_turns: int = 0
    angle: float = 0.0
    scale: float = 1.0

    @property
    def area_factor(self) -> float:
        """Factor on every area (object size in pixels): ``scale ** 2``."""
        return self.scale**2

    @property
    def identity(self) -> bool:
        return not (self.flip_rows or self.flip_cols or self.quarter_turns % 4 or self.angle or self.scale != 1.0)


class RandWeakAffined(Randomizable, MapTransform):
    """Random flips, rotation and isotropic scaling of a 2D sample, consistent across its maps.

    The papers augment with "rotating, flipping, mirroring and scaling" (MIDL 2018) and "random
    mirroring, flipping and rotation" (MedIA 2019, prostate) without giving ranges; the defaults
    here are ours: each axis flipped with probability 0.5, rotation with probability 0.5 by an
    angle uniform in [-max_angle, max_angle] (15 degrees), zoom with probability 0.5 by a factor
    uniform in ``scale_range`` (0.9, 1.1); optional quarter turns (``rot90``; only 180 degrees on
    non-square slices, so the shape never changes).

    - Image (1, H, W): bilinear, zero outside the original field of view.
    - Integer maps ``label_keys`` {key: fill} (H, W): nearest neighbour; pixels that come from
      outside the original image take ``fill``: 255 (unannotated) for weak labels, 0 (background)
      for full labels. A ``None`` map (not loaded) stays ``None``.
    - Size bounds ``bounds_key`` (C, 2): a zoom by ``s`` multiplies every object's area by
      ``s^2``, so every finite bound is multiplied by ``s^2`` (inf and (0, 0) kept).
      Flips and quarter turns are exact permutations of the pixels and keep every size.
      Small-angle rotation and zoom are applied about the image centre without reflection
      padding; they keep sizes for objects inside the disc of radius ``min(H, W) / (2 s)``
      around the centre (the organs of the papers' datasets are centred) - an object cut by
      the border after rotation or zoom-in keeps its bounds (we cannot measure it for weak
      samples without opening the full mask). Pass ``max_angle=0, scale_range=(1, 1)`` where
      targets touch the border.
    - Pixel spacing ``spacing_key`` (2,) (row, col mm) is divided by ``s``: a pixel covers less
      tissue after a zoom-in, and bounds in mm^2 stay unchanged.

    Random state: ``set_random_state(seed)`` then ``__call__`` as every MONAI random transform;
    :meth:`draw` and :meth:`apply` split the two steps (the loaders draw the zoom of all slices
    of a volume from one seed so that per-volume bounds agree).

    Example:
        >>> t = RandWeakAffined(scale_range=(0.9, 1.1)).set_random_state(seed=0)
        >>> out = t({"image": torch.rand(1, 64, 64), "weak": torch.full((64, 64), 255, dtype=torch.uint8),
        ...          "label": None, "bounds": torch.tensor([[0, float("inf")], [10, 20]]), "spacing": torch.tensor([1.0, 1.0])})
    """

    def __init__(
        self,
        image_key: str = "image",
        label_keys: Mapping[str, int] | None = None,
        bounds_key: str | None = "bounds",
        spacing_key: str | None = "spacing",
        flip_prob: float = 0.5,
        rotate_prob: float = 0.5,
        max_angle: float = 15.0,
        scale_prob: float = 0.5,
        scale_range: Sequence[float] = (0.9, 1.1),
        rot90: bool = False,
    ) -> None:
        label_keys = dict({"weak": UNANNOTATED, "label": 0} if label_keys is None else label_keys)
        super().__init__([image_key, *label_keys], allow_missing_keys=True)
        for name, p in (("flip_prob", flip_prob), ("rotate_prob", rotate_prob), ("scale_prob", scale_prob)):
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"RandWeakAffined: {name} must lie in [0, 1], got {p}")
        if not 0.0 <= float(max_angle) <= 180.0:
            raise ValueError(f"RandWeakAffined: max_angle is in degrees, 0..180, got {max_angle}")
        if len(scale_range) != 2 or not 0.0 < float(scale_range[0]) <= float(scale_range[1]):
            raise ValueError(f"RandWeakAffined: scale_range must be (low, high) with 0 < low <= high, got {scale_range}")
        for key, fill in label_keys.items():
            if not 0 <= int(fill) <= 255:
                raise ValueError(f"RandWeakAffined: fill of {key!r} must lie in 0..255, got {fill}")
        self.image_key = image_key
        self.label_keys = {k: int(v) for k, v in label_keys.items()}
        self.bounds_key = bounds_key
        self.spacing_key = spacing_key
        self.flip_prob = float(flip_prob)
        self.rotate_prob = float(rotate_prob)
        self.max_angle = float(max_angle)
        self.scale_prob = float(scale_prob)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.rot90 = bool(rot90)
        self._params = AugmentParams()

    # -- randomness -------------------------------------------------------------------------
    def draw(self, square: bool = True) -> AugmentParams:
        """Draw one set of parameters from ``self.R`` (always the same number of draws)."""
        u = self.R.uniform(size=8)
        turns = 0
        if self.rot90:
            turns = int(u[2] * 4) % 4
            if not square:
                turns = 2 * (turns // 2)
        angle = (2.0 * u[4] - 1.0) * self.max_angle if u[3] < self.rotate_prob and self.max_angle > 0 else 0.0
        lo, hi = self.scale_range
        scale = lo + u[6] * (hi - lo) if u[5] < self.scale_prob else 1.0
        return AugmentParams(bool(u[0] < self.flip_prob), bool(u[1] < self.flip_prob), turns, float(angle), float(scale))

    def randomize(self, data: Mapping | None = None) -> None:
        square = True
        if data is not None and self.image_key in data:
            shape = tuple(data[self.image_key].shape[-2:])
            square = shape[0] == shape[1]
        self._params = self.draw(square)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        self.randomize(data)
        return self.apply(data, self._params)

    # -- geometry ---------------------------------------------------------------------------
    @staticmethod
    def _theta(params: AugmentParams, height: int, width: int) -> torch.Tensor:
        """affine_grid matrix (1, 2, 3): output normalised (x, y) -> input normalised (x, y)."""
        a = math.radians(params.angle)
        c, s = math.cos(a), math.sin(a)
        # input pixel offset from the centre = R(-angle) @ output offset / scale, in (x=col, y=row)
        m = torch.tensor([[c, s], [-s, c]], dtype=torch.float64) / params.scale
        d = torch.diag(torch.tensor([width / 2.0, height / 2.0], dtype=torch.float64))
        theta = torch.linalg.inv(d) @ m @ d
        return torch.cat([theta, torch.zeros(2, 1, dtype=torch.float64)], dim=1)[None].float()

    def _exact(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        dims = []
        if params.flip_rows:
            dims.append(-2)
        if params.flip_cols:
            dims.append(-1)
        if dims:
            x = torch.flip(x, dims)
        if params.quarter_turns % 4:
            x = torch.rot90(x, params.quarter_turns % 4, dims=(-2, -1))
        return x

    def apply(self, data: Mapping[Hashable, object], params: AugmentParams) -> dict:
        """Apply ``params`` to a sample (a new dict; the input's tensors are not modified)."""
        d = dict(data)
        if self.image_key not in d:
            raise KeyError(f"RandWeakAffined: the sample has no {self.image_key!r}")
        image = torch.as_tensor(d[self.image_key])
        if image.dim() != 3:
            raise ValueError(f"RandWeakAffined: {self.image_key!r} must be (channels, H, W), got {tuple(image.shape)}")
        if params.identity:
            return d
        height, width = image.shape[-2:]
        if params.quarter_turns % 2 and height != width:
            raise ValueError("RandWeakAffined: odd quarter turns need square slices")
        warp = params.angle != 0.0 or params.scale != 1.0
        theta = self._theta(params, height, width) if warp else None
        grid = F.affine_grid(theta, [1, 1, height, width], align_corners=False) if warp else None

        out = self._exact(image.float(), params)
        if warp:
            out = F.grid_sample(out[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        d[self.image_key] = out
        for key, fill in self.label_keys.items():
            labels = d.get(key)
            if labels is None:
                continue
            labels = torch.as_tensor(labels)
            if labels.shape[-2:] != (height, width):
                raise ValueError(f"RandWeakAffined: {key!r} shape {tuple(labels.shape)} differs from the image's {(height, width)}")
            dtype = labels.dtype
            moved = self._exact(labels, params)
            if warp:
                # shift by one so that 0 marks "from outside the image" under zero padding
                shifted = moved.to(torch.float32).reshape(1, 1, height, width) + 1.0
                sampled = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)[0, 0]
                outside = sampled == 0
                moved = (sampled - 1.0).round().clamp(min=0).to(dtype).reshape(labels.shape)
                moved[outside.reshape(labels.shape)] = fill
            d[key] = moved
        if params.scale != 1.0:
            if self.bounds_key and d.get(self.bounds_key) is not None:
                d[self.bounds_key] = scale_bounds(torch.as_tensor(d[self.bounds_key], dtype=torch.float32), params.area_factor)
            if self.spacing_key and d.get(self.spacing_key) is not None:
                d[self.spacing_key] = torch.as_tensor(d[self.spacing_key], dtype=torch.float32) / params.scale
        return d


class FormatSampled(MapTransform):
    """The batch dtypes of one sample.

    - ``weak``/``label`` -> int64 (H, W); a ``None`` map (not loaded) -> all 255;
    - ``full``/``has_label`` -> bool 0-d; ``volume``/``slice`` -> int64 0-d;
      ``spacing`` -> float32 (2,); ``bounds`` -> float32 (C, 2); ``image`` -> float32 (1, H, W).

    Collated, a batch has weak/label (B, H, W), full (B,), volume (B,), spacing (B, 2),
    bounds (B, C, 2).
    """

    def __init__(self, image_key: str = "image", label_keys: Sequence[str] = ("weak", "label")) -> None:
        super().__init__([image_key, *label_keys], allow_missing_keys=True)
        self.image_key = image_key
        self.label_keys = tuple(label_keys)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        image = torch.as_tensor(d[self.image_key], dtype=torch.float32)
        d[self.image_key] = image
        for key in self.label_keys:
            labels = d.get(key)
            if labels is None:
                d[key] = torch.full(tuple(image.shape[-2:]), UNANNOTATED, dtype=torch.int64)
            else:
                d[key] = torch.as_tensor(labels).to(torch.int64)
        for key in ("full", "has_label"):
            if key in d:
                d[key] = torch.tensor(bool(d[key]))
        for key in ("volume", "slice"):
            if key in d:
                d[key] = torch.tensor(int(d[key]), dtype=torch.int64)
        if "spacing" in d:
            d["spacing"] = torch.as_tensor(d["spacing"], dtype=torch.float32).reshape(2)
        if "bounds" in d:
            d["bounds"] = torch.as_tensor(d["bounds"], dtype=torch.float32)
        return d
