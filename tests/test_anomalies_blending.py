"""Source patches and the Poisson blending tasks (0 intra_blend, 1 inter_blend)."""

from __future__ import annotations

import numpy as np
import pytest

from lightwork.anomalies.blending import (
    PoissonBlendTask,
    SourcePool,
    apply_blend,
    channel_range,
    draw_blend,
    gradient_scale,
    make_source,
)
from lightwork.anomalies.patch import (
    MAX_REGION_FRACTION,
    SourcePatch,
    cubic_sample,
    draw_source_patch,
    extract_source_patch,
)
from lightwork.anomalies.registry import make_task
from lightwork.anomalies.shapes import AnomalyShape
from lightwork.demo import smooth_noise


def test_cubic_sample_is_exact_on_the_grid_and_for_quadratics():
    rng = np.random.default_rng(0)
    image = rng.random((2, 9, 10, 8), dtype=np.float32)
    grid = np.stack(np.meshgrid(np.arange(2, 7), np.arange(3, 8), np.arange(1, 6), indexing="ij")).reshape(3, -1)
    np.testing.assert_array_equal(cubic_sample(image, grid.astype(np.float64)), image[:, grid[0], grid[1], grid[2]])

    axes = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in (12, 11)), indexing="ij")
    quadratic = (0.02 * axes[0] ** 2 - 0.03 * axes[0] * axes[1] + 0.1 * axes[1] + 1)[None].astype(np.float32)
    points = rng.uniform(2, 8, size=(2, 50))
    expected = 0.02 * points[0] ** 2 - 0.03 * points[0] * points[1] + 0.1 * points[1] + 1
    np.testing.assert_allclose(cubic_sample(quadratic, points)[0], expected, atol=1e-5)


def test_identity_patch_is_the_crop_and_rotation_by_a_quarter_turn_permutes_it():
    rng = np.random.default_rng(1)
    source = rng.random((1, 20, 22), dtype=np.float32)
    crop = extract_source_patch(source, SourcePatch(np.eye(2), 1.0, (10, 11)), (7, 9))
    np.testing.assert_array_equal(crop, source[:, 7:14, 7:16])
    quarter = np.array([[0.0, -1.0], [1.0, 0.0]])
    # src = centre + R o maps patch (i, j) to source (13 - j, 8 + i).
    turned = extract_source_patch(source, SourcePatch(quarter, 1.0, (10, 11)), (7, 7))
    np.testing.assert_allclose(turned[0], source[0, 7:14, 8:15][::-1].T, atol=1e-6)


def test_extract_clips_to_the_source_range_and_samples_only_where_asked():
    source = np.zeros((1, 16, 16), np.float32)
    source[0, 8:, :] = 1.0  # a step: cubic convolution overshoots it
    patch = SourcePatch(np.eye(2), 0.7, (8, 8))
    values = extract_source_patch(source, patch, (9, 9))
    assert values.min() >= 0.0 and values.max() <= 1.0
    where = np.zeros((9, 9), bool)
    where[2:5, 3:6] = True
    partial = extract_source_patch(source, patch, (9, 9), where=where)
    np.testing.assert_array_equal(partial[:, where], values[:, where])
    assert (partial[:, ~where] == 0.0).all()


def test_draw_source_patch_distribution_fit_and_foreground():
    rng = np.random.default_rng(2)
    foreground = np.zeros((40, 50, 30), bool)
    foreground[12:30, 10:40, 8:22] = True
    scales = []
    for _ in range(300):
        patch = draw_source_patch(rng, (12, 15, 9), (40, 50, 30), foreground)
        assert foreground[patch.centre]
        np.testing.assert_allclose(patch.rotation @ patch.rotation.T, np.eye(3), atol=1e-12)
        half = patch.scale * np.abs(patch.rotation) @ ((np.array([12, 15, 9]) - 1) / 2)
        assert (2 * half <= MAX_REGION_FRACTION * (np.array([40, 50, 30]) - 1) + 1e-9).all()
        assert (np.array(patch.centre) - half >= -1e-9).all()
        assert (np.array(patch.centre) + half <= np.array([39, 49, 29]) + 1e-9).all()
        scales.append(patch.scale)
    scales = np.array(scales)
    # s = 1 + Exponential(0.1) or its inverse, 50/50 (no cap hits at this size).
    assert 0.4 < np.mean(scales > 1) < 0.6
    assert abs(np.median(np.log(scales[scales > 1])) - np.log1p(0.1 * np.log(2))) < 0.03


