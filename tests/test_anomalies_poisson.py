"""The D-dimensional Poisson blend reproduces solutions known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage

from lightwork.anomalies.poisson import poisson_blend


def _box(corner, shape):
    return (slice(None), *(slice(c, c + n) for c, n in zip(corner, shape)))


def _laplacian(values: np.ndarray) -> np.ndarray:
    """Discrete Laplacian of [C, *N] on its interior, float64."""
    spatial = values.ndim - 1
    values = values.astype(np.float64)
    centre = (slice(None), *([slice(1, -1)] * spatial))
    result = -2.0 * spatial * values[centre]
    for axis in range(spatial):
        for shifted in (slice(2, None), slice(0, -2)):
            index = [slice(1, -1)] * spatial
            index[axis] = shifted
            result += values[(slice(None), *index)]
    return result


def _guidance_divergence(target_box, source, mask, mix):
    """Backward-difference divergence of the guidance field on the box interior, float64."""
    spatial = mask.ndim
    target_box, source = target_box.astype(np.float64), source.astype(np.float64)
    divergence = np.zeros((target_box.shape[0], *(n - 2 for n in mask.shape)))
    for axis in range(spatial):
        target_step = np.diff(target_box, axis=axis + 1)
        source_step = np.diff(source, axis=axis + 1)
        rows = [slice(None)] * spatial
        rows[axis] = slice(0, -1)
        inside = mask[tuple(rows)][None]
        chosen = inside & (np.abs(source_step) > np.abs(target_step)) if mix else inside
        guidance = np.where(chosen, source_step, target_step)
        later = [slice(1, -1)] * spatial
        earlier = [slice(1, -1)] * spatial
        later[axis], earlier[axis] = slice(1, None), slice(0, -1)
        divergence += guidance[(slice(None), *later)] - guidance[(slice(None), *earlier)]
    return divergence


@pytest.mark.parametrize("spatial", [1, 2, 3, 4])
@pytest.mark.parametrize("mix", [True, False])
def test_laplacian_of_result_equals_guidance_divergence_and_shell_is_kept(spatial, mix):
    rng = np.random.default_rng(spatial)
    image_shape = (2, *([11] * spatial))
    patch_shape = tuple(int(n) for n in rng.integers(5, 9, size=spatial))
    corner = tuple(int(c) for c in rng.integers(0, 3, size=spatial))
    target = rng.random(image_shape, dtype=np.float32)
    source = rng.random((2, *patch_shape), dtype=np.float32) * 3
    mask = rng.random(patch_shape) > 0.3

    blended = poisson_blend(target, source, mask, corner, mix_gradients=mix)

    box = _box(corner, patch_shape)
    residual = _laplacian(blended[box]) - _guidance_divergence(target[box], source, mask, mix)
    assert np.abs(residual).max() < 1e-4
    outside_interior = np.ones(image_shape[1:], bool)
    outside_interior[tuple(slice(c + 1, c + n - 1) for c, n in zip(corner, patch_shape))] = False
    np.testing.assert_array_equal(blended[:, outside_interior], target[:, outside_interior])
    assert blended.dtype == np.float32
    assert not np.array_equal(blended, target)


def test_source_equal_to_target_changes_nothing():
    rng = np.random.default_rng(0)
    target = rng.random((3, 20, 24), dtype=np.float32)
    box = _box((4, 5), (12, 15))
    for mix in (True, False):
        blended = poisson_blend(target, target[box].copy(), np.ones((12, 15), bool), (4, 5), mix_gradients=mix)
        np.testing.assert_array_equal(blended, target)


@pytest.mark.parametrize("spatial", [2, 3])
def test_shell_offset_by_a_harmonic_function_moves_the_interior_by_that_function(spatial):
    """With source gradients everywhere, the solution is the source plus the harmonic extension of
    (target - source) on the shell. If that difference is the discrete-harmonic h = a x0^2 - a x1^2
    + b . x + c, the interior equals source + h exactly, whatever the target's interior holds."""
    rng = np.random.default_rng(7)
    patch_shape = (9, 10, 8)[:spatial]
    corner = (3, 2, 4)[:spatial]
    grids = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in patch_shape), indexing="ij")
    harmonic = 0.01 * grids[0] ** 2 - 0.01 * grids[1] ** 2 + 0.03 * grids[-1] - 0.02 * grids[0] + 0.5
    source = rng.random((1, *patch_shape), dtype=np.float32)
    target = rng.random((1, *(n + 8 for n in patch_shape)), dtype=np.float32)
    box = _box(corner, patch_shape)
    target[box] = (source + harmonic).astype(np.float32)
    interior = (slice(None), *([slice(1, -1)] * spatial))
    target[box][interior] = rng.random(target[box][interior].shape, dtype=np.float32)  # ignored

    blended = poisson_blend(target, source, np.ones(patch_shape, bool), corner, mix_gradients=False)

    np.testing.assert_allclose(blended[box][interior], (source + harmonic)[interior], atol=2e-5)


