"""PROMISE12 phantom: axial T2-weighted prostate MRI in the PROMISE12 training layout.

``<root>/TrainingData_Part{1,2,3}/CaseNN.mhd`` + ``.raw`` (MET_SHORT) and
``CaseNN_segmentation.mhd`` + ``.raw`` (MET_CHAR, 0/1), NN from 00, the cases dealt round-robin
over the three parts. Headers carry a non-identity TransformMatrix and a non-zero Offset like
the real ones. SimpleITK reads arrays (z, y, x): z = slices, rows run anterior to posterior.

What makes it hard like the real thing: a gland only slightly different from what surrounds
it (a bright peripheral zone next to equally bright periprostatic fat and veins, a darker
nodular transition zone), bright bladder and seminal vesicles just above it, rectum, muscles
and pelvic bones around it, the gland present only in the middle slices with a size that
changes from base to apex, and intensity scales and contrasts that differ strongly between
cases (vendors; an endorectal coil in some cases makes the tissue next to it glare).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.testkit.phantoms.config import PhantomConfig
from pathlib import Path

import numpy as np

from pipelines.testkit.phantoms.canvas import Canvas, Grid
from pipelines.testkit.phantoms.shapes import Ellipsoid, Intersection, Slab, Wobble, rotation
from pipelines.testkit.phantoms.texture import FLOAT, bias_field, rician_noise, smooth_field, to_int16
from pipelines.testkit.phantoms.writers import save_metaimage

NAME = "promise12"
DEFAULT_CASES = 50
PARTS = 3
GLAND = 1


@dataclass(frozen=True)
class Config(PhantomConfig):
    """Ranges the cases are drawn from; ``inplane``/``slices`` fix a size instead."""

    matrix_sizes: tuple[int, ...] = (256, 320, 384, 512)
    fov_mm: tuple[float, float] = (135.0, 200.0)
    inplane_spacing: tuple[float, float] = (0.27, 0.75)
    slice_spacing: tuple[float, float] = (2.2, 4.0)
    coverage_mm: tuple[float, float] = (65.0, 125.0)
    slice_count: tuple[int, int] = (15, 54)
    coil_fraction: float = 0.35
    inplane: int | None = None
    slices: int | None = None

    @classmethod
    def small(cls) -> "Config":
        """Coarse and tiny for tests and the quick demo: 48-64 pixels square, 8-12 slices."""
        return cls(matrix_sizes=(48, 56, 64), fov_mm=(120.0, 150.0), inplane_spacing=(1.8, 3.2),
                   slice_spacing=(5.0, 7.5), coverage_mm=(55.0, 72.0), slice_count=(8, 12))


@dataclass(frozen=True)
class Case:
    """One drawn case: grid, pose in the scanner, and the anatomy's sizes (mm)."""

    index: int
    shape: tuple[int, int, int]  # (x, y, z)
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]  # grid position of voxel (0, 0, 0), gland-centred
    direction: np.ndarray
    table_offset: tuple[float, float, float]
    endorectal_coil: bool
    gland_radii: tuple[float, float, float]  # lateral, AP, towards the base (superior)
    apex_radius: float  # towards the apex (inferior)


def sample_case(rng: np.random.Generator, index: int, cfg: Config) -> Case:
    n = int(rng.choice(cfg.matrix_sizes))
    fov = rng.uniform(*cfg.fov_mm)
    if cfg.inplane:
        n = cfg.inplane
    s = float(np.clip(fov / n, *cfg.inplane_spacing)) if not cfg.inplane else fov / n
    s = round(s, 6)
    radii = (rng.uniform(19, 28), rng.uniform(14, 21), rng.uniform(16, 23))
    apex = float(rng.uniform(0.65, 0.9) * radii[2])
    gland_length = radii[2] + apex
    coverage = rng.uniform(*cfg.coverage_mm)
    if cfg.slices:
        nz = cfg.slices
        dz = round(max(coverage, gland_length * 1.25) / nz, 4)
    else:
        dz = round(float(rng.uniform(*cfg.slice_spacing)), 4)
        # Room for the gland plus at least a slice and a half of gland-free tissue at each end.
        coverage = max(coverage, gland_length + 4 * dz)
        nz = int(np.clip(round(coverage / dz), *cfg.slice_count))
    # Gland near the centre of the field of view and of the slab (it is what the scan aims at).
    jitter = rng.normal(0, 0.06, 2) * n * s
    lowest, highest = radii[2] - (nz - 2.5) * dz, -apex - 1.5 * dz  # first slice's z: keep the gland inside
    middle = (lowest + highest) / 2
    z0 = middle + rng.uniform(-0.3, 0.3) * max(highest - lowest, 0.0) / 2
    origin = (-n * s / 2 + jitter[0], -n * s / 2 + jitter[1], z0)
    direction = rotation(rng.normal(0, 6), 2) @ rotation(rng.normal(0, 4), 0) @ rotation(rng.normal(0, 3), 1)
    return Case(
        index=index, shape=(n, n, nz), spacing=(s, s, dz),
        origin=tuple(float(v) for v in origin), direction=direction,
        table_offset=tuple(float(v) for v in rng.uniform(-40, 40, 3)),
        endorectal_coil=bool(rng.random() < cfg.coil_fraction),
        gland_radii=tuple(float(r) for r in radii), apex_radius=apex,
    )


