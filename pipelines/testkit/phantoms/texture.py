"""Intensity ingredients shared by all phantoms: smooth random fields, bias, tissue texture, MR noise.

Real MR intensities are never flat: tissue has texture, the receive coils add a smooth
multiplicative bias, and magnitude images carry Rician noise (Gaussian noise on the real and
imaginary channels, then the modulus). Each helper draws from the ``numpy.random.Generator``
it is given, so a phantom is reproducible from its seed alone.
"""

from __future__ import annotations

import numpy as np

FLOAT = np.float32


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], correlation_vox: float | tuple[float, ...]
) -> np.ndarray:
    """A zero-mean, unit-variance random field that varies over ``correlation_vox`` voxels.

    Drawn on a coarse grid (about one node per correlation length) and spread to full size by
    a separable Gaussian interpolation, one small matrix product per axis: much cheaper than
    low-pass filtering white noise at full size or spline zooming, and just as smooth.
    """
    corr = np.broadcast_to(np.asarray(correlation_vox, dtype=float), (len(shape),))
    coarse_shape = tuple(n if c <= 1.0 else int(np.ceil(n / c)) + 2 for n, c in zip(shape, corr))
    field = rng.standard_normal(coarse_shape).astype(FLOAT)
    for axis, (n, m) in enumerate(zip(shape, coarse_shape)):
        if n != m:
            field = np.moveaxis(np.tensordot(_spread(n, m), field, axes=(1, axis)), 0, axis)
    field -= field.mean()
    std = float(field.std())
    return np.ascontiguousarray(field / (std if std > 0 else 1.0), dtype=FLOAT)


def _spread(n_fine: int, n_coarse: int) -> np.ndarray:
    """(n_fine, n_coarse) weights that interpolate coarse nodes smoothly onto fine positions."""
    pos = 0.5 + (np.arange(n_fine) + 0.5) * (n_coarse - 1.0) / n_fine
    weights = np.exp(-0.5 * ((pos[:, None] - np.arange(n_coarse)[None, :]) / 0.7) ** 2)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(FLOAT)


def bias_field(
    rng: np.random.Generator, shape: tuple[int, ...], spacing: tuple[float, ...], strength: float, scale_mm: float = 120.0
) -> np.ndarray:
    """Smooth multiplicative coil bias, ``exp(strength * field)``, varying over ``scale_mm``."""
    corr = tuple(scale_mm / s for s in spacing)
    return np.exp(strength * smooth_field(rng, shape, corr)).astype(FLOAT)


def linear_ramp(shape: tuple[int, ...], axis: int, slope: float) -> np.ndarray:
    """``1 + slope * t`` along ``axis`` (t from -0.5 to 0.5), broadcastable to ``shape``: a coil's near/far falloff."""
    t = np.linspace(-0.5, 0.5, shape[axis], dtype=FLOAT)
    view = [1] * len(shape)
    view[axis] = shape[axis]
    return (1.0 + slope * t).reshape(view).astype(FLOAT)


class NoiseBank:
    """Rician noise for many volumes of one shape from two pools of Gaussian draws.

    A cine series needs fresh noise for every frame; drawing it costs as much as everything
    else together. Each volume instead reads a window of the pools at a random offset, which
    is statistically indistinguishable from fresh draws and costs no random numbers.
    """

    def __init__(self, rng: np.random.Generator, size: int, spare: float = 1.0):
        self.rng = rng
        self.size = size
        length = size + max(1, int(size * spare))
        self.real = rng.standard_normal(length, dtype=FLOAT)
        self.imag = rng.standard_normal(length, dtype=FLOAT)

    def rician(self, clean: np.ndarray, sigma: float) -> np.ndarray:
        """Magnitude of ``clean + sigma * (n_real + i n_imag)``; ``clean`` must hold ``size`` voxels."""
        if clean.size != self.size:
            raise ValueError(f"noise bank holds volumes of {self.size} voxels, got {clean.size}")
        start = int(self.rng.integers(0, self.real.size - self.size + 1))
        order = "F" if clean.flags.f_contiguous and not clean.flags.c_contiguous else "C"  # match the layout
        real = self.real[start : start + self.size].reshape(clean.shape, order=order) * FLOAT(sigma)
        real += clean
        np.square(real, out=real)
        imag = self.imag[start : start + self.size].reshape(clean.shape, order=order) * FLOAT(sigma)
        np.square(imag, out=imag)
        real += imag
        return np.sqrt(real, out=real)


def rician_noise(rng: np.random.Generator, clean: np.ndarray, sigma: float) -> np.ndarray:
    """One noisy magnitude image of ``clean`` (noise std ``sigma`` per channel)."""
    return NoiseBank(rng, clean.size, spare=0.0).rician(clean, sigma)


def to_int16(image: np.ndarray) -> np.ndarray:
    """Round and clip to int16, as a scanner's DICOM-to-NIfTI export would."""
    return np.clip(np.rint(image), 0, np.iinfo(np.int16).max).astype(np.int16)
