"""The soft label: flipped Gaussian, per-component grey closing and hole filling."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from lightwork.anomalies import soft_label
from lightwork.anomalies.label import flipped_gaussian, label_boxes


def _flipped(x):
    return 1 - np.exp(-(np.asarray(x, np.float64) ** 2) / (2 * 0.2**2))


def test_no_change_or_no_mask_gives_an_all_zero_label():
    image = np.random.default_rng(0).random((2, 12, 14), dtype=np.float32)
    mask = np.zeros((12, 14), bool)
    mask[3:9, 4:10] = True
    assert not soft_label(image, image.copy(), mask).any()
    assert not soft_label(image + 1, image, np.zeros((12, 14), bool)).any()
    assert soft_label(image, image, mask).dtype == np.float32


def test_flipped_gaussian_values_on_separate_components_and_channel_mean():
    original = np.zeros((2, 30, 12), np.float32)
    anomalous = original.copy()
    mask = np.zeros((30, 12), bool)
    changes = {0: (0.1, 0.1), 1: (0.1, 0.3), 2: (0.4, 0.4), 3: (1e-4, 1e-4)}  # per channel
    for index, (first, second) in changes.items():
        rows = slice(2 + 7 * index, 7 + 7 * index)  # 5x5 blocks two rows apart: separate components
        mask[rows, 3:8] = True
        anomalous[0, rows, 3:8] = first
        anomalous[1, rows, 3:8] = -second  # the sign of a change does not matter
    label = soft_label(anomalous, original, mask)
    for index, (first, second) in changes.items():
        block = label[2 + 7 * index : 7 + 7 * index, 3:8]
        np.testing.assert_allclose(block, _flipped((first + second) / 2), rtol=2e-6)
    np.testing.assert_allclose(flipped_gaussian(np.array([0.2, 0.4])), [1 - np.exp(-0.5), 1 - np.exp(-2)], rtol=1e-6)
    assert label[changes.__len__() * 7 :].max() == 0 and label[~mask].max() == 0
    assert 0 < label[23:28, 3:8].min() < 1e-6  # a tiny change gets a tiny but positive label


def test_closing_fills_a_one_voxel_hole_in_2d_and_3d_but_never_bridges_components():
    for shape in [(9, 9), (7, 7, 7)]:
        original = np.zeros((1, *shape), np.float32)
        anomalous = np.full_like(original, 0.3)
        mask = np.ones(shape, bool)
        centre = tuple(n // 2 for n in shape)
        mask[centre] = False  # the centre is neither in the mask nor changed
        anomalous[(0, *centre)] = 0.0
        label = soft_label(anomalous, original, mask)
        np.testing.assert_allclose(label, _flipped(0.3), rtol=1e-6)

    # A notch on the mask's edge touches the box border, so hole filling leaves it: the closing fills it.
    original = np.zeros((1, 7, 7), np.float32)
    anomalous = np.full_like(original, 0.3)
    anomalous[0, 0, 3] = 0.0
    mask = np.ones((7, 7), bool)
    mask[0, 3] = False
    np.testing.assert_allclose(soft_label(anomalous, original, mask), _flipped(0.3), rtol=1e-6)
    assert _reference_fill(np.where(mask, np.float32(0.3), np.float32(0)))[0, 3] == 0

    original = np.zeros((1, 8, 11), np.float32)
    anomalous = np.full_like(original, 0.3)
    mask = np.zeros((8, 11), bool)
    mask[1:7, 1:5] = mask[1:7, 6:10] = True  # two blocks, one column apart
    label = soft_label(anomalous, original, mask)
    np.testing.assert_array_equal(label > 0, mask)


def test_hole_filling_raises_an_enclosed_low_area_to_its_rim():
    original = np.zeros((1, 15, 15), np.float32)
    anomalous = original.copy()
    anomalous[0, 2:13, 2:13] = 0.5
    anomalous[0, 5:10, 5:10] = 0.05  # a 5x5 dip: too wide for the closing
    mask = np.zeros((15, 15), bool)
    mask[2:13, 2:13] = True
    label = soft_label(anomalous, original, mask)
    np.testing.assert_allclose(label[2:13, 2:13], _flipped(0.5), rtol=1e-6)


def _reference_fill(values):
    """Reconstruction by erosion from the plain marker (maximum inside, values on the border),
    iterated with scipy's grey erosion."""
    structure = scipy.ndimage.generate_binary_structure(values.ndim, 2)
    marker = np.full_like(values, values.max())
    border = np.ones(values.shape, bool)
    border[(slice(1, -1),) * values.ndim] = False
    marker[border] = values[border]
    while True:
        updated = np.maximum(scipy.ndimage.grey_erosion(marker, footprint=structure), values)
        if np.array_equal(updated, marker):
            return marker
        marker = updated