def _tube(x, y, radii, z_range=(-1e4, 1e4), angle=0.0, wobble=None):
    """A structure running along the body axis (rectum, muscles, bones) with an elliptic section."""
    body = Ellipsoid((x, y, 0.0), (radii[0], radii[1], np.inf), rotation(angle, 2), wobble)
    return Intersection((body, Slab(2, *z_range)))


def paint_anatomy(rng: np.random.Generator, case: Case, canvas: Canvas) -> None:
    """Paint the pelvis around a gland centred at (0, 0, 0); z grows towards the head, y backwards."""
    shape, s = canvas.grid.shape, canvas.grid.spacing
    fine = smooth_field(rng, shape, (1.2 / s[0], 1.2 / s[1], 1.0))
    nodular = smooth_field(rng, shape, (3.0 / s[0], 3.0 / s[1], 3.0 / s[2]))
    coarse = smooth_field(rng, shape, (6.0 / s[0], 6.0 / s[1], 6.0 / s[2]))
    a, b, up = case.gland_radii
    fat, muscle, bone, urine = rng.uniform(0.6, 0.85), rng.uniform(0.2, 0.32), rng.uniform(0.35, 0.55), rng.uniform(0.9, 1.0)

    canvas.paint(_tube(0, 10, (rng.uniform(150, 185), rng.uniform(110, 135)), wobble=Wobble.random(rng, 0.03)),
                 fat, fine, 0.1)
    canvas.paint(_tube(0, 10, (rng.uniform(115, 140), rng.uniform(85, 100))), muscle * 1.2, coarse, 0.15)
    # Pelvic floor and side walls: gluteal and obturator muscles, ischiorectal fat, bones.
    for side in (-1, 1):
        canvas.paint(_tube(side * 75, 70, (48, 40)), muscle, coarse, 0.12)
        canvas.paint(_tube(side * (a + 28), b + 18, (20, 28), angle=side * 20), fat, coarse, 0.25)
        canvas.paint(_tube(side * (a + 16), 0, (7, 24), angle=side * 10), muscle, fine, 0.1)  # levator ani
        canvas.paint(_tube(side * rng.uniform(62, 72), -5, (22, 34), angle=side * 15), bone * 0.3, fine, 0.1)  # cortex
        canvas.paint(_tube(side * rng.uniform(62, 72), -5, (17, 29), angle=side * 15), bone, coarse, 0.25)  # marrow
        canvas.paint(_tube(side * 9, -(b + 30), (10, 17)), bone, coarse, 0.2)  # pubic symphysis
        canvas.paint(_tube(side * (a + 34), -8, (12, 24), angle=side * 10), muscle, fine, 0.1)  # obturator internus

    # Bladder above the gland, seminal vesicles behind its base.
    bladder_r = (rng.uniform(38, 55), rng.uniform(30, 42), rng.uniform(28, 40))
    bladder = Ellipsoid((0, -6, up + bladder_r[2] * 0.75), bladder_r, wobble=Wobble.random(rng, 0.04))
    canvas.paint(Ellipsoid(bladder.centre, tuple(r + 3 for r in bladder_r)), muscle * 1.3, fine, 0.1)
    canvas.paint(bladder, urine, coarse, 0.03)
    for side in (-1, 1):
        vesicle = Ellipsoid((side * 16, b * 0.9, up * 0.95), (16, 6, 9), rotation(side * 30, 2))
        canvas.paint(vesicle, rng.uniform(0.65, 0.9), nodular, 0.15)

    # Rectum behind the gland: dark wall, gas or stool, or the coil's balloon.
    rect_y = b + rng.uniform(10, 17)
    rect_r = (22, 18) if case.endorectal_coil else (rng.uniform(14, 20), rng.uniform(11, 15))
    canvas.paint(_tube(0, rect_y, (rect_r[0] + 4, rect_r[1] + 4), wobble=Wobble.random(rng, 0.05)), muscle, fine, 0.1)
    lumen = 0.03 if case.endorectal_coil else rng.uniform(0.05, 0.5)
    canvas.paint(_tube(0, rect_y, rect_r, wobble=Wobble.random(rng, 0.08)), lumen, coarse, 0.5)

    # Periprostatic fat and veins: about as bright as the peripheral zone, so the edge is faint.
    gland_wobble = Wobble.random(rng, 0.06, 4)
    pz, tz = rng.uniform(0.45, 0.7), rng.uniform(0.3, 0.48)
    veins = Ellipsoid((0, 0, 0), (a + 6, b + 5, up + 4), wobble=gland_wobble, third_below=case.apex_radius + 4)
    canvas.paint(veins, pz * rng.uniform(0.85, 1.15), coarse, 0.35)
    capsule = Ellipsoid((0, 0, 0), (a + 1.2, b + 1.2, up + 1.2), wobble=gland_wobble, third_below=case.apex_radius + 1.2)
    canvas.paint(capsule, muscle, opacity=rng.uniform(0.2, 0.6))
    gland = Ellipsoid((0, 0, 0), (a, b, up), wobble=gland_wobble, third_below=case.apex_radius)
    canvas.paint(gland, pz, coarse, 0.25, label=GLAND)
    # Transition zone: anterior, darker and nodular (benign hyperplasia), unlabelled as a zone.
    zone = Ellipsoid((0, -0.25 * b, 0.2 * up), (0.62 * a, 0.55 * b, 0.7 * up), wobble=Wobble.random(rng, 0.1, 4))
    canvas.paint(zone, tz, nodular, 0.22)
    for side in (-1, 1):  # neurovascular bundles: bright dots at the gland's back corners
        canvas.paint(_tube(side * 0.8 * a, 0.75 * b, (3, 3), (-up, up)), fat, fine, 0.1)


