"""The soft label of a synthetic anomaly (docs/method.md section 3).

x = channel mean of |anomalous - original| inside the anomaly mask (0 outside), mapped through the
flipped Gaussian y = 1 - exp(-x^2 / (2 sigma^2)) (sigma = 0.2: tiny changes get tiny labels). Then,
per connected component of the mask and within the component's bounding box: a grey closing with
the connectivity-2 structuring element (3x3 in 2D, the 18-neighbourhood in 3D:
scipy.ndimage.generate_binary_structure(D, 2)), then grey hole filling (reconstruction by erosion
seeded from the box border). Components combine by maximum. Everything outside the components'
boxes stays 0, so the work scales with the anomaly, not the image.

The flipped Gaussian is numpy's; the rest is one compiled kernel per region (`_label_region`:
flood fill, bounding boxes, separable min/max filters, raster sweeps; min and max only, so the
result is exact whatever the order of evaluation).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from itertools import product

import numba
import numpy as np

from lightwork.anomalies.grid import row_starts, strides_of
from lightwork.anomalies.shapes import bounding_slices

LABEL_SIGMA = 0.2


def flipped_gaussian(change: np.ndarray, sigma: float = LABEL_SIGMA) -> np.ndarray:
    """1 - exp(-change^2 / (2 sigma^2)), float32, exactly 0 where change is 0 and > 0 elsewhere
    (expm1 keeps tiny changes from rounding to 0)."""
    change = np.asarray(change, dtype=np.float32)
    return -np.expm1(-(change * change) / np.float32(2 * sigma * sigma))


@functools.lru_cache(maxsize=8)
def _neighbour_steps(ndim: int) -> np.ndarray:
    """[K, D] int64: the connectivity-2 neighbour steps (one or two coordinates differ, by one),
    in ascending order of the flat offset they make in any C-ordered array. Read only."""
    steps = np.array(
        [step for step in product((-1, 0, 1), repeat=ndim) if 1 <= np.count_nonzero(step) <= 2], dtype=np.int64
    )
    steps.flags.writeable = False
    return steps


@numba.njit(cache=True, nogil=True)
def _flat_offsets(steps, shape):
    """The flat-index offsets in a C-ordered array of `shape` ([D] int64) of the neighbour
    `steps` ([K, D] int64): [K] int64, in the steps' order."""
    strides = strides_of(shape)
    offsets = np.zeros(steps.shape[0], np.int64)
    for k in range(steps.shape[0]):
        for d in range(shape.size):
            offsets[k] += steps[k, d] * strides[d]
    return offsets


@numba.njit(cache=True, nogil=True)
def _combine(first, second, maximum):
    """max(first, second) (maximum=True) or min, of two floats by one comparison."""
    if maximum:
        return first if first > second else second
    return first if first < second else second


@numba.njit(cache=True, nogil=True)
def _filter3(values, shift, maximum):
    """The maximum (maximum=True) or minimum of each flat position and the two `shift` away:
    a new [N] array; the first and last `shift` positions keep their values."""
    result = values.copy()
    for index in range(shift, values.size - shift):
        nearer = _combine(values[index - shift], values[index], maximum)
        result[index] = _combine(nearer, values[index + shift], maximum)
    return result


@numba.njit(cache=True, nogil=True)
def _morphology(values, strides, maximum):
    """Grey dilation (maximum=True) or erosion with the connectivity-2 structuring element of a
    flat array of `strides` whose one-voxel outer shell holds the neutral value (0 for the
    dilation of values >= 0, +inf for the erosion): correct on every voxel off the shell (the
    shell's own results are meaningless). The element is the union of the 3x3 squares of all axis
    pairs (i < j), each a product of two size-3 filters; a filter along j distributes over the
    pointwise combination, so the squares sharing their later axis j take one filter:
    result = combine over j of filter_j(combine over i < j of filter_i(values)), 2 (D - 1)
    filters in all, each a pass over contiguous memory. A shift along axis i from a voxel off
    the shell never leaves the array, and the squares' filters read only voxels off the shell
    in every axis but their own, where the shell is neutral."""
    spatial = strides.size
    earlier = _filter3(values, strides[0], maximum)
    if spatial == 1:
        return earlier
    result = _filter3(earlier, strides[1], maximum)
    for axis in range(2, spatial):
        single = _filter3(values, strides[axis - 1], maximum)
        for index in range(values.size):
            earlier[index] = _combine(earlier[index], single[index], maximum)
        square = _filter3(earlier, strides[axis], maximum)
        for index in range(values.size):
            result[index] = _combine(result[index], square[index], maximum)
    return result


