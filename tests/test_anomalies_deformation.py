"""Tasks 2 (sink) and 3 (source): the analytic edge distance against a ray march, the profile
exponent against the push, the backward mapping read off coordinate images (cubic convolution
reproduces linear functions exactly), locality, determinism and the framework hookup."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from lightwork.anomalies import registry
from lightwork.anomalies.deformation import (
    DeformationParams,
    DeformationTask,
    edge_ratio,
    exponent,
    inner_edge,
    push_bounds,
)
from lightwork.anomalies.patch import givens_rotation
from lightwork.anomalies.shapes import draw_shape, make_shape


def _shapes():
    """Axis-aligned and rotated+sheared ellipses and rectangles in 2D and 3D."""
    shear2 = np.array([[1.0, 0.3], [0.0, 1.0]])
    shear3 = np.array([[1.0, 0.0, -0.25], [0.2, 1.0, 0.0], [0.0, 0.15, 1.0]])
    return [
        make_shape("ellipse", [21, 13], np.eye(2)),
        make_shape("rectangle", [17, 9], np.eye(2)),
        make_shape("ellipse", [23, 11], givens_rotation([0.7], 2) @ shear2),
        make_shape("rectangle", [19, 12], givens_rotation([-1.1], 2) @ shear2),
        make_shape("ellipse", [15, 11, 9], np.eye(3)),
        make_shape("rectangle", [13, 9, 11], givens_rotation([0.4, -0.9, 1.2], 3) @ shear3),
        make_shape("ellipse", [17, 9, 12], givens_rotation([-0.3, 1.3, 0.5], 3) @ shear3),
    ]


def _inside(shape, points):
    """[N] bool: points ([D, N] box coordinates) inside the shape, from its definition."""
    unit = (2 / shape.sizes)[:, None] * (np.linalg.inv(shape.matrix) @ (points - shape.centre[:, None]))
    return (unit**2).sum(axis=0) <= 1 if shape.kind == "ellipse" else (np.abs(unit) <= 1).all(axis=0)


def _marched_edge(shape, centre, direction):
    """Distance from `centre` (inside) to the shape's edge along the unit `direction`, by
    bisection on the definition's inside test (a convex shape: the ray leaves it once)."""
    low, high = 0.0, float(np.linalg.norm(shape.mask.shape)) + 1
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if _inside(shape, (centre + middle * direction)[:, None])[0] else (low, middle)
    return low


@pytest.mark.parametrize("index", range(7))
def test_edge_distance_is_exact_against_a_ray_march(index):
    shape = _shapes()[index]
    rng = np.random.default_rng(index)
    voxels = np.argwhere(shape.mask)
    for centre in voxels[rng.choice(len(voxels), 3, replace=False)]:
        targets = voxels[rng.choice(len(voxels), 40, replace=False)]
        offsets = (targets - centre).T.astype(np.float32)
        ratio = edge_ratio(shape, centre, offsets)
        distance = np.linalg.norm(offsets, axis=0)
        for k in np.flatnonzero(distance > 0):
            marched = _marched_edge(shape, centre.astype(np.float64), offsets[:, k] / distance[k])
            # r / R with R from the march; R is at least r (the target is a mask voxel).
            assert ratio[k] == pytest.approx(min(distance[k] / marched, 1.0), rel=2e-4, abs=1e-5)
        assert (ratio[distance == 0] == 0).all()


@pytest.mark.parametrize("task_id", [2, 3])
@pytest.mark.parametrize("mean_edge_distance", [1.3, 6.0, 17.5])
def test_the_exponent_moves_the_profile_midpoint_by_the_push(task_id, mean_edge_distance):
    a = mean_edge_distance
    low, high = push_bounds(a, 5.0)
    assert low == pytest.approx(max(0.1 * a / np.sqrt(2), 0.5)) and high == pytest.approx(
        min(0.9 * a / np.sqrt(2), 5.0)
    )
    for push in np.linspace(max(low, 0.05), high, 5):
        f = exponent(task_id, a, push)
        assert f > 1
        profile = {
            3: lambda r: a * (r / a) ** f,  # source: r' = R (r / R)^f with R = A
            2: lambda r: a - a * ((a - r) / a) ** f,  # sink
        }[task_id]
        # The point (x, r'(x)) of the profile on the anti-diagonal through (A/2, A/2) is p away.
        shift = push / np.sqrt(2)
        x = a / 2 + shift if task_id == 3 else a / 2 - shift
        y = profile(x)
        assert x - a / 2 == pytest.approx(-(y - a / 2), abs=1e-9)
        assert np.hypot(x - a / 2, y - a / 2) == pytest.approx(push, rel=1e-9)
    assert exponent(task_id, a, 0.0) == 1.0 and exponent(task_id, 0.0, 0.3) == 1.0


def _coordinate_image(spatial_shape):
    """[D, *S] float32: channel d holds the voxel's coordinate along axis d."""
    return np.indices(spatial_shape, dtype=np.float32)


