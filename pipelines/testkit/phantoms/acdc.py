"""ACDC phantom: short-axis cardiac cine MRI in the ACDC training layout.

``<root>/training/patientXXX/`` holds ``Info.cfg``, the whole cine ``patientXXX_4d.nii.gz``
and the end-diastolic and end-systolic frames with their labels
(``patientXXX_frameYY.nii.gz`` / ``_gt.nii.gz``, YY 1-based). Arrays are (X, Y, Z) with the
slices last; images int16 (float32 for some patients), labels uint8 (0 background, 1 RV
cavity, 2 myocardium, 3 LV cavity). Like the real files, the qform holds the true spacing
while the sform is a unit-scale diag(-1, -1, 1): nibabel's ``affine`` reports 1 mm voxels and
only ``header.get_zooms()`` (or the qform) gives the real spacing.

What makes it hard like the real thing: an RV cavity as bright as the LV pool wrapping the
septum, bright unlabelled atria, aorta and fat, a dark lung and a grey liver, papillary
muscles inside the cavity, LV-free slices above the valve plane and past the apex, a smooth
coil bias, Rician noise, and patients that differ in pathology (the five ACDC groups), heart
size, position, orientation, contrast and intensity scale.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipelines.testkit.phantoms.config import PhantomConfig
from pathlib import Path

import nibabel as nib
import numpy as np

from pipelines.testkit.phantoms.canvas import Canvas, Grid
from pipelines.testkit.phantoms.heart import BeatingHeart, HeartShape, Intensities, contraction
from pipelines.testkit.phantoms.shapes import FLOAT, Ellipsoid, Intersection, Slab, Wobble
from pipelines.testkit.phantoms.texture import NoiseBank, bias_field, smooth_field, to_int16
from pipelines.testkit.phantoms.writers import save_nifti

NAME = "acdc"
DEFAULT_CASES = 100
GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")


@dataclass(frozen=True)
class Config(PhantomConfig):
    """Ranges the patients are drawn from; ``inplane``/``slices``/``frames`` fix a size instead."""

    x_size: tuple[int, int] = (154, 256)
    y_size: tuple[int, int] = (224, 256)
    inplane_spacing: tuple[float, float] = (1.3, 1.8)
    slice_spacing: tuple[float, float] = (5.0, 10.0)
    slice_count: tuple[int, int] = (6, 18)
    frame_count: tuple[int, int] = (20, 30)
    float_fraction: float = 0.15
    inplane: int | None = None
    slices: int | None = None
    frames: int | None = None
    annotator: bool = False  # annotator-like annotations (see pipelines.testkit.phantoms.annotator)
    masked_from: int = 1  # with ``annotator``: patients from this index on keep their full masks

    @classmethod
    def small(cls) -> "Config":
        """A cropped, coarse version for tests and the quick demo: about 60 x 64 x 7, 8 frames."""
        return cls(x_size=(52, 64), y_size=(60, 64), inplane_spacing=(2.4, 2.8), slice_spacing=(12.0, 14.0),
                   slice_count=(6, 8), frame_count=(6, 10))


@dataclass(frozen=True)
class Patient:
    """Everything drawn for one patient (geometry in mm; the grid's origin is voxel (0, 0, 0))."""

    pid: int
    group: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    n_frames: int
    ed: int  # 1-based, as in Info.cfg
    es: int
    height_cm: float
    weight_kg: float
    as_float: bool
    heart: HeartShape
    body_axes: tuple[tuple[float, float], tuple[float, float]]  # patient's left, posterior (unit vectors)
    frame_ms: float


def _uniform(rng, lo_hi) -> float:
    return float(rng.uniform(*lo_hi))


def sample_patient(rng: np.random.Generator, pid: int, cfg: Config) -> Patient:
    """Draw one patient: pathology by cycling the five groups, then size, pose and cardiac phases."""
    group = GROUPS[(pid - 1) % len(GROUPS)]
    # Pathology sets cavity size, wall thickness and how much the ventricles eject.
    radius, wall, ejection, rv_scale, rv_ejection = {
        "NOR": (24.0, 8.5, 0.36, 1.0, 0.32),
        "MINF": (28.0, 8.0, 0.17, 1.0, 0.28),
        "DCM": (33.0, 6.5, 0.09, 1.05, 0.22),
        "HCM": (20.0, 14.0, 0.45, 0.95, 0.34),
        "RV": (23.0, 8.0, 0.33, 1.4, 0.14),
    }[group]
    radius *= rng.uniform(0.88, 1.12)
    wall *= rng.uniform(0.85, 1.15)
    ejection = float(np.clip(ejection + rng.normal(0, 0.03), 0.04, 0.55))
    lv_length = radius * rng.uniform(3.1, 3.6)

    # Grid: real ACDC sizes, or a fixed size with the spacing that keeps a similar field of view.
    nx = int(rng.integers(cfg.x_size[0] // 2, cfg.x_size[1] // 2 + 1)) * 2
    ny = int(rng.integers(cfg.y_size[0] // 2, cfg.y_size[1] // 2 + 1)) * 2
    sxy = round(_uniform(rng, cfg.inplane_spacing), 4)
    if cfg.inplane:
        sxy = round(sxy * float(np.sqrt(nx * ny)) / cfg.inplane, 4)
        nx = ny = cfg.inplane
    dz = 10.0 if rng.random() < 0.6 else round(_uniform(rng, cfg.slice_spacing) * 2) / 2
    dz = float(np.clip(dz, *cfg.slice_spacing))
    apex_wall = wall * 0.8
    n_above = int(rng.choice([0, 1, 1, 1, 2]))
    n_below = int(rng.choice([0, 1]))
    if cfg.slices:
        nz = cfg.slices
        n_above, n_below = (min(n_above, 1), 0) if nz < 5 else (max(n_above, 1), n_below)
        dz = round((lv_length + apex_wall) / max(nz - n_above - n_below, 1), 3)
    else:
        heart_slices = int(np.ceil((lv_length + apex_wall) / dz))
        nz = int(np.clip(n_above + heart_slices + n_below, *cfg.slice_count))
    z_base = (n_above - 1 + rng.uniform(0.55, 0.95)) * dz

    rv_direction_body = np.arctan2(-0.8, -0.6) + rng.normal(0, 0.25)  # towards patient's right, anterior
    psi = rng.uniform(-0.5, 0.5)  # how the patient lies in the image
    left = (float(np.cos(psi)), float(np.sin(psi)))
    posterior = (-left[1], left[0])
    rv_direction = float(rv_direction_body + psi)

    heart = HeartShape(
        centre=(0.0, 0.0), tilt=(float(rng.normal(0, 0.12)), float(rng.normal(0, 0.12))),
        rv_direction=rv_direction, z_base=float(z_base), lv_length=float(lv_length), lv_radius=float(radius),
        wall=float(wall), apex_wall=float(apex_wall), ejection=ejection,
        base_descent=float(lv_length * rng.uniform(0.08, 0.15) * (ejection / 0.36) ** 0.5),
        rv_scale=float(rv_scale * rng.uniform(0.9, 1.1)), rv_ejection=float(rv_ejection * rng.uniform(0.8, 1.2)),
        infarct_angle=float(rng.uniform(0, 2 * np.pi)),
        infarct_amplitude=0.85 if group == "MINF" else 0.0,
        endo_wobble=(Wobble.random(rng, 0.05, 4), Wobble.random(rng, 0.06, 4)),
        epi_wobble=(Wobble.random(rng, 0.03, 3), Wobble.random(rng, 0.04, 3)),
        papillary_angles=(float(rv_direction + np.pi * 0.62 + rng.normal(0, 0.15)),
                          float(rv_direction - np.pi * 0.62 + rng.normal(0, 0.15))),
    )
    # Place the LV so the whole heart (it extends towards the RV) lies inside the field of view.
    fov = np.array([nx * sxy, ny * sxy])
    lo, hi = heart.footprint()
    centre = fov / 2 - (lo + hi) / 2 + rng.normal(0, 0.04, 2) * fov
    margin = np.maximum((fov - (hi - lo)) / 2, 0.0)
    centre = np.clip(centre, fov / 2 - (lo + hi) / 2 - margin, fov / 2 - (lo + hi) / 2 + margin)
    heart = dataclasses.replace(heart, centre=(float(centre[0]), float(centre[1])))

    n_frames = int(cfg.frames or rng.integers(cfg.frame_count[0], cfg.frame_count[1] + 1))
    ed = 1 if rng.random() < 0.9 or n_frames < 4 else 2
    es = int(np.clip(ed + round(n_frames * rng.uniform(0.3, 0.42)), ed + 1, n_frames))
    return Patient(
        pid=pid, group=group, shape=(nx, ny, nz), spacing=(sxy, sxy, dz), n_frames=n_frames, ed=ed, es=es,
        height_cm=round(float(rng.uniform(150, 195)), 1), weight_kg=round(float(rng.uniform(48, 115)), 1),
        as_float=bool(rng.random() < cfg.float_fraction), heart=heart, body_axes=(left, posterior),
        frame_ms=round(float(rng.uniform(700, 1100)) / n_frames, 3),
    )


def _body_point(patient: Patient, left_mm: float, posterior_mm: float, origin) -> tuple[float, float]:
    (lx, ly), (px, py) = patient.body_axes
    return origin[0] + left_mm * lx + posterior_mm * px, origin[1] + left_mm * ly + posterior_mm * py


def _body_frame(patient: Patient) -> np.ndarray:
    """Rotation whose first two columns are the patient's left and posterior directions."""
    (lx, ly), (px, py) = patient.body_axes
    return np.array([[lx, px, 0.0], [ly, py, 0.0], [0.0, 0.0, 1.0]])


def _cylinder(patient, left, posterior, origin, radii, z_range=None, wobble=None):
    """An elliptic cylinder along z in body axes, optionally capped to ``z_range``."""
    x, y = _body_point(patient, left, posterior, origin)
    body = Ellipsoid((x, y, 0.0), (radii[0], radii[1], np.inf), _body_frame(patient), wobble)
    return body if z_range is None else Intersection((body, Slab(2, *z_range)))


def paint_surroundings(rng: np.random.Generator, patient: Patient, canvas: Canvas, tissue: dict) -> None:
    """Everything around the heart, which does not move during the cycle: chest, lungs, aorta, liver, fat."""
    h = patient.heart
    lv = (h.centre[0], h.centre[1])
    fine = smooth_field(rng, canvas.grid.shape, (2.5, 2.5, 1.0))
    coarse = smooth_field(rng, canvas.grid.shape, (12.0 / patient.spacing[0], 12.0 / patient.spacing[0], 2.0))
    body = _body_point(patient, -25.0 + rng.normal(0, 5), 42.0 + rng.normal(0, 6), lv)
    half_lat, half_ap = rng.uniform(150, 185), rng.uniform(102, 125)
    fat = rng.uniform(6, 25)
    outline = Wobble.random(rng, 0.03, 3)
    z_top, z_apex = h.z_base, h.z_base + h.lv_length + h.apex_wall

    canvas.paint(_cylinder(patient, 0, 0, body, (half_lat, half_ap), wobble=outline), tissue["fat"], fine, 0.08)
    canvas.paint(_cylinder(patient, 0, 0, body, (half_lat - fat, half_ap - fat), wobble=outline),
                 tissue["muscle"], fine, 0.12)
    canvas.paint(_cylinder(patient, 0, -half_ap + fat + 14, body, (22, 9)), tissue["bone"], fine, 0.15)  # sternum
    for side in (-1, 1):
        lung = _cylinder(patient, side * rng.uniform(72, 88), rng.uniform(-5, 15), body,
                         (rng.uniform(48, 60), rng.uniform(70, 88)), wobble=Wobble.random(rng, 0.05, 3))
        canvas.paint(lung, tissue["lung"], coarse, 0.5)
    canvas.paint(_cylinder(patient, 0, 78, body, (18, 16)), tissue["bone"], fine, 0.2)  # vertebral body
    canvas.paint(_cylinder(patient, 0, 100, body, (8, 7)), tissue["csf"], fine, 0.05)
    for side in (-1, 1):
        canvas.paint(_cylinder(patient, side * 32, 108, body, (22, 16)), tissue["muscle"], fine, 0.12)
    canvas.paint(_cylinder(patient, 22, 52, body, (11, 11)), tissue["aorta"], coarse, 0.05)  # descending aorta
    # Epicardial fat: bright patches on the heart's surface (more of them show at end-systole).
    for _ in range(int(rng.integers(3, 7))):
        angle = h.rv_direction + rng.uniform(-2.2, 2.2)
        spot = _towards(lv, angle, h.epi_radius + rng.uniform(0, 8))
        size = rng.uniform(4, 10)
        canvas.paint(Ellipsoid((*spot, z_top + rng.uniform(0, h.lv_length)), (size, size * rng.uniform(1, 2), rng.uniform(15, 40)),
                               _body_frame(patient)), tissue["fat"] * rng.uniform(0.7, 1.0), fine, 0.1)
    # Liver and stomach rise into the lowest slices.
    liver_centre = _body_point(patient, -55, 10, body)
    canvas.paint(Ellipsoid((*liver_centre, z_apex + rng.uniform(40, 70)), (100, 80, 75), _body_frame(patient)),
                 tissue["liver"], coarse, 0.12)
    stomach = _body_point(patient, 70, 0, body)
    canvas.paint(Ellipsoid((*stomach, z_apex + rng.uniform(30, 60)), (45, 38, 50), _body_frame(patient)),
                 tissue["stomach"], coarse, 0.3)


def _towards(point, angle, distance):
    return point[0] + distance * np.cos(angle), point[1] + distance * np.sin(angle)


def draw_tissue(rng: np.random.Generator) -> tuple[dict, Intensities]:
    """Signal of each tissue relative to the LV blood pool (bSSFP cine: blood and fat bright)."""
    myo = rng.uniform(0.24, 0.42)
    tissue = {
        "fat": rng.uniform(0.7, 0.95), "muscle": myo * rng.uniform(0.8, 1.15), "lung": rng.uniform(0.03, 0.08),
        "bone": rng.uniform(0.3, 0.5), "csf": rng.uniform(0.7, 0.95), "aorta": rng.uniform(0.85, 1.05),
        "liver": rng.uniform(0.3, 0.48), "stomach": rng.uniform(0.4, 0.8),
    }
    heart = Intensities(lv_blood=1.0, rv_blood=rng.uniform(0.93, 1.05), atrial_blood=rng.uniform(0.8, 1.0),
                        myocardium=myo, papillary=myo * rng.uniform(1.0, 1.3))
    return tissue, heart


@dataclass
class Cine:
    """A rendered patient: the whole cine and the labels of the ED and ES frames."""

    patient: Patient
    frames: np.ndarray  # (X, Y, Z, T), int16 or float32
    labels: dict[int, np.ndarray]  # 1-based frame -> (X, Y, Z) uint8


def render(rng: np.random.Generator, patient: Patient) -> Cine:
    """Render every frame of the cine (noise included) and the ED/ES labels."""
    grid = Grid(patient.shape, patient.spacing, slab_axis=2)
    canvas = Canvas(grid, background=0.0)
    tissue, heart_tissue = draw_tissue(rng)
    paint_surroundings(rng, patient, canvas, tissue)

    h = patient.heart
    lo, hi = h.footprint()
    region = grid.region((*lo, -np.inf), (*hi, np.inf))
    xs, ys, zs = (grid.axis_mm(a)[region[a]] for a in range(3))
    heart = BeatingHeart(h, xs, ys, zs, slice_thickness=patient.spacing[2], edge_mm=grid.edge_mm)
    sub = tuple(s.stop - s.start for s in region)
    blood_tex = 1.0 + 0.05 * smooth_field(rng, sub, (6.0 / grid.edge_mm, 6.0 / grid.edge_mm, 1.0))
    muscle_tex = 1.0 + 0.08 * smooth_field(rng, sub, (2.0, 2.0, 1.0))

    scale = float(np.exp(rng.uniform(np.log(150), np.log(1100))))
    gain = bias_field(rng, grid.shape, grid.spacing, strength=rng.uniform(0.06, 0.18), scale_mm=180.0)
    # The anterior coil is closer to the heart: a gentle gradient along the patient's AP axis.
    post = np.asarray(patient.body_axes[1], dtype=FLOAT)
    x, y = grid.axis_mm(0).reshape(-1, 1, 1), grid.axis_mm(1).reshape(1, -1, 1)
    ap = (x - x.mean()) * post[0] + (y - y.mean()) * post[1]
    gain *= np.clip(1.0 - rng.uniform(0.0, 0.25) * ap / 300.0, 0.5, 1.5)
    gain *= FLOAT(scale)
    sigma = scale * rng.uniform(0.025, 0.06)
    # Fortran order throughout: NIfTI stores voxels x-fastest, so writing the cine needs no transpose.
    gain = np.asfortranarray(gain)
    still = np.asfortranarray(canvas.image) * gain
    noise = NoiseBank(rng, still.size)

    dtype = np.float32 if patient.as_float else np.int16
    frames = np.empty((*patient.shape, patient.n_frames), dtype=dtype, order="F")
    labels: dict[int, np.ndarray] = {}
    for f in range(patient.n_frames):
        c = contraction(f, patient.ed - 1, patient.es - 1, patient.n_frames)
        want_label = (f + 1) in (patient.ed, patient.es)
        image, label = heart.render(canvas.image[region], c, heart_tissue, blood_tex, muscle_tex, want_label)
        clean = still.copy(order="F")
        clean[region] = image * gain[region]
        noisy = noise.rician(clean, sigma)
        frames[..., f] = np.round(noisy * 8) / 8 if patient.as_float else to_int16(noisy)
        if want_label:
            full = np.zeros(patient.shape, dtype=np.uint8)
            full[region] = label
            labels[f + 1] = full
    return Cine(patient, frames, labels)


def _nifti(data: np.ndarray, patient: Patient, zooms_extra: tuple[float, ...] = ()) -> nib.Nifti1Image:
    """NIfTI with ACDC's geometry quirk: real spacing in the qform, unit-scale diag(-1,-1,1) sform."""
    sx, sy, sz = patient.spacing
    image = nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0]))
    image.set_qform(np.diag([-sx, -sy, sz, 1.0]), code=1)
    image.set_sform(np.diag([-1.0, -1.0, 1.0, 1.0]), code=1)
    if zooms_extra:
        image.header.set_zooms((sx, sy, sz, *zooms_extra))
        image.header.set_xyzt_units("mm", "msec")
    else:
        image.header.set_xyzt_units("mm")
    return image


def info_cfg(patient: Patient) -> str:
    """The ``Info.cfg`` text; a few patients put a space before the colon, as some real files do."""
    sep = " : " if patient.pid % 7 == 3 else ": "
    rows = [("ED", patient.ed), ("ES", patient.es), ("Group", patient.group), ("Height", f"{patient.height_cm:.1f}"),
            ("NbFrame", patient.n_frames), ("Weight", f"{patient.weight_kg:.1f}")]
    return "".join(f"{key}{sep}{value}\n" for key, value in rows)


def case_dir(root: Path, index: int) -> Path:
    return root / "training" / f"patient{index:03d}"


def write_case(root: Path, index: int, rng: np.random.Generator, cfg: Config) -> None:
    """Write patient ``index`` (1-based) under ``root/training``."""
    patient = sample_patient(rng, index, cfg)
    cine = render(rng, patient)
    folder = case_dir(root, index)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"patient{index:03d}"
    (folder / "Info.cfg").write_text(info_cfg(patient), encoding="ascii")
    save_nifti(_nifti(cine.frames, patient, (patient.frame_ms,)), folder / f"{name}_4d.nii.gz")
    for frame, label in cine.labels.items():
        save_nifti(_nifti(np.asfortranarray(cine.frames[..., frame - 1]), patient), folder / f"{name}_frame{frame:02d}.nii.gz")
        if not cfg.annotator or index >= cfg.masked_from:
            save_nifti(_nifti(label, patient), folder / f"{name}_frame{frame:02d}_gt.nii.gz")
    if cfg.annotator:
        # Drawn after the rendering, from a generator of its own: the images are the same bytes either way.
        from pipelines.testkit.phantoms import annotator

        draw = np.random.default_rng(int(rng.integers(2**63)))
        rows = {"tags": [], "estimates": []}
        for frame, label in cine.labels.items():
            found = annotator.annotate_frame(folder, f"{name}_frame{frame:02d}", label, _nifti(label, patient), draw,
                                             lps=index % 2 == 1, spacing=patient.spacing)
            rows["tags"] += found["tags"]
            rows["estimates"] += found["estimates"]
        annotator.write_rows(folder, rows)


def finish(root: Path, cfg: Config) -> None:
    """After every case is written: the annotator's tables at the root."""
    if cfg.annotator:
        from pipelines.testkit.phantoms import annotator

        annotator.merge_tables(root)
