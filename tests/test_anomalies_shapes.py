"""Anomaly shapes (sizes, shear, rotation, fit, rasterisation) and their placement."""

from __future__ import annotations

import numpy as np
import pytest

from lightwork.anomalies import shapes
from lightwork.anomalies.shapes import KINDS, draw_shape, make_shape, place_shape, size_bounds


def _unit_coordinates(shape: shapes.AnomalyShape) -> np.ndarray:
    """[D, *P] float64 back-transformed coordinates of the box voxels (the shape is the unit ball
    or cube of them)."""
    grid = np.indices(shape.mask.shape, dtype=np.float64).reshape(len(shape.sizes), -1)
    unit = (2 / shape.sizes)[:, None] * np.linalg.solve(shape.matrix, grid - shape.centre[:, None])
    return unit.reshape(len(shape.sizes), *shape.mask.shape)


def test_size_distribution_matches_the_method_medians():
    # docs/method.md: median anomaly mask ~0.5% of an 80x112x80 volume with a median box of ~29^3, ~3% of
    # a 256^2 image. Bands: about +/-15% around those figures. The sample median's spread, estimated
    # from independent quarters of the sample, is ~5% (3D, 800 draws) and ~4% (2D, 1500 draws), so a
    # correct sampler stays inside with a wide margin, while a 10% error in the Gamma scale (30% in
    # a 3D volume, 20% in a 2D area) falls outside.
    rng = np.random.default_rng(0)
    volume = [draw_shape(rng, (80, 112, 80)) for _ in range(800)]
    fractions = [np.count_nonzero(s.mask) / (80 * 112 * 80) for s in volume]
    sides = [np.prod(s.mask.shape) ** (1 / 3) for s in volume]
    assert 0.0043 < np.median(fractions) < 0.0059
    assert 26.5 < np.median(sides) < 32.0
    areas = [np.count_nonzero(draw_shape(rng, (256, 256)).mask) / 256**2 for _ in range(1500)]
    assert 0.028 < np.median(areas) < 0.038


def test_sizes_bounds_kinds_and_the_mask_is_the_transformed_shape():
    rng = np.random.default_rng(1)
    kinds = []
    for image_shape in [(80, 112, 80), (256, 256), (12, 40), (9, 9, 30), (50,)]:
        lower, upper = size_bounds(image_shape)
        for _ in range(60):
            shape = draw_shape(rng, image_shape)
            kinds.append(shape.kind)
            assert ((shape.sizes >= lower) & (shape.sizes <= upper)).all()
            assert np.array_equal(shape.sizes, np.floor(shape.sizes))
            assert (np.array(shape.mask.shape) <= upper).all()
            assert shape.mask.any()
            np.testing.assert_allclose(shape.centre, (np.array(shape.mask.shape) - 1) / 2)
            unit = _unit_coordinates(shape)
            level = (unit**2).sum(axis=0) if shape.kind == "ellipse" else np.abs(unit).max(axis=0)
            clear = np.abs(level - 1) > 1e-4  # float32 rasterisation: ignore points on the boundary
            if (level < 1 - 1e-4).any():
                np.testing.assert_array_equal(shape.mask[clear], level[clear] <= 1)
            else:  # a sliver between the grid points (sizes of 1 voxel): just the middle voxel
                assert np.count_nonzero(shape.mask) == 1
            # The box is the transformed rectangle's bounding box, up to the grid.
            half = np.abs(shape.matrix) @ (shape.sizes / 2)
            np.testing.assert_array_equal(shape.mask.shape, np.maximum(np.ceil(2 * half - 1e-9), 1))
    assert 0.4 < np.mean(np.array(kinds) == "ellipse") < 0.6


def _givens(spatial, i, j, angle):
    rotation = np.eye(spatial)
    rotation[[i, j], [i, j]] = np.cos(angle)
    rotation[i, j], rotation[j, i] = -np.sin(angle), np.sin(angle)
    return rotation