@pytest.mark.parametrize("index", [0, 2, 3, 5, 6])
@pytest.mark.parametrize("task_id", [2, 3])
def test_backward_mapping_follows_the_radial_profile(task_id, index):
    """On coordinate images the output at q is exactly the point it read (cubic convolution
    reproduces linear functions), so the mapping itself is checked: radial about c, r' against
    the formula with the ray-marched R, sink inwards (r' >= r), source outwards (r' <= r)."""
    shape = _shapes()[index]
    spatial_shape = tuple(n + 10 for n in shape.mask.shape)
    corner = (5,) * len(spatial_shape)
    image = _coordinate_image(spatial_shape)
    task = DeformationTask(task_id, max_push=5.0)
    params = task.draw(np.random.default_rng(index), image, None, shape, corner)
    assert 1 < params.exponent < 50
    low, high = push_bounds(params.mean_edge_distance, 5.0)
    assert low <= params.push <= high
    deformed = image.copy()
    assert task.apply(deformed, shape, corner, params) is shape.mask
    centre = params.centre + np.asarray(corner)
    voxels = np.argwhere(shape.mask) + np.asarray(corner)
    read = deformed[(slice(None), *voxels.T)].T  # [N, D] the point each mask voxel read
    offset, moved = voxels - centre, read - centre
    r, r_read = np.linalg.norm(offset, axis=1), np.linalg.norm(moved, axis=1)
    away = r > 0
    # Radial: the read point lies on the ray from c through the voxel, on the same side.
    cosine = (offset[away] * moved[away]).sum(axis=1) / (r[away] * np.maximum(r_read[away], 1e-9))
    assert (cosine[r_read[away] > 1e-3] > 1 - 1e-4).all()
    if task_id == 2:
        assert (r_read >= r - 1e-3).all() and (r_read - r).mean() > 0.2
    else:
        assert (r_read <= r + 1e-3).all() and (r - r_read).mean() > 0.2
    rng = np.random.default_rng(0)
    f = params.exponent
    for k in rng.choice(np.flatnonzero(away), 25, replace=False):
        edge = _marched_edge(shape, params.centre.astype(np.float64), offset[k] / r[k])
        rho = min(r[k] / edge, 1.0)
        expected = edge * rho**f if task_id == 3 else edge - edge * (1 - rho) ** f
        assert r_read[k] == pytest.approx(expected, abs=2e-3)
    np.testing.assert_allclose(read[~away], centre[None].astype(np.float32), atol=1e-4)  # c stays


def test_sink_gathers_and_source_spreads_a_bright_ring():
    """Content moves towards the centre under a sink and away under a source: the mean distance
    of a ring's intensity from c shrinks or grows."""
    shape = make_shape("ellipse", [31, 31], np.eye(2))
    corner = (4, 4)
    grid = np.indices((39, 39)).astype(np.float64)
    centre = np.array([15, 15])
    distance = np.hypot(grid[0] - 19, grid[1] - 19)
    image = np.exp(-((distance - 7) ** 2) / 4)[None].astype(np.float32)
    params_for = {}
    for task_id in (2, 3):
        a = float(np.linalg.norm(np.argwhere(inner_edge(shape.mask)) - centre, axis=1).mean())
        push = 3.0
        params_for[task_id] = DeformationParams(centre, push, a, exponent(task_id, a, push))
    mean_radius = {}
    for task_id, params in params_for.items():
        deformed = image.copy()
        DeformationTask(task_id).apply(deformed, shape, corner, params)
        mean_radius[task_id] = float((deformed[0] * distance).sum() / deformed[0].sum())
    original = float((image[0] * distance).sum() / image[0].sum())
    assert mean_radius[2] < original - 0.5
    assert mean_radius[3] > original + 0.5


def test_inner_edge_and_the_mean_edge_distance_of_a_draw():
    shape = _shapes()[5]
    expected = shape.mask & ~scipy.ndimage.binary_erosion(shape.mask, border_value=0)
    np.testing.assert_array_equal(inner_edge(shape.mask), expected)
    params = DeformationTask(3).draw(
        np.random.default_rng(1), np.zeros((1, 30, 30, 30), np.float32), None, shape, (0, 0, 0)
    )
    assert shape.mask[tuple(params.centre)]
    edge = np.argwhere(expected)
    assert params.mean_edge_distance == pytest.approx(np.linalg.norm(edge - params.centre, axis=1).mean())


def test_centre_is_uniform_and_push_uniform_within_its_bounds():
    shape = make_shape("rectangle", [12, 10], np.eye(2))
    image = np.zeros((1, 20, 20), np.float32)
    task = DeformationTask(2, max_push=10.0)
    rng = np.random.default_rng(2)
    draws = [task.draw(rng, image, None, shape, (0, 0)) for _ in range(3000)]
    counts = np.zeros(shape.mask.shape)
    for params in draws:
        counts[tuple(params.centre)] += 1
    assert counts[~shape.mask].sum() == 0
    # 120 voxels, 25 draws each on average: every voxel drawn, none far off.
    assert counts[shape.mask].min() >= 8 and counts[shape.mask].max() <= 48
    fractions = []
    for params in draws:
        low, high = push_bounds(params.mean_edge_distance, 10.0)
        assert low <= params.push <= high
        fractions.append((params.push - low) / (high - low))
    assert abs(np.mean(fractions) - 0.5) < 0.02 and min(fractions) < 0.02 and max(fractions) > 0.98


