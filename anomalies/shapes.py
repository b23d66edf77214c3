"""Anomaly shapes and their placement (docs/method.md section 1).

A shape is a hyper-ellipse or hyper-rectangle (50/50) with per-axis sizes
`int(clip((0.03 + Gamma(2, 0.1)) * S_d, round(0.06 S_d), round(0.8 S_d)))` (ellipse: diameters),
sheared (from the identity, each row d gets one random off-diagonal entry, column != d, drawn from
N(0, 0.2)) and rotated (a Givens rotation by U(-pi/2, pi/2) for every axis pair i < j); when the
transformed shape's bounding box exceeds round(0.8 S_d) on an axis, the transform is scaled down
to fit (the transformed rectangle's bounding box is checked, also for an ellipse). The mask is
rasterised only over that axis-aligned box.

Placement draws a uniform corner with the box inside the image; with a foreground mask it
re-draws until at least half of the anomaly's voxels lie on the foreground (PLACEMENT_TRIES random
corners, then an exact choice among the corners that qualify, or a clear error when none does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import scipy.fft

from lightwork.anomalies.patch import givens_rotation

SIZE_OFFSET = 0.03  # size fraction = SIZE_OFFSET + Gamma(SIZE_GAMMA_SHAPE, SIZE_GAMMA_SCALE)
SIZE_GAMMA_SHAPE = 2.0
SIZE_GAMMA_SCALE = 0.1
MIN_SIZE_FRACTION = 0.06  # sizes are clipped to [round(0.06 S_d), round(0.8 S_d)]
MAX_SIZE_FRACTION = 0.8
SHEAR_STD = 0.2
MAX_ANGLE = np.pi / 2
MIN_SPATIAL = 9  # smallest spatial size: round(0.06 * 9) = 1 is the smallest anomaly size
MIN_FOREGROUND_FRACTION = 0.5
PLACEMENT_TRIES = 200
KINDS = ("ellipse", "rectangle")


@dataclass(frozen=True)
class AnomalyShape:
    """One anomaly shape in its own axis-aligned box.

    A shape coordinate u (centred on 0, in voxels before the transform) is inside when
    sum_d (2 u_d / sizes_d)^2 <= 1 (ellipse) or |u_d| <= sizes_d / 2 for all d (rectangle); it lies
    at box voxel `centre + matrix @ u`.
    """

    kind: str  # "ellipse" | "rectangle"
    sizes: np.ndarray  # [D] float64 full extents (ellipse diameters / rectangle sides), voxels, before transform
    matrix: np.ndarray  # [D, D] float64: box offset = matrix @ shape coordinate (rotation @ shear, scaled to fit)
    centre: np.ndarray  # [D] float64 the shape centre in box voxel coordinates
    mask: np.ndarray  # [*P] bool in its axis-aligned box (P = box shape)


def size_bounds(image_shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per axis, the (lower [D], upper [D]) int64 bounds on an anomaly size, in voxels."""
    spatial = np.asarray(image_shape, dtype=np.float64)
    return (
        np.round(MIN_SIZE_FRACTION * spatial).astype(np.int64),
        np.round(MAX_SIZE_FRACTION * spatial).astype(np.int64),
    )


