"""Task 4 (`intensity`): a smooth intensity change (docs/method.md section 2, item 4).

Per channel, delta = +/-(0.1 + Gamma(3, 0.2)) (sign 50/50, drawn per channel) is added inside the
anomaly mask with the weight min(edt / d_s, 1): edt is the Euclidean distance (voxels) to the
mask's edge, the box border counting as outside, and d_s = min(min(S) * (0.02 + Gamma(3, 0.01)),
max(edt)), so the change ramps up from the edge over d_s voxels. The result is clipped to the
image's per-channel range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from lightwork.anomalies.base import channel_range
from lightwork.anomalies.shapes import AnomalyShape, bounding_slices

DELTA_OFFSET = 0.1  # |delta| = DELTA_OFFSET + Gamma(DELTA_GAMMA_SHAPE, DELTA_GAMMA_SCALE)
DELTA_GAMMA_SHAPE = 3.0
DELTA_GAMMA_SCALE = 0.2
RAMP_OFFSET = 0.02  # d_s / min(S) = RAMP_OFFSET + Gamma(RAMP_GAMMA_SHAPE, RAMP_GAMMA_SCALE)
RAMP_GAMMA_SHAPE = 3.0
RAMP_GAMMA_SCALE = 0.01
# The ramp distance's passes: O(reach) min-plus up to this reach, the O(1) exact envelope beyond
# (measured on one core: equal at a reach of 5 in 2D; volumes' reach is ~4, X-rays' ~13).
ENVELOPE_REACH = 5


@dataclass(frozen=True)
class IntensityParams:
    """One intensity anomaly's random choices."""

    delta: np.ndarray  # [C] float32 signed change per channel (intensity units)
    ramp_fraction: float  # the ramp width d_s as a fraction of min(S), before capping at max(edt)
    low: np.ndarray  # [C] float32 the image's per-channel range, which the result is clipped to
    high: np.ndarray


@numba.njit(cache=True, nogil=True)
def _first_axis_squared(padded, squared):
    """padded: [N, M] bool whose first and last rows are False; writes squared: [N, M] float32, the
    squared distance along the first axis from each voxel to the nearest False one (0 on False
    voxels), by a forward and a backward scan of the rows (M running positions each)."""
    rows, columns = padded.shape
    last = np.zeros(columns, np.int64)
    for row in range(rows):
        for column in range(columns):
            if not padded[row, column]:
                last[column] = row
            squared[row, column] = row - last[column]
    last[:] = rows - 1
    for row in range(rows - 1, -1, -1):
        for column in range(columns):
            if not padded[row, column]:
                last[column] = row
            distance = min(squared[row, column], np.float32(last[column] - row))
            squared[row, column] = distance * distance


@numba.njit(cache=True, nogil=True)
def _lower_envelope_passes(squared, shape):
    """In place over a flat C-ordered array of `shape`: for every axis after the first,
    f(x) <- min over k (within the axis) of f(x + k e_d) + k^2, exactly: per line along the axis,
    the lower envelope of the parabolas (y - v)^2 + f(v) (Felzenszwalb and Huttenlocher), O(1)
    per voxel whatever the distances. f holds integers (squared distances), so the float64
    intersections compare exactly and every result is an exact integer."""
    size = squared.size
    longest = 1
    for d in range(1, len(shape)):
        longest = max(longest, shape[d])
    line = np.empty(longest, np.float64)
    apex = np.empty(longest, np.int64)  # the envelope's parabolas, by their vertices ...
    bound = np.empty(longest + 1, np.float64)  # ... and where each starts to be the lowest
    stride = size
    for axis in range(len(shape)):
        stride //= shape[axis]
        if axis == 0:
            continue
        length = shape[axis]
        for start in range(0, size, length * stride):
            for first in range(start, start + stride):
                for y in range(length):
                    line[y] = squared[first + y * stride]
                count = 0
                apex[0] = 0
                bound[0] = -np.inf
                bound[1] = np.inf
                for y in range(1, length):
                    while True:
                        v = apex[count]
                        crossing = ((line[y] + y * y) - (line[v] + v * v)) / (2 * (y - v))
                        if crossing > bound[count]:  # bound[0] is -inf: the loop always ends
                            break
                        count -= 1
                    count += 1
                    apex[count] = y
                    bound[count] = crossing
                    bound[count + 1] = np.inf
                count = 0
                for y in range(length):
                    while bound[count + 1] < y:
                        count += 1
                    v = apex[count]
                    squared[first + y * stride] = (y - v) * (y - v) + line[v]