def _reference_label(anomalous, original, mask):
    """Method.md section 3 step by step with scipy: the flipped Gaussian of the channel-mean
    change on the mask; per connectivity-2 component (scipy.ndimage.label), within its bounding
    box, grey dilation then erosion with generate_binary_structure(D, 2) and hole filling by
    iterated erosion; the components combined by maximum."""
    structure = scipy.ndimage.generate_binary_structure(mask.ndim, 2)
    soft = flipped_gaussian(np.abs(anomalous - original).mean(axis=0))
    components, count = scipy.ndimage.label(mask, structure=structure)
    label = np.zeros(mask.shape, np.float32)
    for index, box in enumerate(scipy.ndimage.find_objects(components), start=1):
        values = np.where(components[box] == index, soft[box], np.float32(0))
        dilated = scipy.ndimage.grey_dilation(values, footprint=structure)
        closed = scipy.ndimage.grey_erosion(dilated, footprint=structure)
        label[box] = np.maximum(label[box], _reference_fill(closed) if min(closed.shape) > 2 else closed)
    return label, count


def test_soft_label_equals_the_method_step_by_step_in_1d_to_4d():
    """Components, closing and hole filling (compiled, on each component's box) against scipy's
    label, grey morphology and an iterated reconstruction: equal bit for bit, on masks with many
    components, close enough for the closing to reach across, values with dips and holes."""
    rng = np.random.default_rng(1)
    for shape in [(40,), (23, 29), (13, 11, 12), (6, 7, 6, 5)]:
        counts = []
        for density in (0.1, 0.3, 0.5, 0.8):
            original = rng.random((2, *shape), dtype=np.float32)
            anomalous = original + rng.normal(0, 0.3, size=(2, *shape)).astype(np.float32)
            unchanged = rng.random(shape) < 0.2  # dips to 0 inside the components
            anomalous[:, unchanged] = original[:, unchanged]
            smooth = scipy.ndimage.gaussian_filter(rng.random(shape), 1.0)
            mask = smooth > np.quantile(smooth, 1 - density)
            mask |= rng.random(shape) < 0.03  # isolated voxels
            expected, count = _reference_label(anomalous, original, mask)
            np.testing.assert_array_equal(soft_label(anomalous, original, mask), expected)
            counts.append(count)
        assert max(counts) >= 3, counts  # several components


def test_label_boxes_equals_soft_label_of_the_union():
    rng = np.random.default_rng(2)
    for _ in range(10):
        original = rng.random((2, 40, 36, 30), dtype=np.float32)
        anomalous = original.copy()
        union = np.zeros((40, 36, 30), bool)
        boxes = []
        for _ in range(int(rng.integers(1, 5))):
            size = rng.integers(4, 14, size=3)
            corner = tuple(int(c) for c in rng.integers(0, np.array([40, 36, 30]) - size + 1))
            box = scipy.ndimage.gaussian_filter(rng.random(size), 1.5) > 0.5
            region = tuple(slice(c, c + n) for c, n in zip(corner, size))
            anomalous[(slice(None), *region)] += rng.normal(0, 0.2, size=(2, *size)).astype(np.float32) * box
            union[region] |= box
            boxes.append((corner, box))
        label = label_boxes(anomalous, original, boxes)
        np.testing.assert_array_equal(label, soft_label(anomalous, original, union))
        assert label.min() >= 0 and label.max() <= 1


def test_soft_label_rejects_mismatched_inputs():
    image = np.zeros((1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="must be equal"):
        soft_label(image, np.zeros((1, 8, 9), np.float32), np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="mask must be bool of shape"):
        soft_label(image, image, np.zeros((8, 8), np.uint8))