def test_transform_is_givens_rotations_times_one_shear_entry_per_row_scaled_to_fit():
    # Replay the documented draw order: sizes, kind, shear columns and values, angles.
    scaled = 0
    for seed in range(100):
        shape = draw_shape(np.random.default_rng(seed), (20, 30, 24))
        replay = np.random.default_rng(seed)
        replay.gamma(2.0, 0.1, size=3)
        assert shape.kind == ("ellipse" if replay.random() < 0.5 else "rectangle")
        columns = replay.integers(2, size=3)
        values = replay.normal(0.0, 0.2, size=3)
        shear = np.eye(3)
        for row, (column, value) in enumerate(zip(columns, values)):
            shear[row, [d for d in range(3) if d != row][column]] = value
        a01, a02, a12 = replay.uniform(-np.pi / 2, np.pi / 2, size=3)
        transform = _givens(3, 1, 2, a12) @ _givens(3, 0, 2, a02) @ _givens(3, 0, 1, a01) @ shear
        scale = shape.matrix[0, 0] / transform[0, 0]
        np.testing.assert_allclose(shape.matrix, scale * transform, rtol=1e-12, atol=1e-12)
        span = 2 * np.abs(transform) @ (shape.sizes / 2)
        upper = size_bounds((20, 30, 24))[1]
        np.testing.assert_allclose(scale, min(1.0, np.min(upper / span)), rtol=1e-12)
        scaled += scale < 1
    assert 0 < scaled < 100  # at this small size some shapes are scaled down to fit, not all


def test_make_shape_on_known_shapes():
    rectangle = make_shape("rectangle", [5, 7], np.eye(2))
    assert rectangle.mask.shape == (5, 7) and rectangle.mask.all()
    disc = make_shape("ellipse", [9, 9], np.eye(2))
    i, j = np.indices((9, 9))
    np.testing.assert_array_equal(disc.mask, (i - 4) ** 2 + (j - 4) ** 2 <= 4.5**2)
    quarter = np.array([[0.0, -1.0], [1.0, 0.0]])
    turned = make_shape("rectangle", [4, 8], quarter)
    assert turned.mask.shape == (8, 4) and turned.mask.all()
    sheared = make_shape("rectangle", [4, 4], np.array([[1.0, 1.0], [0.0, 1.0]]))
    assert sheared.mask.shape == (8, 4)
    # Row i holds the columns u1 in [-2, 2] whose offset i - 3.5 = u0 + u1 has |u0| <= 2.
    assert sheared.mask[0].sum() == sheared.mask[-1].sum() == 1 and sheared.mask[3].sum() == 4
    # A shape too thin to cover any grid point still marks the box's middle voxel.
    diamond = make_shape("rectangle", [1, 1], np.array([[1.0, -1.0], [1.0, 1.0]]) / np.sqrt(2))
    assert diamond.mask.shape == (2, 2) and diamond.mask.sum() == 1 and diamond.mask[0, 0]
    with pytest.raises(ValueError, match="kind must be one of"):
        make_shape("triangle", [3, 3], np.eye(2))


def test_place_shape_is_uniform_without_foreground_and_half_on_it_with_one():
    rng = np.random.default_rng(3)
    shape = make_shape("rectangle", [5, 5], np.eye(2))
    corners = np.array([place_shape(rng, shape, None, (12, 12)) for _ in range(4000)])
    assert corners.min() == 0 and corners.max() == 7
    counts = np.bincount(corners[:, 0] * 8 + corners[:, 1], minlength=64)
    assert counts.min() > 30 and counts.max() < 95  # 62.5 expected per corner

    foreground = np.zeros((40, 44, 36), bool)
    foreground[:, :22] = True
    for _ in range(100):
        shape = draw_shape(rng, foreground.shape)
        corner = place_shape(rng, shape, foreground, foreground.shape)
        window = foreground[tuple(slice(c, c + n) for c, n in zip(corner, shape.mask.shape))]
        assert window.shape == shape.mask.shape
        assert np.count_nonzero(window & shape.mask) >= 0.5 * np.count_nonzero(shape.mask)