@numba.njit(cache=True, nogil=True)
def _min_plus_passes(squared, shape, reach):
    """In place over a flat C-ordered array of `shape`: for every axis after the first,
    f(x) <- min over |k| <= reach (within the axis) of f(x + k e_d) + k^2, reading the values from
    before the axis' pass (float32 additions and minima). A shift by k along axis d is a shift by
    k x stride within each contiguous block of the axis' length x stride voxels, so every inner
    loop runs over contiguous memory (vectorised by the compiler)."""
    size = squared.size
    source = np.empty_like(squared)
    stride = size
    for axis in range(len(shape)):
        stride //= shape[axis]
        if axis == 0:
            continue
        length = shape[axis]
        block = length * stride
        source[:] = squared
        for start in range(0, size, block):
            for step in range(1, min(reach, length - 1) + 1):
                cost = np.float32(step * step)
                shift = step * stride
                # Comparisons rather than min(), which the compiler does not vectorise.
                for index in range(start + shift, start + block):
                    candidate = source[index - shift] + cost
                    squared[index] = candidate if candidate < squared[index] else squared[index]
                for index in range(start, start + block - shift):
                    candidate = source[index + shift] + cost
                    squared[index] = candidate if candidate < squared[index] else squared[index]


def bounded_squared_distance(mask: np.ndarray, reach: int) -> np.ndarray:
    """Squared Euclidean distance (voxels^2) from each voxel of a [*P] bool mask to the nearest
    voxel outside it, the box border counting as outside; [*P] float32, 0 outside the mask.

    Exact wherever the distance is at most `reach`; elsewhere a value above reach^2. Separable:
    the first axis takes the exact 1D distance (`_first_axis_squared`), every further axis, for a
    reach up to ENVELOPE_REACH, the minimum over offsets of at most `reach`,
    f(x) = min_k f(x + k e_d) + k^2 (`_min_plus_passes`: O(reach) vectorised operations per voxel),
    beyond it the exact lower envelope (`_lower_envelope_passes`: O(1) scalar ones).
    """
    padded = np.zeros(tuple(n + 2 for n in mask.shape), dtype=bool)  # np.pad costs ten times more
    padded[(slice(1, -1),) * mask.ndim] = mask
    squared = np.empty(padded.shape, dtype=np.float32)
    _first_axis_squared(padded.reshape(len(padded), -1), squared.reshape(len(padded), -1))
    if mask.ndim > 1:
        shape = np.asarray(squared.shape, dtype=np.int64)
        if reach <= ENVELOPE_REACH:
            _min_plus_passes(squared.reshape(-1), shape, reach)
        else:
            _lower_envelope_passes(squared.reshape(-1), shape)
    return squared[(slice(1, -1),) * mask.ndim]


def ramp_weights(mask: np.ndarray, ramp_width: float) -> np.ndarray:
    """min(edt / d_s, 1) over a [*P] bool mask, edt the Euclidean distance to the mask's edge (the
    box border counting as outside) and d_s = min(ramp_width, max(edt)); [*P] float32, 0 outside
    the mask, in (0, 1] inside. Only distances up to ramp_width matter, so the distance is computed
    exactly up to there (an edt above it means max(edt) > ramp_width, so d_s = ramp_width)."""
    distance = np.sqrt(bounded_squared_distance(mask, int(np.ceil(ramp_width))))
    width = np.float32(min(ramp_width, float(distance.max())))
    distance /= width
    return np.minimum(distance, np.float32(1), out=distance)


class IntensityTask:
    """The per-anomaly halves of task 4; the framework draws the shape, repeats and labels."""

    task_id = 4
    name = "intensity"

    def draw(
        self,
        rng: np.random.Generator,
        image: np.ndarray,
        foreground: np.ndarray | None,
        shape: AnomalyShape,
        corner: Sequence[int],
        image_range: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> IntensityParams:
        """Draw order: magnitudes [C], signs [C], ramp fraction. The result is clipped to
        `image_range` (default: the range of `image`)."""
        channels = len(image)
        magnitude = DELTA_OFFSET + rng.gamma(DELTA_GAMMA_SHAPE, DELTA_GAMMA_SCALE, size=channels)
        sign = np.where(rng.random(channels) < 0.5, -1.0, 1.0)
        ramp_fraction = RAMP_OFFSET + float(rng.gamma(RAMP_GAMMA_SHAPE, RAMP_GAMMA_SCALE))
        low, high = channel_range(image) if image_range is None else image_range
        return IntensityParams((sign * magnitude).astype(np.float32), ramp_fraction, low, high)

    def apply(
        self, image: np.ndarray, shape: AnomalyShape, corner: Sequence[int], params: IntensityParams
    ) -> np.ndarray:
        """Add the ramped change inside the mask of the box at `corner`, in place; returns the
        shape's mask (the only voxels that can change)."""
        spatial = image.ndim - 1
        tight = bounding_slices(shape.mask)  # the same distances as over the whole box, fewer voxels
        mask = shape.mask[tight]
        weights = ramp_weights(mask, min(image.shape[1:]) * params.ramp_fraction)
        box = image[(slice(None), *(slice(c + t.start, c + t.stop) for c, t in zip(corner, tight)))]
        column = (-1, *([1] * spatial))
        changed = box + params.delta.reshape(column) * weights
        np.clip(changed, params.low.reshape(column), params.high.reshape(column), out=changed)
        np.copyto(box, changed, where=mask)
        return shape.mask
