"""A beating heart in a short-axis cine stack: LV, myocardium, RV and atria, frame by frame.

Geometry lives in millimetres around the LV long axis, which runs along the slice axis (z)
from the mitral valve plane ("base", small z) to the apex. Per slice the LV cavity is a
wobbly disc whose radius falls from base to apex like a half-ellipsoid; the myocardium is a
ring around it that keeps its area through the cycle (so the wall thickens as the cavity
shrinks at end-systole); the RV cavity is an ellipse hugging the septum, which leaves a
crescent once the LV is cut out of it; the atria and aortic root, bright and unlabelled,
fill the slices above the valve plane. At end-systole the base moves towards the apex.

Partial volume: in-plane each boundary is a ramp one pixel wide; through the slice the ramp
widens by how much the radius changes across the slice thickness (wide near the apex,
sharp mid-ventricle), and the valve plane blends the LV with the atria in the slice it cuts.
Labels follow the slice centre: 1 RV cavity, 2 myocardium, 3 LV cavity (papillary muscles
included, as ACDC's annotators did).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.testkit.phantoms.shapes import FLOAT, Wobble

RV_LABEL, MYO_LABEL, LV_LABEL = 1, 2, 3
RV_ABOVE_BASE = 8.0  # mm: the RV outflow tract reaches above the mitral valve plane
RV_OVERLAP = 0.42  # how far (in epicardial radii) the RV ellipse reaches behind the septum
RV_THICKNESS = 0.6  # crescent thickness at the base, in epicardial radii, for a normal RV


@dataclass(frozen=True)
class HeartShape:
    """One patient's heart at end-diastole plus how it contracts (all lengths in mm)."""

    centre: tuple[float, float]  # LV axis at the base, in-plane position
    tilt: tuple[float, float]  # in-plane drift of the LV axis per mm towards the apex
    rv_direction: float  # radians: from LV centre towards the RV
    z_base: float  # valve plane at end-diastole
    lv_length: float  # base to endocardial apex
    lv_radius: float  # endocardial radius at the base
    wall: float  # myocardial thickness
    apex_wall: float
    ejection: float  # 1 - (ES cavity radius / ED cavity radius)
    base_descent: float  # how far the valve plane moves towards the apex at ES
    rv_scale: float  # RV size relative to a normal RV
    rv_ejection: float
    infarct_angle: float  # MINF: where the wall does not contract (0 amplitude elsewhere)
    infarct_amplitude: float
    endo_wobble: tuple[Wobble, Wobble]  # at the base and the apex, blended along the axis
    epi_wobble: tuple[Wobble, Wobble]
    papillary_angles: tuple[float, float]

    @property
    def epi_radius(self) -> float:
        return self.lv_radius + self.wall

    def rv_ellipse(self, size, epi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RV ellipse (centre offset towards the RV, half-axis along, half-axis across) for a slice.

        ``size`` is the RV's relative size there (profile times contraction) and ``epi`` the local
        epicardial radius. The ellipse starts RV_OVERLAP epicardial radii behind the septum and
        ends a crescent's thickness beyond the LV, so once the LV is cut out what is left wraps
        the septum like a crescent, at end-systole as at end-diastole.
        """
        thickness = RV_THICKNESS * self.epi_radius * self.rv_scale * size
        along = 0.5 * (thickness + (1.0 + RV_OVERLAP) * epi) * (size > 0)
        across = 1.2 * self.epi_radius * self.rv_scale**0.5 * np.sqrt(size)
        return along - RV_OVERLAP * epi, along, across

    def atria_layout(self) -> list[tuple[float, float, float]]:
        """(angle, distance from the LV axis, radius) of the left atrium, right atrium and aortic root."""
        d, e, r = self.rv_direction, self.epi_radius, self.lv_radius
        return [(d + np.pi * 0.95, 0.55 * e, 0.85 * r), (d + 0.15, 1.25 * e, 0.8 * r), (d - 1.1, 0.35 * e, 0.5 * r)]

    def footprint(self) -> tuple[np.ndarray, np.ndarray]:
        """In-plane bounding box (mm) of everything the heart draws, over all slices and phases."""
        angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        ring = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        points = [ring * (self.epi_radius * 1.2)]
        for angle, dist, radius in self.atria_layout():
            points.append(dist * np.array([np.cos(angle), np.sin(angle)]) + ring * (1.25 * radius + 3.0))
        offset, a, b = (float(v) for v in self.rv_ellipse(np.float64(1.0), np.float64(self.epi_radius)))
        along = np.array([np.cos(self.rv_direction), np.sin(self.rv_direction)])
        across = np.array([-along[1], along[0]])
        rim = (ring[:, :1] * (a + 4.0)) * along + (ring[:, 1:] * (b + 4.0)) * across
        points.append(max(offset, 0.0) * along + rim)
        pts = np.concatenate(points)
        drift = np.array(self.tilt) * (self.lv_length + self.apex_wall + 10.0)
        pts = np.concatenate([pts, pts + drift, pts - np.array(self.tilt) * 45.0]) + np.array(self.centre)
        return pts.min(axis=0), pts.max(axis=0)


def contraction(frame: int, ed: int, es: int, n_frames: int) -> float:
    """0 at end-diastole, 1 at end-systole: ejection then slower filling (0-based frames)."""
    t = (frame - ed) % n_frames
    systole = (es - ed) % n_frames
    if t <= systole:
        return 0.5 - 0.5 * np.cos(np.pi * t / max(systole, 1))
    return 0.5 + 0.5 * np.cos(np.pi * (t - systole) / max(n_frames - systole, 1))


def _half_ellipse(u: np.ndarray) -> np.ndarray:
    """Radius profile along the axis: 1 at the base (u=0), 0 at the apex (u=1), 0 outside."""
    inside = (u >= 0) & (u <= 1)
    return np.where(inside, np.sqrt(np.clip(1.0 - u * u, 0.0, 1.0)), 0.0)


@dataclass
class Intensities:
    """Relative signal of each heart tissue (the LV blood pool is 1)."""

    lv_blood: float
    rv_blood: float
    atrial_blood: float
    myocardium: float
    papillary: float


class BeatingHeart:
    """Renders :class:`HeartShape` into a region of a slice stack at any point of the cycle.

    Everything that does not change with time (polar coordinates, outline harmonics) is
    computed once, so each further frame costs a few array operations over the region.
    """

    def __init__(self, shape: HeartShape, x_mm: np.ndarray, y_mm: np.ndarray, z_mm: np.ndarray,
                 slice_thickness: float, edge_mm: float):
        self.s = shape
        self.z = z_mm.astype(FLOAT).reshape(1, 1, -1)
        self.dz = float(slice_thickness)
        self.edge = float(edge_mm)
        depth = self.z - FLOAT(shape.z_base)
        cx = FLOAT(shape.centre[0]) + FLOAT(shape.tilt[0]) * depth
        cy = FLOAT(shape.centre[1]) + FLOAT(shape.tilt[1]) * depth
        dx = x_mm.astype(FLOAT).reshape(-1, 1, 1) - cx
        dy = y_mm.astype(FLOAT).reshape(1, -1, 1) - cy
        self.r = np.sqrt(dx * dx + dy * dy)
        theta = np.arctan2(dy, dx)
        toward = np.cos(theta - FLOAT(shape.rv_direction))
        # Projections on the RV axis (towards the RV) and across it.
        self.along = self.r * toward
        self.across = self.r * np.sin(theta - FLOAT(shape.rv_direction))
        blend = np.clip(depth / FLOAT(shape.lv_length), 0.0, 1.0)
        self.endo_shape = _blend_wobble(shape.endo_wobble, theta, blend)
        self.epi_shape = _blend_wobble(shape.epi_wobble, theta, blend)
        gap = np.cos(theta - FLOAT(shape.infarct_angle))
        self.still = (shape.infarct_amplitude * np.clip(gap, 0.0, 1.0) ** 4).astype(FLOAT)
        self.r_cos_pap = [self.r * np.cos(theta - FLOAT(a)) for a in shape.papillary_angles]
        # Atria and aortic root: fixed centres relative to the LV axis.
        self.atria = []
        for angle, dist, radius in shape.atria_layout():
            ax, ay = dist * np.cos(angle), dist * np.sin(angle)
            self.atria.append((np.sqrt((dx - FLOAT(ax)) ** 2 + (dy - FLOAT(ay)) ** 2), radius))

    # -- per-slice profiles -------------------------------------------------------------------

    def _profiles(self, z: np.ndarray, c: float):
        """Endo/epi radii, RV size and the fraction of the slice below the valve plane at contraction ``c``."""
        s = self.s
        base = s.z_base + c * s.base_descent
        length = s.lv_length - c * s.base_descent
        # Above the valve plane the radii continue the basal ones: the cut itself is applied by
        # the caller as a partial-volume fraction, so it does not widen the in-plane edges.
        depth = np.maximum(z - base, 0.0)
        endo_ed = s.lv_radius * _half_ellipse(depth / length)
        epi_ed = s.epi_radius * _half_ellipse(depth / (length + s.apex_wall))
        endo = endo_ed * (1.0 - c * s.ejection)
        # The myocardium is incompressible: its ring keeps its area as the cavity shrinks.
        epi = np.sqrt(endo**2 + np.maximum(epi_ed**2 - endo_ed**2, 0.0))
        rv_base = base - RV_ABOVE_BASE
        rv_size = _half_ellipse(np.maximum(z - rv_base, 0.0) / (0.8 * length + RV_ABOVE_BASE)) * (1.0 - c * s.rv_ejection)
        return endo, epi, rv_size, base, endo_ed

    def _edges(self, radius_at) -> np.ndarray:
        """Per-slice ramp width: one pixel in-plane, widened by the radius change across the slice."""
        change = radius_at(self.z + self.dz / 2) - radius_at(self.z - self.dz / 2)
        return np.sqrt(self.edge**2 + change**2).astype(FLOAT)

    # -- rendering ------------------------------------------------------------------------------

    def render(self, background: np.ndarray, c: float, tissue: Intensities, blood_texture: np.ndarray,
               muscle_texture: np.ndarray, with_label: bool = False):
        """The region's image at contraction ``c`` drawn over ``background``; and its label if asked."""
        s = self.s
        endo, epi, rv_size, base, endo_ed = self._profiles(self.z, c)
        below_valve = np.clip((self.z - base) / self.dz + 0.5, 0.0, 1.0)
        below_rv_top = np.clip((self.z - base + RV_ABOVE_BASE) / self.dz + 0.5, 0.0, 1.0)
        endo_edge = self._edges(lambda z: self._profiles(z, c)[0])
        epi_edge = self._edges(lambda z: self._profiles(z, c)[1])
        rv_edge = self._edges(lambda z: self._profiles(z, c)[2] * RV_THICKNESS * s.epi_radius)

        image = background.copy()
        myo = FLOAT(tissue.myocardium) * muscle_texture
        blood = blood_texture
        full = np.zeros(image.shape, dtype=FLOAT)

        # Atria and aortic root above the valve plane (their wall first).
        atrial_size = _half_ellipse((base - self.z) / 40.0) * (1.0 - below_valve)
        k = _span(atrial_size)
        if k is not None:
            for dist, radius in self.atria:
                r_atrium = FLOAT(radius) * (1.0 + 0.25 * c) * atrial_size[..., k]
                _blend(image[..., k], _ramp(dist[..., k] - r_atrium - 2.5, self.edge), myo[..., k])
                _blend(image[..., k], _ramp(dist[..., k] - r_atrium, self.edge),
                       FLOAT(tissue.atrial_blood) * blood[..., k])

        # LV epicardium (the myocardium is what the cavity leaves of it).
        epi_shape = full.copy()
        k = _span(epi * below_valve)
        if k is not None:
            epi_shape[..., k] = _ramp(self.r[..., k] - epi[..., k] * self.epi_shape[..., k], epi_edge[..., k])
        lv_epi = epi_shape * below_valve

        # RV free wall and cavity: an ellipse beside the LV, pushed out by the septum.
        rv_shape = full.copy()
        k = _span(rv_size * below_rv_top)
        if k is not None:
            offset, a_z, b_z = s.rv_ellipse(rv_size[..., k], epi[..., k])
            rho = np.sqrt(((self.along[..., k] - offset) / a_z) ** 2 + (self.across[..., k] / b_z) ** 2)
            rv_dist = (rho - 1.0) * np.minimum(a_z, b_z)
            _blend(image[..., k], _ramp(rv_dist - 3.0, rv_edge[..., k]) * below_rv_top[..., k], myo[..., k])
            rv_shape[..., k] = _ramp(rv_dist, rv_edge[..., k]) * (1.0 - lv_epi[..., k])
        rv_blood = rv_shape * below_rv_top
        _blend(image, lv_epi, myo)
        _blend(image, rv_blood, FLOAT(tissue.rv_blood) * blood)

        # LV cavity; an infarcted sector (MINF) barely moves while the rest of the wall contracts.
        cavity_shape = full
        k = _span(endo * below_valve)
        if k is not None:
            squeeze = 1.0 - FLOAT(c * s.ejection) * (1.0 - self.still[..., k])
            endo_r = endo_ed[..., k] * squeeze * self.endo_shape[..., k]
            cavity_shape[..., k] = _ramp(self.r[..., k] - endo_r, endo_edge[..., k])
        lv_cavity = cavity_shape * below_valve
        _blend(image, lv_cavity, FLOAT(tissue.lv_blood) * blood)

        # Papillary muscles: darker blobs inside the cavity, labelled as cavity.
        u = (self.z - base) / (s.lv_length - c * s.base_descent)
        k = _span(((u > 0.25) & (u < 0.8)) * endo)
        if k is not None:
            e = endo[..., k]
            pap_r, pap_d = 0.15 * e * (1.0 + 0.5 * c), 0.66 * e
            r = self.r[..., k]
            for r_cos in self.r_cos_pap:
                dist = np.sqrt(np.maximum(r * r + pap_d * pap_d - 2.0 * pap_d * r_cos[..., k], 0.0))
                blob = _ramp(dist - pap_r, self.edge) * lv_cavity[..., k]
                _blend(image[..., k], blob, FLOAT(tissue.papillary) * myo[..., k] / FLOAT(tissue.myocardium))

        if not with_label:
            return image, None
        # Labels follow the slice centre: the shape there, and which side of the valve plane it is.
        label = np.zeros(image.shape, dtype=np.uint8)
        label[(rv_shape >= 0.5) & (below_rv_top >= 0.5)] = RV_LABEL
        label[(epi_shape >= 0.5) & (below_valve >= 0.5)] = MYO_LABEL
        label[(cavity_shape >= 0.5) & (below_valve >= 0.5)] = LV_LABEL
        return image, label


def _span(per_slice: np.ndarray) -> slice | None:
    """The slices (last axis) where ``per_slice`` is non-zero, as one contiguous slice, or None."""
    nonzero = np.flatnonzero(np.asarray(per_slice).reshape(-1))
    return None if nonzero.size == 0 else slice(int(nonzero[0]), int(nonzero[-1]) + 1)


def _blend_wobble(pair: tuple[Wobble, Wobble], theta: np.ndarray, t: np.ndarray) -> np.ndarray:
    return (pair[0].factor(theta) * (1.0 - t) + pair[1].factor(theta) * t).astype(FLOAT)


def _ramp(distance: np.ndarray, width) -> np.ndarray:
    """Partial-volume fraction inside a boundary at signed ``distance`` (negative inside)."""
    out = np.divide(distance, -np.asarray(width, dtype=FLOAT), dtype=FLOAT)
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def _blend(image: np.ndarray, alpha: np.ndarray, value) -> None:
    """Alpha-blend ``value`` into ``image`` in place (``image`` may be a view)."""
    image += alpha * (value - image)
