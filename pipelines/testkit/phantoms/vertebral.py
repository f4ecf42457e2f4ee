"""Vertebral-body phantom: sagittal T2 MRI of the lower spine in the layout of Zenodo record 22304.

``<root>/Img_XX.nii`` and ``Img_XX_Labels.nii`` (uncompressed, XX from 01), arrays
(39, 305, 305) at 2 x 1.25 x 1.25 mm: axis 0 is the sagittal slice axis (left to right),
axis 1 runs posterior to anterior and axis 2 inferior to superior (identity qform). Images
int16; labels uint8 exactly {0, 1} with the seven vertebral bodies T11-L5 as seven separate
components. Like the real label files, labels have qform_code 1, sform_code 0 and a
``vox_offset`` stored as 0 although their voxels start at byte 352.

What makes it hard like the real thing: bodies of about the intensity of the muscles and of
their own posterior elements, unlabelled vertebrae above (T9-T10) and below (sacrum) the
seven, bright discs between them (some degenerated and dark), a curved spine, bodies visible
only in the middle sagittal slices, bias and noise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipelines.testkit.phantoms.config import PhantomConfig
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from pipelines.testkit.phantoms.canvas import Canvas, Grid
from pipelines.testkit.phantoms.shapes import Ellipsoid, Intersection, RoundedBox, Slab, rotation
from pipelines.testkit.phantoms.texture import FLOAT, bias_field, rician_noise, smooth_field, to_int16
from pipelines.testkit.phantoms.writers import save_nifti, zero_vox_offset

NAME = "vertebral"
DEFAULT_CASES = 23
LABELLED = 7  # T11, T12, L1-L5
BODY = 1


@dataclass(frozen=True)
class Config(PhantomConfig):
    """Grid of the scans (the real ones all share one); ``inplane``/``slices`` resize it."""

    shape: tuple[int, int, int] = (39, 305, 305)
    spacing: tuple[float, float, float] = (2.0, 1.25, 1.25)
    inplane: int | None = None
    slices: int | None = None

    @classmethod
    def build(cls, small: bool = False, **overrides) -> "Config":
        cfg = super().build(small, **overrides)
        # A resized grid keeps the field of view (the spine must still fit), so the spacing follows.
        nx, ny, nz = cfg.shape
        sx, sy, sz = cfg.spacing
        if cfg.slices:
            sx, nx = sx * nx / cfg.slices, cfg.slices
        if cfg.inplane:
            sy, sz, ny, nz = sy * ny / cfg.inplane, sz * nz / cfg.inplane, cfg.inplane, cfg.inplane
        return dataclasses.replace(cfg, shape=(nx, ny, nz), spacing=(round(sx, 6), round(sy, 6), round(sz, 6)))

    @classmethod
    def small(cls) -> "Config":
        """Coarse and tiny for tests and the quick demo: 15 x 64 x 64 at 5 x 4 x 4 mm."""
        return cls(shape=(15, 64, 64), spacing=(5.0, 4.0, 4.0))


@dataclass(frozen=True)
class Vertebra:
    """One vertebral body: centre (mm), half-height, half-depth, half-width, tilt (degrees)."""

    centre: tuple[float, float, float]
    half_height: float
    half_depth: float
    half_width: float
    tilt: float

    def body(self, grow: float = 0.0) -> Intersection:
        """Rounded box in the sagittal plane, elliptic across: narrower towards the sides."""
        frame = rotation(self.tilt, 0)
        box = RoundedBox(self.centre, (self.half_width + 10 + grow, self.half_depth + grow, self.half_height + grow),
                         radius=min(4.0, self.half_height * 0.4) + grow, frame=frame)
        across = Ellipsoid(self.centre, (self.half_width + grow, self.half_depth * 1.35 + grow, np.inf), frame)
        return Intersection((box, across))


def sample_spine(rng: np.random.Generator, grid: Grid) -> list[Vertebra]:
    """Nine bodies from T9 to L5 stacked along axis 2 with a lordotic curve; the lowest seven are labelled."""
    nx, ny, nz = grid.shape
    sx, sy, sz = grid.spacing
    mid_x = nx * sx / 2 + rng.normal(0, 2)
    # A coarse grid needs discs at least two voxels high, or neighbouring bodies would touch.
    min_disc = max(2.6 * sz, 2.6 * sy)
    heights = [rng.uniform(25, 30) - 0.7 * i for i in range(LABELLED + 2)]  # L5 upwards
    discs = [max(rng.uniform(7, 12) - 0.4 * i, min_disc) for i in range(LABELLED + 2)]
    total = sum(heights) + sum(discs)
    z = nz * sz / 2 - total / 2 + rng.normal(0, 0.04) * nz * sz + 30.0  # sacrum below takes room too
    depth_centre = ny * sy * rng.uniform(0.36, 0.44)
    lordosis = rng.uniform(8, 20)
    out = []
    bottom = z
    for i, (h, d) in enumerate(zip(heights, discs)):
        zc = z + h / 2
        # Lordosis: the lumbar bodies bulge forward; the curve's slope tilts each body.
        phase = np.pi * np.clip((zc - bottom) / total, 0.0, 1.0)
        bulge, slope = lordosis * np.sin(phase), lordosis * np.pi / total * np.cos(phase)
        out.append(Vertebra(
            centre=(float(mid_x + rng.normal(0, 1.0)), float(depth_centre + bulge), float(zc)),
            half_height=float(h / 2), half_depth=float(rng.uniform(15, 18) - 0.3 * i),
            half_width=float(rng.uniform(22, 26) - 0.4 * i), tilt=float(-np.degrees(np.arctan(slope))),
        ))
        z += h + d
    return out


def paint_spine(rng: np.random.Generator, canvas: Canvas, spine: list[Vertebra]) -> None:
    g = canvas.grid
    fine = smooth_field(rng, g.shape, (1.5 / g.spacing[0], 1.5 / g.spacing[1], 1.5 / g.spacing[2]))
    coarse = smooth_field(rng, g.shape, (8 / g.spacing[0], 8 / g.spacing[1], 8 / g.spacing[2]))
    bowel = smooth_field(rng, g.shape, (4 / g.spacing[0], 4 / g.spacing[1], 4 / g.spacing[2]))
    fat, muscle, marrow = rng.uniform(0.7, 0.9), rng.uniform(0.3, 0.42), rng.uniform(0.38, 0.5)
    csf = rng.uniform(0.85, 1.0)
    mid_x = float(np.mean([v.centre[0] for v in spine]))
    front = float(np.mean([v.centre[1] + v.half_depth for v in spine]))
    back = float(np.mean([v.centre[1] - v.half_depth for v in spine]))
    far = (-1e4, 1e4)

    def slab_box(y0, y1, x_half, value, tex, amp, z_range=far):
        shape = Intersection((Slab(1, y0, y1), Slab(0, mid_x - x_half, mid_x + x_half), Slab(2, *z_range)))
        canvas.paint(shape, value, tex, amp)

    # Back to front: skin and fat, paraspinal muscles, the abdomen in front of the spine; air around.
    skin = back - rng.uniform(75, 100)
    belly = front + rng.uniform(150, 230)
    slab_box(skin, belly, 1e4, fat, fine, 0.1)
    slab_box(back - 5, belly - rng.uniform(10, 25), 1e4, rng.uniform(0.35, 0.55), bowel, 0.2)  # bowel and fat
    slab_box(skin + rng.uniform(8, 25), back - 5, 1e4, muscle, coarse, 0.12)
    for side in (-1, 1):  # psoas: beside the bodies, in the lateral slices only
        psoas = Ellipsoid((mid_x + side * 40, front - 10, spine[3].centre[2]), (18, 22, 110))
        canvas.paint(psoas, muscle, coarse, 0.12)
    # Aorta and vena cava in front of the spine: flow voids, dark on T2.
    for side, r in ((-1, 11), (1, 12)):
        canvas.paint(Intersection((Ellipsoid((mid_x + side * 15, front + 14, 0), (r, r, np.inf)), Slab(2, *far))), 0.08)

    # Spinal canal (bright CSF) with the cord above the first lumbar levels, behind the bodies.
    canal = Intersection((Ellipsoid((mid_x, back - 9, 0), (11, 7, np.inf)), Slab(2, *far)))
    canvas.paint(canal, csf, fine, 0.05)
    cord_top = spine[4].centre[2]
    canvas.paint(Intersection((Ellipsoid((mid_x, back - 9, 0), (5, 3.5, np.inf)), Slab(2, cord_top, 1e4))), 0.35)

    # Sacrum below L5 and the unlabelled thoracic bodies above T11.
    l5 = spine[0]
    sacrum = Vertebra((l5.centre[0], l5.centre[1] - 6, l5.centre[2] - l5.half_height * 2 - 14), 14.0, 18.0, 28.0,
                      l5.tilt - 25)
    for v in [sacrum] + spine:
        canvas.paint(v.body(grow=1.2), marrow * 0.35, fine, 0.1)  # cortex and endplates: dark rim
        labelled = v in spine[:LABELLED]
        canvas.paint(v.body(), marrow * rng.uniform(0.9, 1.1), coarse, 0.2, label=BODY if labelled else None)
        # Posterior elements: pedicles, lamina and spinous process, marrow-like, unlabelled.
        cz = v.centre[2]
        canvas.paint(RoundedBox((v.centre[0], v.centre[1] - v.half_depth - 24, cz - 4), (4, 14, v.half_height * 0.8), 3),
                     marrow * 0.9, coarse, 0.2)
        for side in (-1, 1):
            canvas.paint(RoundedBox((v.centre[0] + side * 17, v.centre[1] - v.half_depth - 6, cz + 2),
                                    (4, 7, v.half_height * 0.5), 3), marrow, coarse, 0.2)
    # Discs between consecutive bodies: bright nucleus, darker annulus; some degenerated.
    bodies = [sacrum] + spine
    for low, high in zip(bodies[:-1], bodies[1:]):
        centre = tuple((np.array(low.centre) + np.array(high.centre)) / 2)
        gap = (high.centre[2] - high.half_height) - (low.centre[2] + low.half_height)
        if gap <= 0:
            continue
        nucleus = rng.uniform(0.25, 0.5) if rng.random() < 0.25 else rng.uniform(0.75, 1.0)
        half = (min(low.half_width, high.half_width), min(low.half_depth, high.half_depth), gap / 2)
        tilt = (low.tilt + high.tilt) / 2
        canvas.paint(Ellipsoid(centre, (half[0], half[1] * 1.1, half[2] * 0.95), rotation(tilt, 0)), muscle * 1.1)
        canvas.paint(Ellipsoid(centre, (half[0] * 0.75, half[1] * 0.8, half[2] * 0.8), rotation(tilt, 0)), nucleus, fine, 0.05)


def render(rng: np.random.Generator, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(image int16, label uint8), both (sagittal, AP, SI)."""
    canvas = Canvas(grid)
    spine = sample_spine(rng, grid)
    paint_spine(rng, canvas, spine)
    count = ndimage.label(canvas.label, structure=np.ones((3, 3, 3)))[1]
    if count != LABELLED:  # the geometry guarantees it; a failure here is a bug, not bad luck
        raise AssertionError(f"vertebral phantom drew {count} separate bodies, expected {LABELLED}")
    scale = float(np.exp(rng.uniform(np.log(200), np.log(1500))))
    image = canvas.image * bias_field(rng, grid.shape, grid.spacing, rng.uniform(0.15, 0.35), scale_mm=160.0)
    image *= FLOAT(scale)
    noisy = rician_noise(rng, image, scale * rng.uniform(0.02, 0.05))
    return to_int16(noisy), canvas.label


def _nifti(data: np.ndarray, spacing) -> nib.Nifti1Image:
    """Identity-rotation qform with the spacing, no sform: how the real files are written."""
    image = nib.Nifti1Image(data, None)
    image.set_qform(np.diag([*spacing, 1.0]), code=1)
    image.set_sform(None, code=0)
    image.header.set_xyzt_units("mm")
    return image


def write_case(root: Path, index: int, rng: np.random.Generator, cfg: Config) -> None:
    """Write ``Img_XX.nii`` and ``Img_XX_Labels.nii`` (1-based XX)."""
    grid = Grid(cfg.shape, cfg.spacing, slab_axis=0)
    image, label = render(rng, grid)
    root.mkdir(parents=True, exist_ok=True)
    save_nifti(_nifti(image, cfg.spacing), root / f"Img_{index:02d}.nii")
    labels = save_nifti(_nifti(label, cfg.spacing), root / f"Img_{index:02d}_Labels.nii")
    zero_vox_offset(labels)
