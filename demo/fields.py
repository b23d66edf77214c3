"""Coordinate grids, smoothed noise and smooth bias fields: what every renderer of the demo cohort
draws or builds on (pure numpy/scipy, deterministic given their inputs)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_voxels: float | tuple[float, ...]
) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean and unit std, float32 `shape`."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_voxels, mode="wrap")
    field -= field.mean()
    return (field / max(float(field.std()), 1e-8)).astype(np.float32)


def world_grid(shape: tuple[int, ...], spacing_mm: float) -> np.ndarray:
    """Voxel-centre coordinates in mm, centred on the grid: float32 [D, *shape]."""
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) * spacing_mm for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def grid_affine(shape: tuple[int, ...], spacing_mm: float) -> np.ndarray:
    """Voxel index -> world mm (RAS) for a 3D grid centred on the origin: float64 [4, 4]."""
    affine = np.diag([spacing_mm] * 3 + [1.0])
    affine[:3, 3] = [-(n - 1) / 2 * spacing_mm for n in shape]
    return affine


def rotation_3d(angles_rad: np.ndarray) -> np.ndarray:
    """The rotation x-then-y-then-z by the three angles: float64 [3, 3]."""
    a, b, c = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def block_mean(array: np.ndarray, factor: int, leading: int = 0) -> np.ndarray:
    """Mean over non-overlapping blocks of `factor` voxels per spatial axis (axes after `leading`)."""
    spatial = array.shape[leading:]
    blocked = array.reshape(array.shape[:leading] + sum(((n // factor, factor) for n in spatial), ()))
    return blocked.mean(axis=tuple(leading + 2 * d + 1 for d in range(len(spatial))))


def bias_field(coefficients: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth multiplicative field exp(quadratic polynomial) over normalised coordinates."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    grids = np.meshgrid(*axes, indexing="ij")
    terms = [np.ones(shape, np.float32), *grids]
    terms += [grids[i] * grids[j] for i in range(len(shape)) for j in range(i, len(shape))]
    return np.exp(sum(c * t for c, t in zip(coefficients, terms))).astype(np.float32)
