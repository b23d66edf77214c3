"""Tasks 2 (`sink`) and 3 (`source`): a radial deformation inside the anomaly (docs/method.md section 2,
items 2 and 3).

For one anomaly (shape placed by the framework, box corner `corner`):
`draw` picks the centre c uniformly among the mask's voxels and the push p; `apply` resamples the
mask's voxels deterministically. With r the distance of a mask voxel from c and R the distance
from c to the shape's edge along the same ray, the output voxel at r samples the input at r'
(backward mapping, Keys cubic convolution, `lightwork.anomalies.patch.cubic_sample`):

    source  r' = R (r / R)^f                 content moves away from c
    sink    r' = R - R ((R - r) / R)^f       content moves towards c

R is analytic: the ray c + t (q - c) is taken to the shape's own coordinates (v = diag(2 / sizes)
matrix^-1 (x - shape centre)); the ellipse's edge |v| = 1 is a quadratic in t, the rectangle's
|v_d| <= 1 a slab intersection, and r / R = 1 / t at the edge. Voxels outside the mask keep
their values, so only mask voxels change.

The exponent f > 1 moves the profile's midpoint by the push p: with A the mean distance from c to
the mask's inner edge (mask voxels with a face neighbour outside the mask, the box border
counting as outside) and m = A / sqrt 2, p ~ U(max(0.1 m, 0.5), min(0.9 m, max_push)) (voxels;
max_push 5 for brain volumes, 10 for chest X-rays); then
    source  x = A/2 + p/sqrt2, y = A/2 - p/sqrt2, f = ln(y/A) / ln(x/A)
    sink    x = A/2 - p/sqrt2, y = A/2 + p/sqrt2, f = ln(1 - y/A) / ln(1 - x/A)
so the profile through (A/2, A/2) is moved to (x, y), a distance p away across the diagonal.
On a tiny anomaly (0.9 m <= 0.5, A below 0.79 voxels) the interval is empty: p = min(0.9 m,
max_push), the largest push that keeps f finite (the uniform is drawn anyway, so the draw order
never depends on the shape). A single-voxel mask (A = 0) gets f = 1: no change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lightwork.anomalies.parameters import DEFAULT_MAX_PUSH, MIN_PUSH
from lightwork.anomalies.patch import cubic_sample
from lightwork.anomalies.shapes import AnomalyShape

# The push's lower bound is max(MIN_PUSH_FRACTION m, MIN_PUSH) voxels.
MIN_PUSH_FRACTION = 0.1
MAX_PUSH_FRACTION = 0.9  # ... and its upper bound min(MAX_PUSH_FRACTION m, max_push)
NAMES = {2: "sink", 3: "source"}
_MARGIN = 2  # voxels of image read around the box: the cubic kernel's reach beyond a sample


@dataclass(frozen=True)
class DeformationParams:
    """One deformation's random choices (and what follows from them)."""

    centre: np.ndarray  # [D] int64, the centre c: a mask voxel, box coordinates
    push: float  # p, voxels: how far the profile's midpoint moves
    mean_edge_distance: float  # A, voxels: mean distance from c to the mask's inner edge
    exponent: float  # f >= 1 of the radial profile


def inner_edge(mask: np.ndarray) -> np.ndarray:
    """The mask voxels with a face neighbour outside the mask, the box border counting as outside
    ([*P] bool -> [*P] bool)."""
    padded = np.zeros(tuple(n + 2 for n in mask.shape), dtype=bool)  # np.pad costs ten times more
    padded[(slice(1, -1),) * mask.ndim] = mask
    interior = mask.copy()
    for axis in range(mask.ndim):
        for step in (0, 2):
            interior &= padded[
                tuple(slice(step, step + n) if d == axis else slice(1, 1 + n) for d, n in enumerate(mask.shape))
            ]
    return mask & ~interior


def push_bounds(mean_edge_distance: float, max_push: float) -> tuple[float, float]:
    """(low, high) of the uniform push, voxels, for A = `mean_edge_distance`."""
    m = mean_edge_distance / np.sqrt(2)
    return max(MIN_PUSH_FRACTION * m, MIN_PUSH), min(MAX_PUSH_FRACTION * m, max_push)


def exponent(task_id: int, mean_edge_distance: float, push: float) -> float:
    """The profile exponent f that moves the midpoint (A/2, A/2) of the r -> r' profile by `push`
    across the diagonal (task 2 sink, 3 source); 1 when A = 0 or the push is 0."""
    a = float(mean_edge_distance)
    if a <= 0 or push <= 0:
        return 1.0
    shift = push / np.sqrt(2)
    if task_id == 3:
        x, y = a / 2 + shift, a / 2 - shift
        return float(np.log(y / a) / np.log(x / a))
    x, y = a / 2 - shift, a / 2 + shift
    return float(np.log(1 - y / a) / np.log(1 - x / a))


