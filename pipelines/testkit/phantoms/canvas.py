"""A voxel grid in millimetres onto which shapes are painted, image and label together.

Painting alpha-blends a tissue intensity into the image by the fraction of each voxel a shape
fills (partial volume), optionally modulated by a texture field, and writes a class index
into the label where the shape fills at least half of the voxel's centre plane. Work is
limited to the shape's bounding box, so many small organs on a large grid stay cheap.

Thick slices get through-plane partial volume too: the image averages the shape over a few
positions across the slice thickness, while the label follows the slice's centre, as an
annotator drawing on that slice would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.testkit.phantoms.shapes import FLOAT, soft_inside


@dataclass
class Grid:
    """Voxel centres at ``origin + index * spacing`` (mm) along three axes; ``slab_axis`` is the thick one."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    slab_axis: int = 2

    def axis_mm(self, axis: int) -> np.ndarray:
        return (self.origin[axis] + self.spacing[axis] * np.arange(self.shape[axis])).astype(FLOAT)

    @property
    def edge_mm(self) -> float:
        """Width of the partial-volume ramp: the in-plane voxel size."""
        return float(min(s for a, s in enumerate(self.spacing) if a != self.slab_axis))

    @property
    def slab_offsets(self) -> tuple[float, ...]:
        """Positions across a slice (mm from its centre) averaged for through-plane partial volume."""
        thick = self.spacing[self.slab_axis]
        if thick <= 1.5 * self.edge_mm:
            return (0.0,)
        return (-thick / 3.0, 0.0, thick / 3.0)

    def region(self, lo_mm, hi_mm, margin_mm: float = 0.0) -> tuple[slice, slice, slice] | None:
        """Index box covering ``[lo_mm, hi_mm]`` plus a margin, clipped to the grid; None if outside."""
        out = []
        for a in range(3):
            lo = (lo_mm[a] - margin_mm - self.origin[a]) / self.spacing[a]
            hi = (hi_mm[a] + margin_mm - self.origin[a]) / self.spacing[a]
            i0 = max(0, int(np.floor(lo)) if np.isfinite(lo) else 0)
            i1 = min(self.shape[a], int(np.ceil(hi)) + 1 if np.isfinite(hi) else self.shape[a])
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)

    def coords(self, region, offset_mm: float = 0.0):
        """Broadcastable voxel-centre coordinates ``(x, y, z)`` of ``region``, shifted along the slab axis."""
        out = []
        for a, sl in enumerate(region):
            c = self.axis_mm(a)[sl] + (FLOAT(offset_mm) if a == self.slab_axis else FLOAT(0))
            view = [1, 1, 1]
            view[a] = c.size
            out.append(c.reshape(view))
        return tuple(out)


class Canvas:
    """An image (float32) and a label (uint8) on a :class:`Grid`, painted shape by shape."""

    def __init__(self, grid: Grid, background: float = 0.0):
        self.grid = grid
        self.image = np.full(grid.shape, background, dtype=FLOAT)
        self.label = np.zeros(grid.shape, dtype=np.uint8)

    def coverage(self, shape, margin_mm: float | None = None):
        """``(region, fraction over the slice thickness, fraction at the slice centre)`` or None."""
        g = self.grid
        lo, hi = shape.bounds()
        region = g.region(lo, hi, g.edge_mm + g.spacing[g.slab_axis] if margin_mm is None else margin_mm)
        if region is None:
            return None
        offsets = g.slab_offsets
        samples = [soft_inside(shape.distance(*g.coords(region, off)), g.edge_mm) for off in offsets]
        centre = samples[len(samples) // 2]
        mean = centre if len(samples) == 1 else sum(samples) / FLOAT(len(samples))
        full = tuple(sl.stop - sl.start for sl in region)
        return region, np.broadcast_to(mean, full), np.broadcast_to(centre, full)

    def paint(self, shape, value: float, texture: np.ndarray | None = None, amplitude: float = 0.0,
              label: int | None = None, opacity: float = 1.0) -> None:
        """Blend ``value`` (times ``1 + amplitude * texture``) where ``shape`` is; set ``label`` inside it."""
        cov = self.coverage(shape)
        if cov is None:
            return
        region, alpha, centre = cov
        tissue = FLOAT(value)
        if texture is not None and amplitude:
            tissue = FLOAT(value) * (1.0 + FLOAT(amplitude) * texture[region])
        if opacity != 1.0:
            alpha = alpha * FLOAT(opacity)
        view = self.image[region]
        view += alpha * (tissue - view)
        if label is not None:
            self.label[region][centre >= 0.5] = label