def test_placement_finds_rare_fits_exactly_and_fails_clearly(monkeypatch):
    shape = make_shape("rectangle", [10, 10], np.eye(2))
    foreground = np.zeros((60, 60), bool)
    foreground[25:32, 30:38] = True  # 56 voxels: only boxes covering all of them hold >= 50
    qualifying = {(r, c) for r in range(22, 26) for c in range(28, 31)}
    monkeypatch.setattr(shapes, "PLACEMENT_TRIES", 0)  # go straight to the exact choice
    rng = np.random.default_rng(4)
    found = [place_shape(rng, shape, foreground, (60, 60)) for _ in range(300)]
    assert set(found) == qualifying
    monkeypatch.undo()
    assert place_shape(rng, shape, foreground, (60, 60)) in qualifying

    speck = np.zeros((60, 60), bool)
    speck[10:15, 10:15] = True  # 25 voxels < half of 100
    with pytest.raises(ValueError, match=r"foreground too small: .* rectangle anomaly \(100 voxels.*25 foreground"):
        place_shape(rng, shape, speck, (60, 60))
    with pytest.raises(ValueError, match="does not fit"):
        place_shape(rng, shape, None, (9, 60))


def test_image_too_small_for_an_anomaly():
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match=r"every spatial axis needs >= 9 voxels"):
        draw_shape(rng, (8, 40))
    shape = draw_shape(rng, (9, 9))
    assert shape.mask.any() and (np.array(shape.mask.shape) <= 7).all()


@pytest.mark.parametrize("image_shape, box", [((23, 17), (5, 4)), ((12, 10, 9), (4, 3, 5))])
def test_overlap_counts_equal_the_direct_count(image_shape, box):
    """The FFT correlation behind the exact placement counts what a loop over every corner counts
    (an asymmetric mask: a flipped or shifted correlation would differ)."""
    rng = np.random.default_rng(len(box))
    foreground = rng.random(image_shape) < 0.6
    mask = rng.random(box) < 0.5
    mask[(0,) * len(box)] = True
    counts = shapes.overlap_counts(foreground, mask)
    assert counts.shape == tuple(s - p + 1 for s, p in zip(image_shape, box))
    for corner in np.ndindex(counts.shape):
        window = foreground[tuple(slice(c, c + p) for c, p in zip(corner, box))]
        assert counts[corner] == np.count_nonzero(window & mask)


def _broadcast_mask(kind, sizes, matrix):
    """make_shape's mask by numpy broadcasting: v = diag(2 / sizes) matrix^-1 (x - centre) per row in
    float32, the leading axes' share first, inside where sum v^2 <= 1 (ellipse) or max |v| <= 1."""
    half = np.abs(matrix) @ (np.asarray(sizes) / 2)
    box = np.maximum(np.ceil(2 * half - 1e-9), 1).astype(np.int64)
    centre = (box - 1) / 2
    unit = ((2 / np.asarray(sizes))[:, None] * np.linalg.inv(matrix)).astype(np.float32)
    spatial = len(sizes)
    offsets = [
        (np.arange(n, dtype=np.float32) - np.float32(c)).reshape([n if d == axis else 1 for d in range(spatial)])
        for axis, (n, c) in enumerate(zip(box, centre))
    ]
    terms = []
    for row in unit:
        coordinate = offsets[0] * row[0]
        for d in range(1, spatial):
            coordinate = coordinate + offsets[d] * row[d]
        terms.append(np.broadcast_to(coordinate * coordinate if kind == "ellipse" else np.abs(coordinate), tuple(box)))
    inside = terms[0].copy()
    for term in terms[1:]:
        if kind == "ellipse":
            inside += term
        else:
            np.maximum(inside, term, out=inside)
    return inside <= 1


def test_rasterisation_equals_numpy_broadcasting_in_1d_to_4d():
    """The compiled rasteriser evaluates the same float32 expression in the same order as numpy's
    broadcasting over the box: the same masks bit for bit, on rotated and sheared shapes."""
    rng = np.random.default_rng(5)
    for spatial in (1, 2, 3, 4):
        for _ in range(25):
            kind = KINDS[int(rng.integers(2))]
            sizes = rng.integers(1, 25, size=spatial).astype(np.float64)
            matrix = np.eye(spatial) + rng.normal(0, 0.4, size=(spatial, spatial))
            shape = make_shape(kind, sizes, matrix)
            expected = _broadcast_mask(kind, sizes, matrix)
            if expected.any():
                np.testing.assert_array_equal(shape.mask, expected)
            else:  # too thin to cover a grid point: the middle voxel alone
                assert shape.mask.sum() == 1
