"""Solid shapes in millimetres, rasterised with partial-volume edges.

Each shape knows its bounding box and returns, for voxel-centre coordinates given as
broadcastable arrays ``x, y, z`` (mm), an approximate signed distance to its surface
(negative inside). :func:`soft_inside` turns that distance into the fraction of a voxel the
shape fills, which is what gives real MR edges their blur. Irregular outlines come from a
``Wobble``: a few random low-order harmonics of the radius around one axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FLOAT = np.float32
EPS = 1e-6


def soft_inside(distance: np.ndarray, edge_mm: float) -> np.ndarray:
    """Fraction of a voxel inside a surface at signed ``distance`` (mm); ``edge_mm`` wide ramp."""
    out = np.multiply(distance, -1.0 / edge_mm, dtype=FLOAT)
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def rotation(angle_deg: float, axis: int = 2) -> np.ndarray:
    """3x3 rotation by ``angle_deg`` about coordinate ``axis``."""
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


@dataclass(frozen=True)
class Wobble:
    """Radius factor ``1 + sum_k a_k cos(k theta + phase_k)``: an organ outline that is no ellipse."""

    amplitudes: tuple[float, ...] = ()
    phases: tuple[float, ...] = ()
    first_order: int = 2

    @classmethod
    def random(cls, rng: np.random.Generator, amplitude: float, orders: int = 4, first_order: int = 2) -> "Wobble":
        """Harmonics ``first_order .. first_order+orders-1`` with amplitudes falling as 1/k."""
        ks = np.arange(first_order, first_order + orders)
        amps = rng.normal(0.0, amplitude, size=orders) * first_order / ks
        return cls(tuple(float(a) for a in amps), tuple(float(p) for p in rng.uniform(0, 2 * np.pi, orders)), first_order)

    def factor(self, theta: np.ndarray) -> np.ndarray:
        out = np.ones_like(theta, dtype=FLOAT)
        for k, (a, p) in enumerate(zip(self.amplitudes, self.phases), start=self.first_order):
            out += FLOAT(a) * np.cos(k * theta + FLOAT(p)).astype(FLOAT)
        return out


def _local(x, y, z, centre, frame):
    """Coordinates in the shape's own frame (columns of ``frame`` are its axes)."""
    d = (x - FLOAT(centre[0]), y - FLOAT(centre[1]), z - FLOAT(centre[2]))
    # Skipping zero terms keeps axis-aligned cylinders 2D (they then broadcast along z for free).
    return tuple(sum(FLOAT(frame[j, i]) * d[j] for j in range(3) if frame[j, i] != 0) for i in range(3))


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid (``radii`` along the columns of ``frame``), optionally wobbled around its third axis.

    A radius of ``np.inf`` makes it a cylinder (cap it with :class:`Slab`). ``third_below``, if
    given, replaces the third radius on the negative side: an egg, like a prostate whose apex
    is narrower than its base.
    """

    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    frame: np.ndarray = field(default_factory=lambda: np.eye(3))
    wobble: Wobble | None = None
    third_below: float | None = None

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        radii = np.asarray(self.radii, dtype=float)
        if self.third_below is not None:
            radii[2] = max(radii[2], self.third_below)
        half = np.abs(np.asarray(self.frame)) @ np.where(np.isfinite(radii), radii, 1e9)
        if self.wobble is not None:
            half = half * (1.0 + sum(abs(a) for a in self.wobble.amplitudes))
        c = np.asarray(self.centre, dtype=float)
        return c - half, c + half

    def distance(self, x, y, z) -> np.ndarray:
        q = _local(x, y, z, self.centre, self.frame)
        radii = list(self.radii)
        if self.third_below is not None:
            radii[2] = np.where(q[2] < 0, FLOAT(self.third_below), FLOAT(self.radii[2]))
        scaled = [qi / FLOAT(r) if np.all(np.isfinite(r)) else None for qi, r in zip(q, radii)]
        rho2 = sum(s * s for s in scaled if s is not None)
        # First-order distance (rho^2 - 1) / |grad rho^2| keeps the edge width even on flat ellipsoids.
        grad2 = sum((s / r) ** 2 for s, r in zip(scaled, radii) if s is not None)
        if self.wobble is not None:
            w = self.wobble.factor(np.arctan2(q[1], q[0]))
            rho2 = rho2 / (w * w)
            grad2 = grad2 / (w * w * w * w)
        return (rho2 - 1.0) / (2.0 * np.sqrt(grad2) + EPS)


@dataclass(frozen=True)
class RoundedBox:
    """A box with half-sizes ``half`` (along the columns of ``frame``) and corners rounded by ``radius``."""

    centre: tuple[float, float, float]
    half: tuple[float, float, float]
    radius: float = 0.0
    frame: np.ndarray = field(default_factory=lambda: np.eye(3))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        half = np.abs(np.asarray(self.frame)) @ np.asarray(self.half, dtype=float)
        c = np.asarray(self.centre, dtype=float)
        return c - half, c + half

    def distance(self, x, y, z) -> np.ndarray:
        q = _local(x, y, z, self.centre, self.frame)
        r = FLOAT(self.radius)
        d = [np.abs(qi) - FLOAT(h - self.radius) for qi, h in zip(q, self.half)]
        outside = np.sqrt(sum(np.maximum(di, 0.0) ** 2 for di in d))
        inside = np.minimum(np.maximum(np.maximum(d[0], d[1]), d[2]), 0.0)
        return outside + inside - r


@dataclass(frozen=True)
class Shell:
    """The wall of ``outer`` that ``inner`` does not cover: a ring, a capsule, a cortex."""

    outer: Ellipsoid | RoundedBox
    inner: Ellipsoid | RoundedBox

    def bounds(self):
        return self.outer.bounds()

    def distance(self, x, y, z) -> np.ndarray:
        return np.maximum(self.outer.distance(x, y, z), -self.inner.distance(x, y, z))


@dataclass(frozen=True)
class Intersection:
    """Where all ``parts`` overlap (e.g. a cylinder capped between two planes)."""

    parts: tuple

    def bounds(self):
        los, his = zip(*(p.bounds() for p in self.parts))
        return np.max(los, axis=0), np.min(his, axis=0)

    def distance(self, x, y, z) -> np.ndarray:
        out = self.parts[0].distance(x, y, z)
        for p in self.parts[1:]:
            out = np.maximum(out, p.distance(x, y, z))
        return out


@dataclass(frozen=True)
class Slab:
    """Half-open band ``lo <= coordinate[axis] <= hi`` (mm): caps cylinders, cuts organs at a level."""

    axis: int
    lo: float
    hi: float

    def bounds(self):
        lo, hi = np.full(3, -np.inf), np.full(3, np.inf)
        lo[self.axis], hi[self.axis] = self.lo, self.hi
        return lo, hi

    def distance(self, x, y, z) -> np.ndarray:
        c = (x, y, z)[self.axis]
        return np.maximum(FLOAT(self.lo) - c, c - FLOAT(self.hi))