def render(rng: np.random.Generator, case: Case) -> tuple[np.ndarray, np.ndarray]:
    """(image int16, segmentation int8), both (x, y, z)."""
    grid = Grid(case.shape, case.spacing, case.origin, slab_axis=2)
    canvas = Canvas(grid)
    paint_anatomy(rng, case, canvas)
    # Vendors differ in contrast as well as scale: a per-case gamma on the relative signal.
    image = np.power(np.clip(canvas.image, 0, None), rng.uniform(0.75, 1.3), dtype=FLOAT)
    image *= bias_field(rng, grid.shape, grid.spacing, rng.uniform(0.15, 0.35), scale_mm=150.0)
    if case.endorectal_coil:
        x = grid.axis_mm(0).reshape(-1, 1, 1)
        y = grid.axis_mm(1).reshape(1, -1, 1) - case.gland_radii[1] - 14
        near = np.exp(-np.sqrt(x * x + y * y) / rng.uniform(15, 28))
        image *= 1.0 + rng.uniform(2.0, 5.0) * near
    scale = float(np.exp(rng.uniform(np.log(120), np.log(2500))))
    image *= FLOAT(scale)
    noisy = rician_noise(rng, image, scale * rng.uniform(0.015, 0.045))
    return to_int16(noisy), canvas.label.astype(np.int8)


def case_dir(root: Path, index: int) -> Path:
    return root / f"TrainingData_Part{index % PARTS + 1}"


def write_case(root: Path, index: int, rng: np.random.Generator, cfg: Config) -> None:
    """Write ``CaseNN`` (0-based) and its segmentation into one of the three parts."""
    case = sample_case(rng, index, cfg)
    image, label = render(rng, case)
    folder = case_dir(root, index)
    folder.mkdir(parents=True, exist_ok=True)
    # World position of voxel (0, 0, 0): the grid origin turned into the scanner frame, plus the table.
    offset = case.direction @ np.asarray(case.origin) + np.asarray(case.table_offset)
    for name, data in ((f"Case{index:02d}", image), (f"Case{index:02d}_segmentation", label)):
        save_metaimage(folder / f"{name}.mhd", data.transpose(2, 1, 0), case.spacing, tuple(offset), case.direction)
