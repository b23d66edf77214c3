"""The source patch of the blending tasks: a rotated, scaled region of a source image resampled
onto the anomaly's box grid.

Two halves: `draw_source_patch` draws the transform from a generator (rotation U(-pi/4, pi/4) per
axis pair, scale s = 1 + Exponential(0.1) or its inverse with equal chance, capped so the sampled
region spans at most 0.8 of the source on every axis, a centre on the source foreground) and
`extract_source_patch` applies it deterministically (cubic convolution at just the voxels the
blend reads, clipped to the source's per-channel intensity range).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numba
import numpy as np

MAX_ROTATION = np.pi / 4
SCALE_RATE = 0.1  # mean of the Exponential added to 1
MAX_REGION_FRACTION = 0.8
CENTRE_TRIES = 64


@dataclass(frozen=True)
class SourcePatch:
    """Where a patch is read from: the patch voxel at offset o from the patch's centre, (P - 1) / 2,
    samples the source at `centre + scale * rotation @ o` (source voxel coordinates)."""

    rotation: np.ndarray  # [D, D] float64, orthonormal
    scale: float  # source voxels per patch voxel
    centre: tuple[int, ...]  # a source voxel, on the source foreground when one was given


def givens_rotation(angles: Sequence[float], spatial: int) -> np.ndarray:
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
    rotation = givens_rotation(angles, spatial)
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


@numba.njit(cache=True, nogil=True)
def _cubic_sample(flat, shape, coordinates, result):
    """result[c, n] = the cubic interpolation of channel c at point n. Per point and axis: the
    Keys weights of the 4 taps (float32, as numpy computes them) and their edge-clamped flat
    offsets; the leading axes' 4^(D-1) tap combinations (first axis slowest) as weight products
    and offset sums; then per combination the last axis' 4 taps summed, times its weight, added
    up in that order (scalars in the inner loop: twice as fast as walking the combinations).
    flat: [C, M] float32; shape: [D] int64; coordinates: [D, N] float64; result: [C, N] float32."""
    spatial, count = coordinates.shape
    last = spatial - 1
    strides = np.ones(spatial, np.int64)
    for d in range(spatial - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    weights = np.empty((spatial, 4), np.float32)
    offsets = np.empty((spatial, 4), np.int64)
    combinations = 4**last
    combined_weights = np.empty(combinations, np.float32)
    combined_offsets = np.empty(combinations, np.int64)
    half, one, two = np.float32(0.5), np.float32(1.0), np.float32(2.0)
    for n in range(count):
        for d in range(spatial):
            floor = np.floor(coordinates[d, n])
            t = np.float32(coordinates[d, n] - floor)
            t2 = t * t
            t3 = t2 * t
            weights[d, 0] = -half * t3 + t2 - half * t
            weights[d, 1] = np.float32(1.5) * t3 - np.float32(2.5) * t2 + one
            weights[d, 2] = np.float32(-1.5) * t3 + two * t2 + half * t
            weights[d, 3] = half * t3 - half * t2
            for tap in range(4):
                index = np.int64(floor) + tap - 1
                offsets[d, tap] = min(max(index, 0), shape[d] - 1) * strides[d]
        # The leading axes' 4^(D-1) tap combinations, the first axis slowest: products of their
        # weights (in axis order) and sums of their offsets, expanded one axis at a time in place.
        combined_weights[0] = one
        combined_offsets[0] = 0
        filled = 1
        for d in range(last):
            for k in range(filled - 1, -1, -1):
                for tap in range(3, -1, -1):
                    combined_weights[4 * k + tap] = combined_weights[k] * weights[d, tap]
                    combined_offsets[4 * k + tap] = combined_offsets[k] + offsets[d, tap]
            filled *= 4
        w0, w1, w2, w3 = weights[last, 0], weights[last, 1], weights[last, 2], weights[last, 3]
        o0, o1, o2, o3 = offsets[last, 0], offsets[last, 1], offsets[last, 2], offsets[last, 3]
        for c in range(flat.shape[0]):
            channel = flat[c]
            total = np.float32(0)
            for k in range(combinations):
                base = combined_offsets[k]
                line = w0 * channel[base + o0]
                line += w1 * channel[base + o1]
                line += w2 * channel[base + o2]
                line += w3 * channel[base + o3]
                total += line * combined_weights[k]
            result[c, n] = total


def cubic_sample(image: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
    """Cubic-convolution interpolation (Keys, a = -0.5) of an image at arbitrary points
    (compiled: `_cubic_sample`).

    Interpolating, so no spline prefilter over a region is needed: each point costs its 4^D
    neighbours and nothing else. Neighbours beyond the image repeat the edge voxel.

    Args:
        image: [C, *S] float32.
        coordinates: [D, N] float64 voxel coordinates.

    Returns:
        [C, N] float32.
    """
    result = np.empty((len(image), coordinates.shape[1]), dtype=np.float32)
    _cubic_sample(
        np.ascontiguousarray(image, dtype=np.float32).reshape(len(image), -1),
        np.asarray(image.shape[1:], dtype=np.int64),
        np.ascontiguousarray(coordinates, dtype=np.float64),
        result,
    )
    return result


def extract_source_patch(
    source: np.ndarray,
    patch: SourcePatch,
    patch_shape: Sequence[int],
    value_range: tuple[np.ndarray, np.ndarray] | None = None,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """Resample the source onto the patch grid (cubic convolution), clipped to the source's
    per-channel intensity range.

    Args:
        source: [C, *S] float32 source image.
        patch: the drawn transform.
        patch_shape: the patch's spatial shape P.
        value_range: per-channel (low [C], high [C]) to clip to; computed from the whole source
            when None (pass it to avoid a pass over a source used many times).
        where: [*P] bool, the voxels to sample (all when None); the Poisson blend reads the source
            only on its mask and one voxel beyond, so sampling just those saves most of the cost.
            The other voxels are zero.

    Returns:
        [C, *P] float32.
    """
    spatial = len(patch_shape)
    if where is None:
        offsets = np.indices(patch_shape, dtype=np.float64).reshape(spatial, -1)
    else:
        offsets = np.nonzero(where)
        offsets = np.asarray(offsets, dtype=np.float64).reshape(spatial, -1)
    offsets -= ((np.asarray(patch_shape, dtype=np.float64) - 1) / 2)[:, None]
    coordinates = (patch.scale * patch.rotation) @ offsets + np.asarray(patch.centre, dtype=np.float64)[:, None]
    samples = cubic_sample(source, coordinates)
    if value_range is None:
        flat = source.reshape(len(source), -1)
        value_range = (flat.min(axis=1), flat.max(axis=1))
    low = np.asarray(value_range[0], dtype=np.float32).reshape(-1, 1)
    high = np.asarray(value_range[1], dtype=np.float32).reshape(-1, 1)
    np.clip(samples, low, high, out=samples)
    if where is None:
        return samples.reshape(len(source), *patch_shape)
    resampled = np.zeros((len(source), *patch_shape), dtype=np.float32)
    resampled[:, where] = samples
    return resampled
