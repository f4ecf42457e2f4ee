"""Weak labels from full 2D label maps: seeds inside each object, 255 everywhere unknown.

Every strategy only ever annotates pixels whose true class it knows: a foreground seed lies
inside its object, a background annotation lies in the background. Strategies (per target class):

- ``erosion`` (ACDC in the papers): binary erosion, 3x3 full structuring element, 10 iterations;
  when that empties the mask, the last non-empty erosion (9, 8, ... 1 iterations) is kept, and an
  object thinner than 3 pixels keeps its single deepest pixel.
- ``random_disc`` (vertebral body and prostate): a disc of ``radius`` pixels around one uniformly
  random pixel of the object, clipped to the object. Seeded: same rng state, same disc.
- ``centroid_disc``: the same disc at the object's centroid (or its nearest object pixel when the
  centroid falls outside a non-convex object).
- ``box``: a bounding box with a margin: everything outside the boxes of all classes is
  annotated background (0), everything inside stays unknown (255). A slice without the target is
  all background.
- ``scribble``: the skeleton of the eroded mask (as ``erosion``), a thin line inside the object.

``background_scribble`` adds a background line (the skeleton of the region farther than a
margin from every target and from the image border) for the regularized-loss regimes; the
papers' setting is foreground seeds only (every other pixel 255).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

UNANNOTATED = 255
STRATEGIES = ("erosion", "random_disc", "centroid_disc", "box", "scribble")
#: 3x3 full structuring element of the papers' erosion.
SQUARE_3X3 = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class WeakOptions:
    """Parameters of the strategies (defaults: the papers')."""

    erosion_iterations: int = 10
    disc_radius: int = 2
    box_margin: int = 5
    background_scribble: bool = False
    background_margin: int = 5


def erosion_seed(mask: np.ndarray, iterations: int = 10) -> np.ndarray:
    """The mask eroded ``iterations`` times, or the last non-empty erosion; empty only for an empty mask."""
    if not mask.any():
        return np.zeros_like(mask, dtype=bool)
    # Erode only the object's bounding box plus a ring of zeros: the same result as on the whole
    # slice (outside is background either way), at a fraction of the cost.
    window = _bounding_window(mask, pad=1)
    seed = np.zeros_like(mask, dtype=bool)
    seed[window] = _erode_repeatedly(mask[window], iterations)
    return seed


def _erode_repeatedly(mask: np.ndarray, iterations: int) -> np.ndarray:
    # n successive single erosions equal one erosion with n iterations, so stepping one at a
    # time finds "the largest n <= iterations that leaves something" without restarting.
    current = mask.astype(bool)
    survived = 0
    for _ in range(iterations):
        eroded = ndimage.binary_erosion(current, structure=SQUARE_3X3)
        if not eroded.any():
            break
        current, survived = eroded, survived + 1
    if survived == 0 and iterations > 0:
        # Not even one erosion leaves a pixel (an object 1-2 px thin): keep its deepest pixel.
        return _deepest_pixel(mask)
    return current


def random_disc_seed(mask: np.ndarray, rng: np.random.Generator, radius: int = 2) -> np.ndarray:
    """A disc around a uniformly random object pixel, clipped to the object."""
    coords = np.argwhere(mask)
    if len(coords) == 0:
        return np.zeros_like(mask, dtype=bool)
    centre = coords[rng.integers(len(coords))]
    return disc(mask.shape, centre, radius) & mask.astype(bool)


def centroid_disc_seed(mask: np.ndarray, radius: int = 2) -> np.ndarray:
    """A disc at the centroid (moved to the nearest object pixel if outside), clipped to the object."""
    coords = np.argwhere(mask)
    if len(coords) == 0:
        return np.zeros_like(mask, dtype=bool)
    centroid = coords.mean(axis=0)
    nearest = coords[np.argmin(((coords - centroid) ** 2).sum(axis=1))]
    return disc(mask.shape, nearest, radius) & mask.astype(bool)


def box_region(mask: np.ndarray, margin: int = 5) -> np.ndarray:
    """The bounding box of the mask grown by ``margin`` pixels (clipped to the image); empty for an empty mask."""
    region = np.zeros_like(mask, dtype=bool)
    coords = np.argwhere(mask)
    if len(coords) == 0:
        return region
    low = np.maximum(coords.min(axis=0) - margin, 0)
    high = np.minimum(coords.max(axis=0) + margin + 1, mask.shape)
    region[low[0] : high[0], low[1] : high[1]] = True
    return region


def scribble_seed(mask: np.ndarray, iterations: int = 10) -> np.ndarray:
    """Skeleton of the eroded mask: a one-pixel-wide line well inside the object."""
    from skimage.morphology import skeletonize

    core = erosion_seed(mask, iterations)
    if not core.any():
        return core
    window = _bounding_window(core, pad=1)
    line = np.zeros_like(core)
    line[window] = skeletonize(core[window])
    return line if line.any() else core


def background_scribble(foreground: np.ndarray, margin: int = 5) -> np.ndarray:
    """A background line: skeleton of the pixels farther than ``margin`` from the targets and the border."""
    from skimage.morphology import skeletonize

    if foreground.any():
        far = ndimage.distance_transform_edt(~foreground) > margin
    else:
        far = np.ones_like(foreground, dtype=bool)
    inner = np.zeros_like(far)
    if min(far.shape) > 2 * margin:
        inner[margin:-margin or None, margin:-margin or None] = True
    region = far & inner
    if not region.any():
        return region
    return skeletonize(region) & ~foreground


def disc(shape: tuple[int, int], centre, radius: int) -> np.ndarray:
    """Boolean disc of ``radius`` pixels (Euclidean, inclusive) around ``centre``."""
    rows = np.arange(shape[0])[:, None] - int(centre[0])
    cols = np.arange(shape[1])[None, :] - int(centre[1])
    return rows * rows + cols * cols <= radius * radius


def _bounding_window(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    """Slices of the mask's bounding box grown by ``pad`` (clipped to the array)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (
        slice(max(rows[0] - pad, 0), min(rows[-1] + pad + 1, mask.shape[0])),
        slice(max(cols[0] - pad, 0), min(cols[-1] + pad + 1, mask.shape[1])),
    )


def _deepest_pixel(mask: np.ndarray) -> np.ndarray:
    depth = ndimage.distance_transform_edt(mask)
    seed = np.zeros_like(mask, dtype=bool)
    seed[np.unravel_index(int(np.argmax(depth)), mask.shape)] = True
    return seed


def weak_label(
    label: np.ndarray,
    n_classes: int,
    strategy: str,
    rng: np.random.Generator,
    options: WeakOptions = WeakOptions(),
) -> np.ndarray:
    """The weak label (uint8; class index on seeds, 0 on annotated background, 255 elsewhere).

    ``label`` holds class indices 0..n_classes (0 = background); each class 1..n_classes gets its
    own seed. ``rng`` is only drawn from by ``random_disc`` (once per class present).
    """
    weak = np.full(label.shape, UNANNOTATED, dtype=np.uint8)
    foreground = label > 0
    if strategy == "box":
        inside_any_box = np.zeros(label.shape, dtype=bool)
        for cls in range(1, n_classes + 1):
            inside_any_box |= box_region(label == cls, options.box_margin)
        weak[~inside_any_box] = 0
        return weak
    for cls in range(1, n_classes + 1):
        mask = label == cls
        if not mask.any():
            continue
        if strategy == "erosion":
            seed = erosion_seed(mask, options.erosion_iterations)
        elif strategy == "random_disc":
            seed = random_disc_seed(mask, rng, options.disc_radius)
        elif strategy == "centroid_disc":
            seed = centroid_disc_seed(mask, options.disc_radius)
        elif strategy == "scribble":
            seed = scribble_seed(mask, options.erosion_iterations)
        else:
            raise ValueError(f"unknown weak-label strategy {strategy!r}; expected one of {STRATEGIES}")
        weak[seed] = cls
    if options.background_scribble:
        weak[background_scribble(foreground, options.background_margin)] = 0
    return weak