@numba.njit(cache=True, nogil=True)
def _sweep_until_stable(marker, values, rows, length, offsets):
    """Reconstruction by erosion in place: every interior voxel (the interior sub-box's rows
    start at `rows`, `length` voxels each, ascending) becomes max(values, min(itself, its
    neighbours)), in alternating raster sweeps (forward reading the earlier neighbours, backward
    the later ones, already updated in the sweep) until a forward and a backward sweep change
    nothing: then every voxel is a fixed point of the parallel iteration, and since both start
    from the same marker and only lower it, the result is the same greatest fixed point, bit for
    bit (min and max only). A voxel at its floor (marker == values) never changes again, so after
    each pair of sweeps the next visit only the others, in the same order. marker, values: [N]
    float; offsets: [K] int64 the neighbours' flat offsets, ascending (the first half negative)."""
    half = offsets.size // 2
    earlier, later = offsets[:half], offsets[half:]
    voxels = np.empty(rows.size * length, np.int64)
    count = 0
    for row in rows:
        for index in range(row, row + length):
            voxels[count] = index
            count += 1
    changed = True
    while changed:
        changed = _sweep(marker, values, voxels, count, earlier, False)
        changed |= _sweep(marker, values, voxels, count, later, True)
        kept = 0
        for k in range(count):
            if marker[voxels[k]] != values[voxels[k]]:
                voxels[kept] = voxels[k]
                kept += 1
        count = kept


@numba.njit(cache=True, nogil=True)
def _sweep(marker, values, voxels, count, neighbours, backward):
    """One sweep of `_sweep_until_stable` over voxels[:count] (ascending flat indices; backward:
    in reverse); returns whether a voxel was lowered."""
    changed = False
    for k in range(count):
        index = voxels[count - 1 - k] if backward else voxels[k]
        level = marker[index]
        if level == values[index]:
            continue  # at its floor already: nothing can lower it
        for offset in neighbours:
            neighbour = marker[index + offset]
            if neighbour < level:
                level = neighbour
        if level < values[index]:
            level = values[index]
        if level < marker[index]:
            marker[index] = level
            changed = True
    return changed