def test_tiny_anomalies_take_the_largest_safe_push_or_none():
    image = np.random.default_rng(3).random((1, 12, 12)).astype(np.float32)
    task = DeformationTask(3)
    single = make_shape("rectangle", [1, 1], np.eye(2))
    assert single.mask.sum() == 1
    params = task.draw(np.random.default_rng(0), image, None, single, (4, 4))
    assert params.mean_edge_distance == 0 and params.exponent == 1.0
    unchanged = image.copy()
    task.apply(unchanged, single, (4, 4), params)
    np.testing.assert_array_equal(unchanged, image)
    small = make_shape("rectangle", [1, 2], np.eye(2))  # two voxels: A = 0.5
    params = task.draw(np.random.default_rng(0), image, None, small, (4, 4))
    low, high = push_bounds(params.mean_edge_distance, 5.0)
    assert low >= high and params.push == high and np.isfinite(params.exponent)


@pytest.mark.parametrize("task_id", [2, 3])
@pytest.mark.parametrize("spatial_shape", [(48, 40), (26, 30, 22)])
def test_changes_stay_inside_the_mask_and_apply_is_deterministic(task_id, spatial_shape):
    rng = np.random.default_rng(4)
    image = scipy.ndimage.gaussian_filter(rng.random((2, *spatial_shape)), (0, *[1.5] * len(spatial_shape)))
    image = image.astype(np.float32)
    task = DeformationTask(task_id, max_push=10.0 if len(spatial_shape) == 2 else 5.0)
    changed_any = 0
    for seed in range(6):
        generator = np.random.default_rng(seed)
        shape = draw_shape(generator, spatial_shape)
        corner = tuple(int(generator.integers(0, s - n + 1)) for s, n in zip(spatial_shape, shape.mask.shape))
        state = generator.bit_generator.state
        params = task.draw(generator, image, None, shape, corner)
        generator.bit_generator.state = state
        again = task.draw(generator, image, None, shape, corner)
        assert (again.centre == params.centre).all() and again.push == params.push
        first, second = image.copy(), image.copy()
        task.apply(first, shape, corner, params)
        task.apply(second, shape, corner, again)
        np.testing.assert_array_equal(first, second)
        allowed = np.zeros(spatial_shape, bool)
        allowed[tuple(slice(c, c + n) for c, n in zip(corner, shape.mask.shape))] = shape.mask
        changed = (first != image).any(axis=0)
        assert not changed[~allowed].any()
        changed_any += bool(changed.any())
        assert np.isfinite(first).all()
    assert changed_any >= 5


def test_deformation_tasks_through_make_task():
    image = scipy.ndimage.gaussian_filter(np.random.default_rng(5).random((1, 40, 36)), (0, 2, 2)).astype(np.float32)
    foreground = np.zeros((40, 36), bool)
    foreground[4:36, 3:33] = True
    for name, task_id in (("sink", 2), ("source", 3)):
        task = registry.make_task(name, max_push=10.0)
        assert task.task_id == task_id and task.name == name and task.task.max_push == 10.0
        assert registry.make_task(task_id).task.max_push == 5.0
        anomalous, label = task(image, foreground, np.random.default_rng(6))
        again, label_again = task(image, foreground, np.random.default_rng(6))
        np.testing.assert_array_equal(anomalous, again)
        np.testing.assert_array_equal(label, label_again)
        changed = (anomalous != image).any(axis=0)
        assert changed.any() and (label[changed] > 0).all() and label.max() <= 1


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="deformation tasks are 2 \\(sink\\) and 3 \\(source\\), got 4"):
        DeformationTask(4)
    with pytest.raises(ValueError, match="max_push must exceed 0.5 voxels"):
        DeformationTask(2, max_push=0.2)


@pytest.mark.parametrize("task_id", [2, 3])
def test_boxes_at_the_image_border_read_as_the_whole_image_would(task_id):
    """The box (+2 voxels) read near the border repeats the edge voxel as cubic_sample does on the
    whole image: the same anomaly in an edge-padded copy gives the same values."""
    rng = np.random.default_rng(7)
    image = rng.random((1, 30, 26)).astype(np.float32)
    shape = make_shape("ellipse", [19, 15], givens_rotation([0.5], 2))
    task = DeformationTask(task_id, max_push=10.0)
    for corner in [(0, 0), tuple(s - n for s, n in zip(image.shape[1:], shape.mask.shape))]:
        params = task.draw(np.random.default_rng(1), image, None, shape, corner)
        small = image.copy()
        task.apply(small, shape, corner, params)
        padded = np.pad(image, ((0, 0), (4, 4), (4, 4)), mode="edge")
        task.apply(padded, shape, tuple(c + 4 for c in corner), params)
        np.testing.assert_allclose(padded[:, 4:-4, 4:-4], small, atol=2e-6)  # float32 coordinate rounding
        assert not np.array_equal(small, image)
