"""Lesion-like anomalies of the demo cohort's test cases (none of the five training tasks; see the
package docstring): `draw_lesions` draws their parameters, `apply_lesions` paints them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lightwork.demo.fields import smooth_noise, world_grid


@dataclass
class LesionParams:
    """One lesion. Lengths in mm; intensities relative to white matter (or lung for chests).

    `shape_field` and `halo_field` are unit-std smoothed noise on the image grid.
    """

    centre_mm: np.ndarray  # [D] world coordinates
    radius_mm: float
    irregularity: float
    core_intensity: float
    core_texture: float
    halo_width_mm: float
    halo_intensity: float
    shape_field: np.ndarray
    halo_field: np.ndarray
    texture_field: np.ndarray


def draw_lesions(
    rng: np.random.Generator,
    eligible: np.ndarray,
    spacing_mm: float,
    radius_range_mm: tuple[float, float],
    core_range: tuple[float, float],
    halo_range: tuple[float, float],
    max_lesions: int = 2,
) -> list[LesionParams]:
    """Draw 1..max_lesions lesions centred on voxels of `eligible` (bool [*S]).

    Raises ValueError when `eligible` is empty (nowhere to put a lesion).
    """
    candidates = np.argwhere(eligible)
    if len(candidates) == 0:
        raise ValueError("no eligible voxels to centre a lesion on")
    shape = eligible.shape
    count = int(rng.integers(1, max_lesions + 1))
    centre_offset = (np.array(shape) - 1) / 2
    lesions = []
    for _ in range(count):
        index = candidates[rng.integers(len(candidates))]
        radius = float(rng.uniform(*radius_range_mm))
        lesions.append(
            LesionParams(
                centre_mm=(index - centre_offset) * spacing_mm,
                radius_mm=radius,
                irregularity=float(rng.uniform(0.35, 0.6)),
                core_intensity=float(rng.uniform(*core_range)),
                core_texture=float(rng.uniform(0.05, 0.12)),
                halo_width_mm=float(rng.uniform(0.4, 0.8) * radius),
                halo_intensity=float(rng.uniform(*halo_range)),
                shape_field=smooth_noise(rng, shape, max(1.0, 0.35 * radius / spacing_mm)),
                halo_field=smooth_noise(rng, shape, max(1.0, 0.5 * radius / spacing_mm)),
                texture_field=smooth_noise(rng, shape, 0.8),
            )
        )
    return lesions


def apply_lesions(
    clean: np.ndarray, allowed: np.ndarray, lesions: list[LesionParams], spacing_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Paint lesions into noise-free intensities (before bias and noise, so they share both).

    Args:
        clean: float32 [*S] noise-free intensities.
        allowed: bool [*S] tissue the lesion may occupy (brain, or lungs).
        lesions: from `draw_lesions`.
        spacing_mm: isotropic voxel size.
    Returns:
        (intensities float32 [*S], lesion mask uint8 [*S]).
    """
    out = clean.astype(np.float32).copy()
    mask = np.zeros(clean.shape, bool)
    world = world_grid(clean.shape, spacing_mm)
    for lesion in lesions:
        distance = np.sqrt(sum((world[d] - lesion.centre_mm[d]) ** 2 for d in range(clean.ndim))) / lesion.radius_mm
        envelope = 1.0 - distance**2
        # Irregular blob: thresholded noise under a radial envelope, with a soft one-voxel-ish rim.
        field = envelope + lesion.irregularity * lesion.shape_field
        core_weight = np.clip((field - 0.25) / 0.2, 0.0, 1.0) * allowed
        core = core_weight > 0.5
        if not core.any():  # a lesion drawn where its blob vanished: keep its centre voxel
            centre = tuple(
                np.clip(
                    np.round(lesion.centre_mm / spacing_mm + (np.array(clean.shape) - 1) / 2).astype(int),
                    0,
                    np.array(clean.shape) - 1,
                )
            )
            core[centre] = allowed[centre]
            core_weight = core.astype(np.float32)
        gap_mm = ndimage.distance_transform_edt(~core) * spacing_mm
        halo_weight = np.exp(-((gap_mm / lesion.halo_width_mm) ** 2)) * np.clip(
            0.75 + 0.35 * lesion.halo_field, 0.0, 1.0
        )
        halo_weight = np.where(core, 0.0, halo_weight) * allowed
        halo_level = np.maximum(out, lesion.halo_intensity)
        out = out * (1.0 - halo_weight) + halo_level * halo_weight
        core_level = lesion.core_intensity * (1.0 + lesion.core_texture * lesion.texture_field)
        out = out * (1.0 - core_weight) + core_level * core_weight
        mask |= core | (halo_weight > 0.5)
    return out.astype(np.float32), mask.astype(np.uint8)