@numba.njit(cache=True, nogil=True)
def _label_component(soft, components, component, low, high, region_strides, padded_strides, steps, label):
    """Close and hole-fill one component within its bounding box and raise `label` to the result.

    soft, label: flat float32 over the region (strides `region_strides` [D] int64); components:
    flat int32 component numbers over the region padded by one voxel (`padded_strides`); low,
    high: [D] int64, the component's box (inclusive) in region coordinates; steps: [K, D] the
    connectivity-2 neighbour steps (flat offsets ascending). The box is copied into a scratch
    array one voxel larger on every side, whose shell stands for "beyond the box": 0 for the
    dilation (the values are >= 0, so it changes no maximum) and +inf for the erosion, so voxels
    beyond the box are ignored, as in the closing of the box alone. Hole filling reconstructs
    from the box's own border, the marker at the box's maximum inside it (a box 2 voxels thin or
    less has no inside: the closing is the result)."""
    spatial = low.size
    box = high - low + 1
    scratch_shape = box + 2
    scratch_strides = strides_of(scratch_shape)
    size = scratch_shape[0] * scratch_strides[0]
    length = box[spatial - 1]
    ones = np.ones(spatial, np.int64)
    box_rows = row_starts(ones, box, scratch_strides)
    region_rows = row_starts(low, box, region_strides)
    component_rows = row_starts(low + 1, box, padded_strides)
    values = np.zeros(size, np.float32)
    for row, source, numbers in zip(box_rows, region_rows, component_rows):
        for k in range(length):
            if components[numbers + k] == component:
                values[row + k] = soft[source + k]
    dilated = _morphology(values, scratch_strides, True)
    shelled = np.full(size, np.inf, np.float32)
    for row in box_rows:
        shelled[row : row + length] = dilated[row : row + length]
    closed = _morphology(shelled, scratch_strides, False)
    filled = closed.copy()
    if box.min() > 2:
        # The marker: for each interior voxel, the lower of the maxima along its row to either end
        # of the box, the level at which the straight way out along the row leaks; every voxel's
        # result lies between its value and this bound, so reconstruction from it ends where
        # reconstruction from the box's maximum would, after far fewer sweeps.
        interior_rows = row_starts(ones + 1, box - 2, scratch_strides)
        inner = length - 2
        for row in interior_rows:  # the row's box-border voxels are row - 1 and row + inner
            level = closed[row - 1]
            for k in range(inner):
                if closed[row + k] > level:
                    level = closed[row + k]
                filled[row + k] = level
            level = closed[row + inner]
            for k in range(inner - 1, -1, -1):
                if closed[row + k] > level:
                    level = closed[row + k]
                if level < filled[row + k]:
                    filled[row + k] = level
        _sweep_until_stable(filled, closed, interior_rows, inner, _flat_offsets(steps, scratch_shape))
    for row, source in zip(box_rows, region_rows):
        for k in range(length):
            if filled[row + k] > label[source + k]:
                label[source + k] = filled[row + k]


@numba.njit(cache=True, nogil=True)
def _label_region(mask, soft, shape, steps, label):
    """The closing and hole filling of every connectivity-2 component of a region's mask, each
    within its bounding box (`_label_component`), raising `label` in place.

    mask: flat bool, soft and label: flat float32, all C-ordered of the region's shape `shape`
    ([D] int64); steps: `_neighbour_steps(D)`. The components are found by flood fill over the
    region padded by one voxel outside the mask (so every neighbour index stays inside); their
    bounding boxes in one pass."""
    spatial = shape.size
    region_strides = strides_of(shape)
    padded_shape = shape + 2
    padded_strides = strides_of(padded_shape)
    size = padded_shape[0] * padded_strides[0]
    length = shape[spatial - 1]
    # components: -1 on the mask's voxels not yet reached, then their component's number; 0 elsewhere
    # (one array to read per neighbour), the padding's shell 0.
    components = np.zeros(size, np.int32)
    zero = np.zeros(spatial, np.int64)
    for row, source in zip(row_starts(zero + 1, shape, padded_strides), row_starts(zero, shape, region_strides)):
        for k in range(length):
            if mask[source + k]:
                components[row + k] = -1
    offsets = _flat_offsets(steps, padded_shape)
    stack = np.empty(size, np.int64)
    count = 0
    for start in range(size):
        if components[start] != -1:
            continue
        count += 1
        components[start] = count
        top = 0
        stack[0] = start
        while top >= 0:
            index = stack[top]
            top -= 1
            for offset in offsets:
                neighbour = index + offset
                if components[neighbour] == -1:
                    components[neighbour] = count
                    top += 1
                    stack[top] = neighbour
    low = np.empty((count + 1, spatial), np.int64)
    high = np.empty((count + 1, spatial), np.int64)
    low[:] = size
    high[:] = -1
    coordinate = np.zeros(spatial, np.int64)  # region coordinates of the current row
    for row in row_starts(zero + 1, shape, padded_strides):
        for k in range(length):
            component = components[row + k]
            if component:
                coordinate[spatial - 1] = k
                for d in range(spatial):
                    if coordinate[d] < low[component, d]:
                        low[component, d] = coordinate[d]
                    if coordinate[d] > high[component, d]:
                        high[component, d] = coordinate[d]
        for d in range(spatial - 2, -1, -1):  # the next row's coordinates
            coordinate[d] += 1
            if coordinate[d] < shape[d]:
                break
            coordinate[d] = 0
    for component in range(1, count + 1):
        _label_component(
            soft, components, component, low[component], high[component], region_strides, padded_strides, steps, label
        )


