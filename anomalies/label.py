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

from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np
import scipy.ndimage

LABEL_SIGMA = 0.2


def flipped_gaussian(change: np.ndarray, sigma: float = LABEL_SIGMA) -> np.ndarray:
    """1 - exp(-change^2 / (2 sigma^2)), float32, exactly 0 where change is 0 and > 0 elsewhere
    (expm1 keeps tiny changes from rounding to 0)."""
    change = np.asarray(change, dtype=np.float32)
    return -np.expm1(-(change * change) / np.float32(2 * sigma * sigma))


def _morphology(values: np.ndarray, filter1d: Callable[..., np.ndarray], combine: np.ufunc) -> np.ndarray:
    """Grey dilation (maximum filters) or erosion (minimum filters) with the connectivity-2
    structuring element: the offsets with at most two non-zero coordinates are the union of the
    3x3 squares of all axis pairs, each a product of two 1D filters of size 3. Voxels beyond the
    array are ignored (scipy's default `reflect` mode gives the same for a size-3 element)."""
    along = [filter1d(values, 3, axis=axis, mode="nearest") for axis in range(values.ndim)]
    if values.ndim == 1:
        return along[0]
    result = None
    for first, second in combinations(range(values.ndim), 2):
        square = filter1d(along[first], 3, axis=second, mode="nearest")
        result = square if result is None else combine(result, square, out=result)
    return result


def dilate(values: np.ndarray) -> np.ndarray:
    """Grey dilation with generate_binary_structure(D, 2)."""
    return _morphology(values, scipy.ndimage.maximum_filter1d, np.maximum)


def erode(values: np.ndarray) -> np.ndarray:
    """Grey erosion with generate_binary_structure(D, 2)."""
    return _morphology(values, scipy.ndimage.minimum_filter1d, np.minimum)


def fill_holes(values: np.ndarray) -> np.ndarray:
    """Grey hole filling: reconstruction by erosion of `values` from a marker equal to `values` on
    the box border (and above them inside), with the connectivity-2 element.

    Every voxel ends at the lowest level at which it connects to the border. The marker starts at
    a tight upper bound of that level, the lower of the running maxima from the border along each
    axis direction (each a path to the border), so the iteration usually stops after one step.
    """
    if min(values.shape) <= 2:
        return values
    marker = None
    for axis in range(values.ndim):
        forward = np.maximum.accumulate(values, axis=axis)
        backward = np.flip(np.maximum.accumulate(np.flip(values, axis), axis=axis), axis)
        bound = np.minimum(forward, backward, out=forward)
        marker = bound if marker is None else np.minimum(marker, bound, out=marker)
    while True:
        updated = np.maximum(erode(marker), values)
        if np.array_equal(updated, marker):
            return marker
        marker = updated


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
    components, _ = scipy.ndimage.label(mask, structure=scipy.ndimage.generate_binary_structure(mask.ndim, 2))
    for index, bounds in enumerate(scipy.ndimage.find_objects(components), start=1):
        inside = components[bounds] == index
        image_box = tuple(slice(r.start + b.start, r.start + b.stop) for r, b in zip(region, bounds))
        change = np.abs(anomalous[(slice(None), *image_box)] - original[(slice(None), *image_box)])
        mean_change = change[0] if len(change) == 1 else change.mean(axis=0)
        values = np.where(inside, flipped_gaussian(mean_change, sigma), np.float32(0))
        filled = fill_holes(erode(dilate(values)))
        np.maximum(label[image_box], filled, out=label[image_box])


def soft_label(
    anomalous: np.ndarray, original: np.ndarray, mask: np.ndarray, sigma: float = LABEL_SIGMA
) -> np.ndarray:
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
    region = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(d for d in range(mask.ndim) if d != axis)))
        if len(hits) == 0:
            return label
        region.append(slice(int(hits[0]), int(hits[-1]) + 1))
    _label_into(label, anomalous, original, tuple(region), mask[tuple(region)], sigma)
    return label


def label_boxes(
    anomalous: np.ndarray,
    original: np.ndarray,
    boxes: Sequence[tuple[Sequence[int], np.ndarray]],
    sigma: float = LABEL_SIGMA,
) -> np.ndarray:
    """`soft_label` of the union of anomalies given as (corner, [*P] bool mask in its box) pairs,
    computed over the boxes' common bounding region only. Returns [*S] float32."""
    spatial_shape = anomalous.shape[1:]
    label = np.zeros(spatial_shape, dtype=np.float32)
    start = np.min([corner for corner, _ in boxes], axis=0)
    stop = np.max([np.add(corner, box.shape) for corner, box in boxes], axis=0)
    region = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
    mask = np.zeros(tuple(stop - start), dtype=bool)
    for corner, box in boxes:
        mask[tuple(slice(c - a, c - a + n) for c, a, n in zip(corner, start, box.shape))] |= box
    _label_into(label, anomalous, original, region, mask, sigma)
    return label