def bounding_slices(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The slices of a bool array's bounding box grown by `margin` (within the array), or None
    when nothing is set."""
    bounds = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(d for d in range(mask.ndim) if d != axis)))
        if len(hits) == 0:
            return None
        bounds.append(slice(max(int(hits[0]) - margin, 0), int(hits[-1]) + 1 + margin))
    return tuple(bounds)


def check_image_shape(image_shape: Sequence[int]) -> None:
    """Raise a ValueError when an image's spatial shape cannot hold the smallest anomaly."""
    if len(image_shape) < 1 or min(image_shape) < MIN_SPATIAL:
        raise ValueError(
            f"image spatial shape {tuple(image_shape)} is too small for an anomaly: every spatial axis needs "
            f">= {MIN_SPATIAL} voxels (the smallest anomaly size is round(0.06 * S_d) >= 1 voxel)"
        )


def _half_extents(matrix: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per box axis, the largest distance from the centre of the transformed rectangle of full
    extents `sizes` (voxels): the box of both kinds, an ellipse being inscribed in it."""
    return np.abs(matrix) @ (sizes / 2)


@numba.njit(cache=True, nogil=True)
def _rasterise(unit, centre, ellipse, mask, box):
    """mask (flat [prod(box)] bool, C order over the box of shape `box` [D] int64) = whether each
    voxel's unit-shape coordinates v = unit @ (x - centre) (unit: [D, D] float32, centre: [D]
    float32) lie inside: sum_d v_d^2 <= 1 (ellipse) or max_d |v_d| <= 1. float32 in numpy's order
    of broadcasting: each v_r summed over the axes in order (the leading axes' share once per row
    of the box), the terms combined in axis order."""
    spatial = box.size
    last = spatial - 1
    offset = np.zeros(spatial, np.float32)
    for d in range(spatial):
        offset[d] = -centre[d]
    leading = np.zeros(spatial, np.float32)  # per r, the leading axes' share of v_r on this row
    index = 0
    while index < mask.size:
        for row in range(spatial):
            if last > 0:
                leading[row] = offset[0] * unit[row, 0]
                for d in range(1, last):
                    leading[row] = leading[row] + offset[d] * unit[row, d]
        for k in range(box[last]):
            position = np.float32(k) - centre[last]
            total = np.float32(0)
            for row in range(spatial):
                coordinate = position * unit[row, last]
                if last > 0:
                    coordinate = leading[row] + coordinate
                term = coordinate * coordinate if ellipse else abs(coordinate)
                if row == 0:
                    total = term
                elif ellipse:
                    total += term
                elif term > total:
                    total = term
            mask[index] = total <= 1
            index += 1
        for d in range(last - 1, -1, -1):  # the next row's leading coordinates
            offset[d] += 1
            if offset[d] < box[d] - centre[d]:
                break
            offset[d] = -centre[d]


def make_shape(kind: str, sizes: Sequence[float], matrix: np.ndarray) -> AnomalyShape:
    """Rasterise a shape of `kind` with full extents `sizes` [D] transformed by `matrix` [D, D]
    onto the smallest box holding it (deterministic; `draw_shape` draws the arguments).

    The box is the bounding box of the transformed rectangle for both kinds, an ellipse being
    inscribed in it: docs/method.md's median box of ~29^3 for a brain volume is this box (the ellipses'
    own bounding boxes would give ~24^3). ceil(2 * half extent) voxels per axis, the shape centred. A voxel belongs
    to the mask when its back-transformed coordinate lies inside the shape. A shape too thin to
    cover any grid point still marks the box's middle voxel, so a mask is never empty.
    """
    if kind not in KINDS:
        raise ValueError(f"shape kind must be one of {KINDS}, got {kind!r}")
    sizes = np.asarray(sizes, dtype=np.float64)
    matrix = np.asarray(matrix, dtype=np.float64)
    half = _half_extents(matrix, sizes)
    box = np.maximum(np.ceil(2 * half - 1e-9), 1).astype(np.int64)
    centre = (box - 1) / 2
    # Back to unit-shape coordinates: v = diag(2 / sizes) matrix^-1 (x - centre).
    unit = ((2 / sizes)[:, None] * np.linalg.inv(matrix)).astype(np.float32)
    mask = np.empty(tuple(box), dtype=bool)
    _rasterise(unit, centre.astype(np.float32), kind == "ellipse", mask.reshape(-1), box)
    if not mask.any():
        mask[tuple((box - 1) // 2)] = True
    return AnomalyShape(kind, sizes, matrix, centre, mask)


def draw_shape(rng: np.random.Generator, image_shape: Sequence[int]) -> AnomalyShape:
    """Draw one anomaly shape for an image of spatial shape `image_shape` (any D >= 1).

    Draw order (fixed, for reproducibility): sizes [D], kind, shear columns [D] and values [D]
    (D >= 2), rotation angles [D (D - 1) / 2].

    Raises:
        ValueError: an axis shorter than MIN_SPATIAL voxels.
    """
    check_image_shape(image_shape)
    spatial_size = np.asarray(image_shape, dtype=np.float64)
    spatial = len(spatial_size)
    lower, upper = size_bounds(image_shape)
    fraction = SIZE_OFFSET + rng.gamma(SIZE_GAMMA_SHAPE, SIZE_GAMMA_SCALE, size=spatial)
    sizes = np.clip(fraction * spatial_size, lower, upper).astype(np.int64).astype(np.float64)
    kind = KINDS[0] if rng.random() < 0.5 else KINDS[1]
    shear = np.eye(spatial)
    if spatial > 1:
        columns = rng.integers(spatial - 1, size=spatial)
        columns += columns >= np.arange(spatial)  # skip the diagonal
        shear[np.arange(spatial), columns] = rng.normal(0.0, SHEAR_STD, size=spatial)
    angles = rng.uniform(-MAX_ANGLE, MAX_ANGLE, size=spatial * (spatial - 1) // 2)
    matrix = givens_rotation(angles, spatial) @ shear
    span = 2 * _half_extents(matrix, sizes)
    if (span > upper).any():
        matrix = matrix * float(np.min(upper / span))
    return make_shape(kind, sizes, matrix)


def overlap_counts(foreground: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """For every box corner c with the box inside the image, the number of `mask` voxels ([*P] bool)
    that lie on `foreground` ([*S] bool) when the box sits at c: [*(S - P + 1)] float64, integral
    (the valid cross-correlation, by real FFTs of the padded size)."""
    full = [s + p - 1 for s, p in zip(foreground.shape, mask.shape)]
    padded = [scipy.fft.next_fast_len(n, real=True) for n in full]
    axes = tuple(range(foreground.ndim))
    flipped = mask[(slice(None, None, -1),) * mask.ndim]
    product = scipy.fft.rfftn(foreground.astype(np.float64), padded, axes=axes) * scipy.fft.rfftn(
        flipped.astype(np.float64), padded, axes=axes
    )
    convolution = scipy.fft.irfftn(product, padded, axes=axes)
    valid = tuple(slice(p - 1, s) for s, p in zip(foreground.shape, mask.shape))
    return np.rint(convolution[valid])


def place_shape(
    rng: np.random.Generator,
    shape: AnomalyShape,
    foreground: np.ndarray | None,
    image_shape: Sequence[int],
) -> tuple[int, ...]:
    """Draw the box corner of `shape` in an image of spatial shape `image_shape`.

    Without a foreground the corner is uniform over the positions that keep the box inside the
    image. With one ([*S] bool), corners are re-drawn until at least half of the mask's voxels lie
    on the foreground; after PLACEMENT_TRIES misses, the corner is chosen uniformly among all the
    qualifying corners (counted exactly), so a rare fit is still found.

    Raises:
        ValueError: the box is larger than the image, or no corner puts half the anomaly on the
            foreground ("foreground too small").
    """
    box = shape.mask.shape
    image_shape = tuple(image_shape)
    if len(box) != len(image_shape) or any(p > s for p, s in zip(box, image_shape)):
        raise ValueError(f"anomaly box {box} does not fit in an image of spatial shape {image_shape}")
    positions = np.asarray(image_shape) - np.asarray(box) + 1
    if foreground is None:
        return tuple(int(c) for c in rng.integers(0, positions))
    voxels = np.count_nonzero(shape.mask)
    for _ in range(PLACEMENT_TRIES):
        corner = rng.integers(0, positions)
        window = foreground[tuple(slice(c, c + p) for c, p in zip(corner, box))]
        if np.count_nonzero(window & shape.mask) >= MIN_FOREGROUND_FRACTION * voxels:
            return tuple(int(c) for c in corner)
    eligible = np.argwhere(overlap_counts(foreground, shape.mask) >= MIN_FOREGROUND_FRACTION * voxels)
    if len(eligible) == 0:
        raise ValueError(
            f"foreground too small: no placement puts >= {MIN_FOREGROUND_FRACTION:.0%} of a {shape.kind} anomaly "
            f"({voxels} voxels, box {box}) on the foreground ({np.count_nonzero(foreground)} foreground voxels "
            f"in an image of spatial shape {image_shape})"
        )
    return tuple(int(c) for c in eligible[rng.integers(len(eligible))])
