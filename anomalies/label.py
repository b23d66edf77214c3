"""The soft label of a synthetic anomaly (method.md section 3).

x = channel mean of |anomalous - original| inside the anomaly mask (0 outside), mapped through the
flipped Gaussian y = 1 - exp(-x^2 / (2 sigma^2)) (sigma = 0.2: tiny changes get tiny labels). Then,
per connected component of the mask and within the component's bounding box: a grey closing with
the connectivity-2 structuring element (3x3 in 2D, the 18-neighbourhood in 3D:
scipy.ndimage.generate_binary_structure(D, 2)), then grey hole filling (reconstruction by erosion
seeded from the box border). Components combine by maximum. Everything outside the components'
boxes stays 0, so the work scales with the anomaly, not the image.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from itertools import product

import numba
import numpy as np
import scipy.ndimage

from lightwork.anomalies.shapes import bounding_slices

LABEL_SIGMA = 0.2


def flipped_gaussian(change: np.ndarray, sigma: float = LABEL_SIGMA) -> np.ndarray:
    """1 - exp(-change^2 / (2 sigma^2)), float32, exactly 0 where change is 0 and > 0 elsewhere
    (expm1 keeps tiny changes from rounding to 0)."""
    change = np.asarray(change, dtype=np.float32)
    return -np.expm1(-(change * change) / np.float32(2 * sigma * sigma))


def _filter3(values: np.ndarray, axis: int, combine: np.ufunc) -> np.ndarray:
    """The maximum (combine=np.maximum) or minimum of each voxel and its two neighbours along
    `axis`; voxels beyond the array are ignored. Shifted views: far faster than scipy's filter1d
    on the small boxes labels need."""
    result = values.copy()
    later = tuple(slice(1, None) if d == axis else slice(None) for d in range(values.ndim))
    earlier = tuple(slice(None, -1) if d == axis else slice(None) for d in range(values.ndim))
    combine(result[later], values[earlier], out=result[later])
    combine(result[earlier], values[later], out=result[earlier])
    return result


def _morphology(values: np.ndarray, combine: np.ufunc) -> np.ndarray:
    """Grey dilation (combine=np.maximum) or erosion (np.minimum) with the connectivity-2
    structuring element: the offsets with at most two non-zero coordinates, i.e. the union of the
    3x3 squares of all axis pairs (i < j), each a product of two size-3 filters. Since a filter
    along j distributes over the pointwise combination, the squares sharing their later axis j take
    one filter: result = combine over j of filter_j(combine over i < j of filter_i(values)),
    2 (D - 1) filters in all. Voxels beyond the array are ignored (for a size-3 element this equals
    scipy.ndimage's default `reflect` mode)."""
    if values.ndim == 1:
        return _filter3(values, 0, combine)
    earlier = _filter3(values, 0, combine)
    result = None
    for axis in range(1, values.ndim):
        square = _filter3(earlier, axis, combine)
        result = square if result is None else combine(result, square, out=result)
        if axis < values.ndim - 1:
            combine(earlier, _filter3(values, axis, combine), out=earlier)
    return result


def dilate(values: np.ndarray) -> np.ndarray:
    """Grey dilation with generate_binary_structure(D, 2)."""
    return _morphology(values, np.maximum)


def erode(values: np.ndarray) -> np.ndarray:
    """Grey erosion with generate_binary_structure(D, 2)."""
    return _morphology(values, np.minimum)


@functools.lru_cache(maxsize=8)
def _neighbour_steps(ndim: int) -> np.ndarray:
    """[K, D] int64: the connectivity-2 neighbour steps (one or two coordinates differ, by one)."""
    return np.array(
        [step for step in product((-1, 0, 1), repeat=ndim) if 1 <= np.count_nonzero(step) <= 2], dtype=np.int64
    )


def _neighbour_offsets(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat-index offsets in a C-ordered array of `shape` of the connectivity-2 neighbours:
    ([K/2] int64 negative, [K/2] int64 positive, [K] int64 all); read-only."""
    return _offsets_after_first_axis(tuple(shape[1:]))


@functools.lru_cache(maxsize=1024)
def _offsets_after_first_axis(trailing: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_neighbour_offsets` of any shape (n, *trailing), cached by the axes that set the strides
    (anomaly boxes vary too much for a cache of whole shapes)."""
    strides = np.cumprod((1,) + trailing[::-1])[::-1]
    flat = np.sort(_neighbour_steps(len(trailing) + 1) @ strides)
    flat.flags.writeable = False
    return flat[: len(flat) // 2], flat[len(flat) // 2 :], flat


@numba.njit(cache=True, nogil=True)
def _sweep_until_stable(marker, values, interior, earlier, later):
    """Reconstruction by erosion in place on flat arrays (marker, values: [N] float; interior,
    earlier, later: int64): every `interior` voxel (ascending flat indices) becomes
    max(values, min(itself, its neighbours)), in alternating raster sweeps
    (forward reading the `earlier` neighbours, backward the `later` ones, already updated in the
    sweep) until a forward and a backward sweep change nothing: then every voxel is a fixed point
    of the parallel iteration, and since both start from the same marker and only lower it, the
    result is the same greatest fixed point, bit for bit (min and max only)."""
    changed = True
    while changed:
        changed = False
        for direction in range(2):
            offsets = earlier if direction == 0 else later
            count = interior.size
            for k in range(count):
                index = interior[k] if direction == 0 else interior[count - 1 - k]
                level = marker[index]
                if level == values[index]:
                    continue  # at its floor already: nothing can lower it
                for offset in offsets:
                    neighbour = marker[index + offset]
                    if neighbour < level:
                        level = neighbour
                if level < values[index]:
                    level = values[index]
                if level < marker[index]:
                    marker[index] = level
                    changed = True


@numba.njit(cache=True, nogil=True)
def _flood_components(padded, offsets, labels):
    """Label the connected True voxels of a flat bool array whose border voxels are all False
    (so every neighbour index stays inside), 1, 2, ... in the C order of each component's first
    voxel (scipy.ndimage.label's numbering); labels: flat int32 zeros, written in place.
    Returns the number of components."""
    stack = np.empty(padded.size, np.int64)
    count = 0
    for start in range(padded.size):
        if not padded[start] or labels[start]:
            continue
        count += 1
        labels[start] = count
        top = 0
        stack[0] = start
        while top >= 0:
            index = stack[top]
            top -= 1
            for offset in offsets:
                neighbour = index + offset
                if padded[neighbour] and not labels[neighbour]:
                    labels[neighbour] = count
                    top += 1
                    stack[top] = neighbour
    return count


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The connectivity-2 components of a [*P] bool mask: ([*P] int32 labels 1..n, 0 outside; n),
    numbered as scipy.ndimage.label numbers them (compiled flood fill: `_flood_components`)."""
    inside = (slice(1, -1),) * mask.ndim
    padded = np.zeros(tuple(n + 2 for n in mask.shape), dtype=bool)
    padded[inside] = mask
    labels = np.zeros(padded.shape, dtype=np.int32)
    count = _flood_components(padded.reshape(-1), _neighbour_offsets(padded.shape)[2], labels.reshape(-1))
    return labels[inside], count


def fill_holes(values: np.ndarray) -> np.ndarray:
    """Grey hole filling: reconstruction by erosion of `values` ([*P] float, any D) from a marker
    equal to `values` on the box border and to their maximum inside, with the connectivity-2
    element: every voxel ends at the lowest level at which it connects to the border. Compiled
    raster sweeps (`_sweep_until_stable`) instead of one parallel erosion per voxel of hole depth.
    Returns a new array of the same shape and dtype (the input itself when an axis has 2 voxels or fewer)."""
    if min(values.shape) <= 2:
        return values
    inside = (slice(1, -1),) * values.ndim
    marker = np.array(values, order="C")
    marker[inside] = values.max()
    interior = np.arange(values.size, dtype=np.int64).reshape(values.shape)[inside]
    earlier, later, _ = _neighbour_offsets(values.shape)
    _sweep_until_stable(
        marker.reshape(-1), np.ascontiguousarray(values).reshape(-1), interior.reshape(-1), earlier, later
    )
    return marker


def _label_into(
    label: np.ndarray,
    anomalous: np.ndarray,
    original: np.ndarray,
    region: tuple[slice, ...],
    mask: np.ndarray,
    sigma: float,
) -> None:
    """Write the soft label of the anomaly `mask` (a [*R] bool array covering the image slices
    `region`) into `label` ([*S] float32, zero there)."""
    components, _ = connected_components(mask)
    for index, bounds in enumerate(scipy.ndimage.find_objects(components), start=1):
        inside = components[bounds] == index
        image_box = tuple(slice(r.start + b.start, r.start + b.stop) for r, b in zip(region, bounds))
        change = np.abs(anomalous[(slice(None), *image_box)] - original[(slice(None), *image_box)])
        mean_change = change[0] if len(change) == 1 else change.mean(axis=0)
        values = np.where(inside, flipped_gaussian(mean_change, sigma), np.float32(0))
        filled = fill_holes(erode(dilate(values)))
        np.maximum(label[image_box], filled, out=label[image_box])


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
        mask = np.zeros(tuple(stop - start), dtype=bool)
        for corner, box in members:
            mask[tuple(slice(c - a, c - a + n) for c, a, n in zip(corner, start, box.shape))] |= box
        tight = bounding_slices(mask)  # an ellipse fills little of its box's corners
        region = tuple(slice(int(a) + t.start, int(a) + t.stop) for a, t in zip(start, tight))
        _label_into(label, anomalous, original, region, mask[tight], sigma)
    return label