def edge_ratio(shape: AnomalyShape, centre: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """r / R for rays from `centre` ([D] box voxel coordinates, inside the shape) through
    `centre + offsets` ([D, N] float32 voxels): 1 / t at the shape's edge c + t (q - c), exact for
    the ellipse and the rectangle. Returns [N] float32 in [0, 1] (0 where the offset is 0)."""
    unit = (2 / shape.sizes)[:, None] * np.linalg.inv(shape.matrix)
    start = unit @ (np.asarray(centre, dtype=np.float64) - shape.centre)  # v0: c in unit coordinates
    step = unit.astype(np.float32) @ offsets  # g: v(t) = v0 + t g
    tiny = np.float32(1e-12)
    if shape.kind == "ellipse":
        # |v0 + t g|^2 = 1:  a t^2 + 2 b t + c0 = 0 with c0 = |v0|^2 - 1 <= 0; 1 / t = a / (sqrt(b^2 - a c0) - b).
        a = np.einsum("dn,dn->n", step, step)
        b = start.astype(np.float32) @ step
        c0 = np.float32(min(float(start @ start) - 1.0, 0.0))
        root = np.sqrt(b * b - a * c0)
        root -= b
        ratio = np.divide(a, np.maximum(root, tiny), out=root)
    else:
        # |v0_d + t g_d| <= 1 on every axis: the first slab left, 1 / t = max_d g_d / (+-1 - v0_d).
        forward = np.float32(1) / np.maximum(1 - start, 1e-12).astype(np.float32)
        backward = np.float32(1) / np.maximum(1 + start, 1e-12).astype(np.float32)
        ratio = np.maximum(step * forward[:, None], -step * backward[:, None]).max(axis=0)
    return np.minimum(ratio, np.float32(1), out=ratio)


def source_coordinates(task_id: int, ratio: np.ndarray, exponent_f: float) -> np.ndarray:
    """r' / r per voxel from rho = r / R ([N] float32 in [0, 1]): source rho^(f - 1), sink
    (1 - (1 - rho)^f) / rho (f where rho = 0, its limit). [N] float32."""
    f = np.float32(exponent_f)
    if task_id == 3:
        return np.power(ratio, f - 1)
    inward = 1 - np.power(1 - ratio, f)
    return np.divide(inward, ratio, out=np.full_like(ratio, f), where=ratio > 0)


class DeformationTask:
    """The per-anomaly halves of tasks 2 (`sink`) and 3 (`source`); the framework draws the shape,
    places it, repeats and labels.

    Args:
        task_id: 2 (sink) or 3 (source).
        max_push: the largest push, voxels (5 for brain volumes, 10 for chest X-rays).
    """

    def __init__(self, task_id: int, max_push: float = DEFAULT_MAX_PUSH):
        if task_id not in NAMES:
            raise ValueError(f"deformation tasks are 2 (sink) and 3 (source), got {task_id}")
        if not max_push > MIN_PUSH:
            raise ValueError(f"max_push must exceed {MIN_PUSH} voxels, got {max_push}")
        self.task_id = task_id
        self.name = NAMES[task_id]
        self.max_push = float(max_push)

    def draw(
        self,
        rng: np.random.Generator,
        image: np.ndarray,
        foreground: np.ndarray | None,
        shape: AnomalyShape,
        corner: Sequence[int],
        image_range: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> DeformationParams:
        """Draw order: the centre's index among the mask voxels (C order), then the push's uniform.
        Only the shape matters (not the image, its range, the foreground or the corner)."""
        voxels = np.flatnonzero(shape.mask)
        centre = np.array(np.unravel_index(voxels[rng.integers(len(voxels))], shape.mask.shape), dtype=np.int64)
        edge = np.asarray(np.nonzero(inner_edge(shape.mask)), dtype=np.float64)
        mean_edge_distance = float(np.sqrt(((edge - centre[:, None]) ** 2).sum(axis=0)).mean())
        low, high = push_bounds(mean_edge_distance, self.max_push)
        uniform = float(rng.random())
        push = low + uniform * (high - low) if low < high else high
        return DeformationParams(centre, push, mean_edge_distance, exponent(self.task_id, mean_edge_distance, push))

    def apply(
        self, image: np.ndarray, shape: AnomalyShape, corner: Sequence[int], params: DeformationParams
    ) -> np.ndarray:
        """Resample the mask's voxels of the box at `corner` in place (cubic convolution of the
        image before the change); returns the shape's mask, [*P] bool (the only voxels that can
        change)."""
        mask = shape.mask
        if params.exponent == 1.0:
            return mask
        spatial_shape = image.shape[1:]
        # The image read: the box and the cubic kernel's reach around it, cut at the image border
        # (where cubic_sample repeats the edge voxel, as it would on the whole image).
        start = [max(c - _MARGIN, 0) for c in corner]
        stop = [min(c + n + _MARGIN, s) for c, n, s in zip(corner, mask.shape, spatial_shape)]
        region = np.ascontiguousarray(image[(slice(None), *(slice(a, b) for a, b in zip(start, stop)))])
        voxels = np.unravel_index(np.flatnonzero(mask), mask.shape)  # 2x faster than np.nonzero on a 3D box
        centre = params.centre.astype(np.float32)[:, None]
        offsets = np.asarray(voxels, dtype=np.float32) - centre
        scale = source_coordinates(self.task_id, edge_ratio(shape, params.centre, offsets), params.exponent)
        # Backward mapping: the voxel at c + offset reads c + (r'/r) offset, in region coordinates.
        offsets *= scale
        offsets += centre + np.array([c - a for c, a in zip(corner, start)], dtype=np.float32)[:, None]
        samples = cubic_sample(region, offsets)
        box = image[(slice(None), *(slice(c, c + n) for c, n in zip(corner, mask.shape)))]
        box[(slice(None), *voxels)] = samples
        return mask
