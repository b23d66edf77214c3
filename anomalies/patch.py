"""The source patch of the blending tasks: a rotated, scaled region of a source image resampled
onto the anomaly's box grid.

Two halves: `draw_source_patch` draws the transform from a generator (rotation U(-pi/4, pi/4) per
axis pair, scale s = 1 + Exponential(0.1) or its inverse with equal chance, capped so the sampled
region spans at most 0.8 of the source on every axis, a centre on the source foreground) and
`extract_source_patch` applies it deterministically (cubic B-spline resampling of only the
sub-box the region needs, clipped to the source's per-channel intensity range).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import scipy.ndimage

MAX_ROTATION = np.pi / 4
SCALE_RATE = 0.1  # mean of the Exponential added to 1
MAX_REGION_FRACTION = 0.8
CENTRE_TRIES = 64
SPLINE_MARGIN = 3  # voxels of context around the sampled region for the cubic prefilter


@dataclass(frozen=True)
class SourcePatch:
    """Where a patch is read from: the patch voxel at offset o from the patch's centre, (P - 1) / 2,
    samples the source at `centre + scale * rotation @ o` (source voxel coordinates)."""

    rotation: np.ndarray  # [D, D] float64, orthonormal
    scale: float  # source voxels per patch voxel
    centre: tuple[int, ...]  # a source voxel, on the source foreground when one was given


def _rotation(angles: Sequence[float], spatial: int) -> np.ndarray:
    """The product of Givens rotations, one per axis pair (i < j) in lexicographic order."""
    rotation = np.eye(spatial)
    for (i, j), angle in zip(combinations(range(spatial), 2), angles):
        givens = np.eye(spatial)
        givens[i, i] = givens[j, j] = np.cos(angle)
        givens[i, j], givens[j, i] = -np.sin(angle), np.sin(angle)
        rotation = givens @ rotation
    return rotation


def _half_span(rotation: np.ndarray, scale: float, patch_shape: Sequence[int]) -> np.ndarray:
    """Per source axis, the largest distance of a sample from the centre (voxels)."""
    return scale * np.abs(rotation) @ ((np.asarray(patch_shape, dtype=np.float64) - 1) / 2)


def draw_source_patch(
    rng: np.random.Generator,
    patch_shape: Sequence[int],
    source_shape: Sequence[int],
    source_foreground: np.ndarray | None = None,
) -> SourcePatch:
    """Draw a source patch transform.

    Args:
        rng: the generator every draw comes from.
        patch_shape: the anomaly box's spatial shape P (the grid the patch is resampled onto).
        source_shape: the source image's spatial shape.
        source_foreground: [*source_shape] bool or None; the centre is a foreground voxel.

    Raises:
        ValueError: the source is too small for any patch, or no foreground voxel can hold the
            centre of the sampled region inside the source.
    """
    spatial = len(patch_shape)
    if len(source_shape) != spatial:
        raise ValueError(f"source has {len(source_shape)} spatial axes, the patch {spatial}")
    source_size = np.asarray(source_shape, dtype=np.float64)
    if (source_size < 3).any():
        raise ValueError(f"source image of spatial shape {tuple(source_shape)} is too small for a patch")
    angles = rng.uniform(-MAX_ROTATION, MAX_ROTATION, size=spatial * (spatial - 1) // 2)
    rotation = _rotation(angles, spatial)
    scale = 1.0 + rng.exponential(SCALE_RATE)
    if rng.random() < 0.5:
        scale = 1.0 / scale
    span = 2 * _half_span(rotation, scale, patch_shape)
    room = MAX_REGION_FRACTION * (source_size - 1)
    if (span > room).any():
        scale *= float(np.min(room / np.maximum(span, 1e-12)))
    half = _half_span(rotation, scale, patch_shape)
    low = np.ceil(half).astype(int)
    high = np.floor(source_size - 1 - half).astype(int)  # inclusive; >= low since span <= 0.8 (S - 1)
    if source_foreground is None:
        centre = rng.integers(low, high + 1)
        return SourcePatch(rotation, scale, tuple(int(c) for c in centre))
    if source_foreground.shape != tuple(source_shape):
        raise ValueError(
            f"source foreground shape {source_foreground.shape} differs from the source's {tuple(source_shape)}"
        )
    for _ in range(CENTRE_TRIES):
        centre = rng.integers(low, high + 1)
        if source_foreground[tuple(centre)]:
            return SourcePatch(rotation, scale, tuple(int(c) for c in centre))
    # Sparse foreground: choose uniformly among the eligible voxels instead of guessing on.
    eligible = np.argwhere(source_foreground[tuple(slice(a, b + 1) for a, b in zip(low, high))])
    if len(eligible) == 0:
        raise ValueError(
            f"source foreground has no voxel that can centre a patch of shape {tuple(patch_shape)} "
            f"(scale {scale:.2f}) inside a source of shape {tuple(source_shape)}"
        )
    centre = eligible[rng.integers(len(eligible))] + low
    return SourcePatch(rotation, scale, tuple(int(c) for c in centre))


def extract_source_patch(
    source: np.ndarray,
    patch: SourcePatch,
    patch_shape: Sequence[int],
    value_range: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Resample the source onto the patch grid (cubic), clipped to the source's intensity range.

    Args:
        source: [C, *S] float32 source image.
        patch: the drawn transform.
        patch_shape: the patch's spatial shape P.
        value_range: per-channel (low [C], high [C]) to clip to; computed from the whole source
            when None (pass it to avoid the pass over a source used many times).

    Returns:
        [C, *P] float32.
    """
    spatial = len(patch_shape)
    offsets = np.indices(patch_shape, dtype=np.float64).reshape(spatial, -1)
    offsets -= ((np.asarray(patch_shape, dtype=np.float64) - 1) / 2)[:, None]
    coordinates = (patch.scale * patch.rotation) @ offsets + np.asarray(patch.centre, dtype=np.float64)[:, None]
    low = np.maximum(np.floor(coordinates.min(axis=1)).astype(int) - SPLINE_MARGIN, 0)
    high = np.minimum(np.ceil(coordinates.max(axis=1)).astype(int) + SPLINE_MARGIN + 1, source.shape[1:])
    coordinates -= low[:, None]
    region = (slice(None), *(slice(a, b) for a, b in zip(low, high)))
    sub_box = source[region]
    if value_range is None:
        value_range = (source.reshape(len(source), -1).min(axis=1), source.reshape(len(source), -1).max(axis=1))
    resampled = np.empty((len(source), *patch_shape), dtype=np.float32)
    for channel in range(len(source)):
        scipy.ndimage.map_coordinates(
            sub_box[channel], coordinates, output=resampled[channel].reshape(-1), order=3, mode="mirror"
        )
    low_values = np.asarray(value_range[0], dtype=np.float32).reshape(-1, *([1] * spatial))
    high_values = np.asarray(value_range[1], dtype=np.float32).reshape(-1, *([1] * spatial))
    np.clip(resampled, low_values, high_values, out=resampled)
    return resampled