def test_draw_source_patch_caps_the_scale_on_a_small_source_and_fails_clearly_without_room():
    rng = np.random.default_rng(3)
    for _ in range(50):
        patch = draw_source_patch(rng, (30, 30), (20, 20))
        half = patch.scale * np.abs(patch.rotation) @ np.array([14.5, 14.5])
        assert (2 * half <= MAX_REGION_FRACTION * 19 + 1e-9).all()
    corner_only = np.zeros((40, 40), bool)
    corner_only[:2, :2] = True
    with pytest.raises(ValueError, match="no voxel that can centre a patch"):
        draw_source_patch(rng, (10, 10), (40, 40), corner_only)


def test_source_pool_checks_sources_and_falls_back_to_the_input():
    with pytest.raises(ValueError, match=r"sources\[1\]: a source must be a \[C, \*S\] float32"):
        SourcePool([np.zeros((1, 8, 8), np.float32), np.zeros((1, 8, 8), np.float64)])
    with pytest.raises(ValueError, match=r"sources\[0\]: source foreground is empty"):
        SourcePool([(np.zeros((1, 8, 8), np.float32), np.zeros((8, 8), bool))])
    with pytest.raises(ValueError, match="non-empty sequence"):
        SourcePool([])
    own = make_source(np.ones((1, 8, 8), np.float32), "input")
    assert SourcePool(None).draw(np.random.default_rng(0), own) is own


def test_apply_blend_changes_only_the_box_interior_and_reports_the_changed_voxels():
    rng = np.random.default_rng(4)
    target = rng.random((2, 30, 32), dtype=np.float32) * 0.2
    source_image = np.ones((2, 40, 40), np.float32)
    source_image[:, ::2, :] = 0.0  # strong stripes: their gradients win inside the mask
    pool = SourcePool([source_image])
    mask = np.zeros((11, 13), bool)
    mask[3:8, 4:10] = True
    params = draw_blend(rng, pool, make_source(target, "input"), mask.shape)
    blended = target.copy()
    changed = apply_blend(blended, mask, (5, 6), params)

    difference = np.abs(blended - target).mean(axis=0)
    anomaly = np.zeros(target.shape[1:], bool)
    anomaly[5:16, 6:19] = changed | mask
    anomaly[[5, 15], :] = anomaly[:, [6, 18]] = False  # the box shell keeps the target
    assert (difference[~anomaly] == 0).all()
    np.testing.assert_array_equal(changed, difference[5:16, 6:19] > 1e-3)
    assert changed[mask].mean() > 0.5
    low, high = channel_range(target)
    assert (blended.min(axis=(1, 2)) >= low).all() and (blended.max(axis=(1, 2)) <= high).all()


def _ellipse_mask(shape):
    axes = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    return sum(axis**2 for axis in axes) < 1


def _assert_blend_is_local(before, after, mask, corner, changed):
    anomaly = np.zeros(before.shape[1:], bool)
    anomaly[tuple(slice(c, c + n) for c, n in zip(corner, mask.shape))] = mask | changed
    difference = np.abs(after - before).mean(axis=0)
    assert (difference[~anomaly] == 0).all()
    assert changed.sum() > 0.3 * mask.sum()
    low, high = channel_range(before)
    flat = after.reshape(len(after), -1)
    assert (flat.min(axis=1) >= low).all() and (flat.max(axis=1) <= high).all()