def _label_into(
    label: np.ndarray,
    anomalous: np.ndarray,
    original: np.ndarray,
    region: tuple[slice, ...],
    mask: np.ndarray,
    sigma: float,
) -> None:
    """Write the soft label of the anomaly `mask` (a [*R] bool array covering the image slices
    `region`) into `label` ([*S] float32, zero there): the flipped Gaussian of the change here,
    the components' closing and hole filling compiled (`_label_region`)."""
    window = (slice(None), *region)
    change = np.abs(anomalous[window] - original[window])
    soft = flipped_gaussian(change[0] if len(change) == 1 else change.mean(axis=0), sigma)
    result = np.zeros(mask.shape, dtype=np.float32)
    _label_region(
        np.ascontiguousarray(mask).reshape(-1),
        soft.reshape(-1),
        np.array(mask.shape, dtype=np.int64),
        _neighbour_steps(mask.ndim),
        result.reshape(-1),
    )
    np.maximum(label[region], result, out=label[region])


def soft_label(anomalous: np.ndarray, original: np.ndarray, mask: np.ndarray, sigma: float = LABEL_SIGMA) -> np.ndarray:
    """The soft label of an anomaly.

    Args:
        anomalous: [C, *S] float32 image with the anomaly.
        original: [C, *S] float32 image without it.
        mask: [*S] bool, the anomaly's voxels (the change is ignored outside it).
        sigma: the flipped Gaussian's width, in image intensity units.

    Returns:
        [*S] float32 in [0, 1]; all zero for an empty mask or an unchanged image.
    """
    if anomalous.shape != original.shape or anomalous.ndim < 2:
        raise ValueError(f"soft_label: anomalous {anomalous.shape} and original {original.shape} must be equal [C, *S]")
    if mask.dtype != np.bool_ or mask.shape != anomalous.shape[1:]:
        raise ValueError(f"soft_label: mask must be bool of shape {anomalous.shape[1:]}, got {mask.dtype} {mask.shape}")
    label = np.zeros(mask.shape, dtype=np.float32)
    region = bounding_slices(mask)
    if region is not None:
        _label_into(label, anomalous, original, region, mask[region], sigma)
    return label


def label_boxes(
    anomalous: np.ndarray,
    original: np.ndarray,
    boxes: Sequence[tuple[Sequence[int], np.ndarray]],
    sigma: float = LABEL_SIGMA,
) -> np.ndarray:
    """`soft_label` of the union of anomalies given as (corner, [*P] bool mask in its box) pairs.

    Boxes that overlap or touch (a connected component may span them) are grouped, and each group
    is labelled over its own bounding region only, so far-apart anomalies never make the work
    image-sized. Returns [*S] float32.
    """
    label = np.zeros(anomalous.shape[1:], dtype=np.float32)
    groups: list[tuple[np.ndarray, np.ndarray, list]] = []
    for corner, box in boxes:
        start, stop, members = np.asarray(corner), np.add(corner, box.shape), [(corner, box)]
        touching = True
        while touching:  # merge every group this box, or its growing union, touches
            touching = False
            for index, (other_start, other_stop, other_members) in enumerate(groups):
                if (other_start <= stop).all() and (start <= other_stop).all():
                    del groups[index]
                    start, stop = np.minimum(start, other_start), np.maximum(stop, other_stop)
                    members += other_members
                    touching = True
                    break
        groups.append((start, stop, members))
    for start, stop, members in groups:
        if len(members) == 1:
            mask = members[0][1]
        else:
            mask = np.zeros(tuple(stop - start), dtype=bool)
            for corner, box in members:
                mask[tuple(slice(c - a, c - a + n) for c, a, n in zip(corner, start, box.shape))] |= box
        region = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
        _label_into(label, anomalous, original, region, mask, sigma)
    return label