def test_2d_solve_equals_3d_solve_of_a_volume_constant_along_the_third_axis():
    """The 2D problem, replicated along a third axis, has the replicated 2D solution as its 3D
    solution exactly when the third axis adds nothing: its guidance components vanish (source
    gradients over the whole box, the source constant along the axis) and the two boundary slices
    of the box along it hold the 2D solution itself."""
    rng = np.random.default_rng(3)
    target2 = rng.random((2, 16, 18), dtype=np.float32)
    source2 = rng.random((2, 10, 11), dtype=np.float32)
    mask2 = np.ones((10, 11), bool)
    solution2 = poisson_blend(target2, source2, mask2, (3, 4), mix_gradients=False)

    depth = 7
    target3 = np.repeat(target2[..., None], depth + 4, axis=-1)
    target3[..., 2] = solution2
    target3[..., 2 + depth - 1] = solution2
    source3 = np.repeat(source2[..., None], depth, axis=-1)
    solution3 = poisson_blend(target3, source3, np.ones((10, 11, depth), bool), (3, 4, 2), mix_gradients=False)

    for z in range(2, 2 + depth):
        np.testing.assert_allclose(solution3[..., z], solution2, atol=2e-5)


def test_box_thinner_than_three_voxels_returns_the_target():
    target = np.random.default_rng(1).random((1, 8, 8), dtype=np.float32)
    source = np.zeros((1, 2, 5), np.float32)
    np.testing.assert_array_equal(poisson_blend(target, source, np.ones((2, 5), bool), (1, 1)), target)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t, s, m, c: (t.astype(np.float64), s, m, c), "target must be a float32"),
        (lambda t, s, m, c: (t, s.astype(np.int16), m, c), "source_patch must be a float32"),
        (lambda t, s, m, c: (t, s, m.astype(np.uint8), c), "patch_mask must be a bool"),
        (lambda t, s, m, c: (t, s[:1], m, c), "must be \\[C, \\*P\\]"),
        (lambda t, s, m, c: (t, s, m[:, :3], c), "patch_mask shape"),
        (lambda t, s, m, c: (t, s, m, (1,)), "must have 2 entries"),
        (lambda t, s, m, c: (t, s, m, (12, 0)), "outside the image"),
        (lambda t, s, m, c: (t, s, m, (0, -1)), "outside the image"),
        (lambda t, s, m, c: (t, np.full_like(s, np.nan), m, c), "NaN or Inf"),
        (lambda t, s, m, c: (t[0], s, m, c), "must be \\[C, \\*P\\]"),
    ],
)
def test_bad_inputs_raise_clear_errors(change, message):
    target = np.zeros((2, 16, 16), np.float32)
    source = np.zeros((2, 5, 5), np.float32)
    mask = np.ones((5, 5), bool)
    with pytest.raises(ValueError, match=message):
        poisson_blend(*change(target, source, mask, (2, 2)))


def _scipy_dst_solution(target, source, mask, corner, mix):
    """Method.md's solve written with scipy.fft: F = DST-I(rhs) / sum_d (2 cos(pi (k_d + 1) /
    (N_d - 1)) - 2), interior = IDST-I(F), in float64 (the reference the matrix DST is held to)."""
    box = _box(corner, mask.shape)
    target_box = target[box].astype(np.float64)
    spatial = mask.ndim
    centre = (slice(None), *([slice(1, -1)] * spatial))
    shell = target_box.copy()
    shell[centre] = 0
    rhs = _guidance_divergence(target[box], source, mask, mix) - _laplacian(shell)  # the shell's share moved over
    eigenvalues = sum(
        (2 * np.cos(np.pi * (np.arange(n - 2) + 1) / (n - 1)) - 2).reshape(
            [-1 if d == axis else 1 for d in range(spatial)]
        )
        for axis, n in enumerate(mask.shape)
    )
    axes = tuple(range(1, spatial + 1))
    interior = scipy.fft.idstn(scipy.fft.dstn(rhs, type=1, axes=axes) / eigenvalues, type=1, axes=axes)
    solution = target.astype(np.float64)
    solution[box][centre] = interior
    return solution


@pytest.mark.parametrize(
    "patch_shape", [(205, 37), (103, 89), (57, 50), (3, 60), (31, 29, 23)], ids=lambda shape: "x".join(map(str, shape))
)
def test_matrix_dst_solve_equals_the_fft_solve_of_the_method(patch_shape):
    """The DST-I as a product with a float32 sine matrix per axis (fast for every box length, also
    where 2 (N + 1) has a large prime factor) against scipy's FFT-based DST in float64: the same
    solution within 2e-5 on images in [0, 1], the largest 2D box (0.8 x 256) included; and the
    solution's Laplacian still matches the guidance divergence inside the box."""
    rng = np.random.default_rng(len(patch_shape) * 1000 + patch_shape[0])
    image_shape = (1, *(n + 6 for n in patch_shape))
    corner = (3,) * len(patch_shape)
    target = scipy.ndimage.gaussian_filter(rng.random(image_shape), (0, *[2.0] * len(patch_shape))).astype(np.float32)
    source = rng.random((1, *patch_shape), dtype=np.float32)
    grids = np.meshgrid(*(np.linspace(-1, 1, n) for n in patch_shape), indexing="ij")
    mask = sum(grid**2 for grid in grids) < 0.8
    for mix in (True, False):
        blended = poisson_blend(target, source, mask, corner, mix_gradients=mix)
        expected = _scipy_dst_solution(target, source, mask, corner, mix)
        np.testing.assert_allclose(blended, expected, rtol=0, atol=2e-5)
        box = _box(corner, patch_shape)
        residual = _laplacian(blended[box]) - _guidance_divergence(target[box], source, mask, mix)
        assert np.abs(residual).max() < 1e-4