def test_blend_real_brain_volume_from_itself_and_chest_xray_from_a_brain_slice(real_data):
    import nibabel
    from PIL import Image

    folder = real_data("brain", "healthy_ixi_t1")
    volume_path = sorted(folder.glob("*.nii.gz"))[0]
    volume = nibabel.load(volume_path).get_fdata(dtype=np.float32)
    volume = (volume / np.percentile(volume, 99.5))[None].astype(np.float32)
    parcellation = folder / "parcellation" / volume_path.name.replace(".nii.gz", "_DLMUSE.nii.gz")
    brain = nibabel.load(parcellation).get_fdata() > 0
    rng = np.random.default_rng(5)
    mask, corner = _ellipse_mask((24, 28, 20)), (48, 46, 35)
    params = draw_blend(rng, SourcePool(None), make_source((volume, brain), "volume"), mask.shape)
    assert brain[params.patch.centre]
    blended = volume.copy()
    changed = apply_blend(blended, mask, corner, params)
    _assert_blend_is_local(volume, blended, mask, corner, changed)

    xray_path = sorted(real_data("cxr_kermany", "train", "NORMAL").glob("*.jpeg"))[0]
    xray_rgb = np.asarray(Image.open(xray_path).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
    xray = xray_rgb.mean(axis=0, keepdims=True)
    brain_slice = (volume[:, :, :, 45], brain[:, :, 45])
    mask, corner = _ellipse_mask((40, 36)), (90, 100)
    for sources in ([brain_slice], [xray_rgb]):  # a 1-channel external source, a colour one averaged
        params = draw_blend(rng, SourcePool(sources), make_source(xray, "xray"), mask.shape)
        blended = xray.copy()
        changed = apply_blend(blended, mask, corner, params)
        _assert_blend_is_local(xray, blended, mask, corner, changed)


def test_inter_blend_requires_sources_and_tasks_are_deterministic():
    with pytest.raises(ValueError, match="inter_blend needs sources"):
        PoissonBlendTask(1)
    rng = np.random.default_rng(6)
    image = rng.random((1, 40, 44), dtype=np.float32)
    mask = _ellipse_mask((15, 17))
    shape = AnomalyShape("ellipse", np.array([15.0, 17.0]), np.eye(2), np.array([7.0, 8.0]), mask)
    results = []
    external = PoissonBlendTask(1, sources=lambda generator: generator.random((1, 30, 30), dtype=np.float32))
    for task in (PoissonBlendTask(0), PoissonBlendTask(0), external):
        out = image.copy()
        generator = np.random.default_rng(11)
        anomaly = task.apply(out, shape, (10, 12), task.draw(generator, image, None, shape, (10, 12)))
        assert (anomaly >= mask).all()
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], results[2])


def test_matching_the_gradient_scale_makes_a_source_on_another_scale_visible():
    """A source a twentieth of the target's contrast leaves the mixed-gradient blend almost unchanged;
    given the target's gradient scale (inter_blend's default) it changes it as a same-scale one does."""
    rng = np.random.default_rng(5)
    target = smooth_noise(rng, (48, 48), 1.0)[None].astype(np.float32)
    target = (target - target.mean()) / target.std()
    sources = [(smooth_noise(rng, (48, 48), 1.0)[None] / 20).astype(np.float32) for _ in range(3)]
    same_scale = [source * 20 for source in sources]

    def mass(task) -> float:
        return float(np.mean([task(target, None, np.random.default_rng(draw))[1].mean() for draw in range(60)]))

    faint = mass(make_task(1, sources=sources, match_gradient_scale=False))
    matched = mass(make_task(1, sources=sources))
    reference = mass(make_task(1, sources=same_scale, match_gradient_scale=False))
    assert faint < 0.1 * reference, (faint, reference)
    assert 0.5 * reference <= matched <= 2.0 * reference, (matched, reference)


def test_gradient_scale_is_the_mean_forward_difference_over_the_foreground():
    image = np.zeros((1, 4, 5), np.float32)
    image[0, :, 3:] = 2.0  # one step of 2 between columns 2 and 3
    foreground = np.ones((4, 5), bool)
    # axis 0: all 15 pairs unchanged; axis 1: 4 of 16 pairs step by 2 -> (0 + 0.5) / 2
    assert gradient_scale(image, foreground) == pytest.approx(0.25)
    foreground[:, 3:] = False  # the step's pairs leave the foreground
    assert gradient_scale(image, foreground) == pytest.approx(0.0)
    assert gradient_scale(image, None) == pytest.approx(0.25)
