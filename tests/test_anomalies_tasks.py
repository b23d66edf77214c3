"""The five synthetic anomaly tasks through the one interface: locality of the change, labels,
placement on the foreground, repetition, determinism, bad input, real images."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage

from lightwork.anomalies import TASK_NAMES, SyntheticTask, make_task, soft_label
from lightwork.anomalies.base import channel_range
from lightwork.anomalies.intensity import (
    ENVELOPE_REACH,
    IntensityParams,
    IntensityTask,
    bounded_squared_distance,
    ramp_weights,
)
from lightwork.anomalies.shapes import draw_shape, make_shape, place_shape

DEFORMATION = ("sink", "source")


def _phantom(seed: int, shape: tuple[int, ...], channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed noise in [0, 1] ([C, *S] float32) and an ellipsoidal foreground ([*S] bool)."""
    rng = np.random.default_rng(seed)
    noise = scipy.ndimage.gaussian_filter(rng.random((channels, *shape)), (0, *([2.0] * len(shape))))
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    axes = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    return noise.astype(np.float32), sum(axis**2 for axis in axes) < 0.8


def _task(name: str, dims: int) -> SyntheticTask:
    if name in DEFORMATION or name == "intensity":
        return make_task(name)
    shape = (40, 44) if dims == 2 else (22, 26, 20)
    sources = [_phantom(100 + index, shape) for index in range(2)]
    return make_task(name, sources=sources)


def _replay(task: SyntheticTask, image, foreground, seed):
    """The documented per-call draw order (shape, corner, task draw, task apply, stop coin), run
    through the task's halves; returns the anomalous image and the (corner, shape, box mask) list."""
    rng = np.random.default_rng(seed)
    anomalous = image.copy()
    anomalies = []
    while True:
        shape = draw_shape(rng, image.shape[1:])
        corner = place_shape(rng, shape, foreground, image.shape[1:])
        params = task.task.draw(rng, anomalous, foreground, shape, corner, channel_range(image))
        anomalies.append((corner, shape, task.task.apply(anomalous, shape, corner, params)))
        if len(anomalies) == 4 or rng.random() < 0.5:
            return anomalous, anomalies


def _check_sample(image, foreground, anomalous, label, anomalies):
    """The task contract on one sample; returns whether the image changed at all."""
    assert anomalous.dtype == np.float32 and anomalous.shape == image.shape
    assert label.dtype == np.float32 and label.shape == image.shape[1:]
    assert label.min() >= 0 and label.max() <= 1
    boxes = np.zeros(image.shape[1:], bool)  # the anomalies' axis-aligned boxes
    union = np.zeros(image.shape[1:], bool)  # the anomalies' voxels as the tasks report them
    for corner, shape, box_mask in anomalies:
        region = tuple(slice(c, c + n) for c, n in zip(corner, shape.mask.shape))
        boxes[region] = True
        union[region] |= box_mask
        assert (box_mask >= shape.mask).all()
        if foreground is not None:
            assert np.count_nonzero(foreground[region] & shape.mask) >= 0.5 * np.count_nonzero(shape.mask)
    changed = (anomalous != image).any(axis=0)
    # The image changes only on the reported anomaly voxels, and every change is labelled; the
    # label may reach further (closing and hole filling) but never beyond the anomalies' boxes.
    assert not changed[~union].any()
    assert (label[changed] > 0).all()
    assert not label[~boxes].any()
    np.testing.assert_array_equal(label, soft_label(anomalous, image, union))
    return bool(changed.any())


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_changes_only_labelled_voxels_on_the_foreground(name, dims):
    task = _task(name, dims)
    assert task.name == name and task.task_id == TASK_NAMES.index(name)
    spatial = (40, 44) if dims == 2 else (22, 26, 20)
    image, foreground = _phantom(dims, spatial, channels=2 if dims == 2 else 1)
    changed = 0
    for seed in range(8):
        for mask in (foreground, None):
            anomalous, label = task(image, mask, np.random.default_rng(seed))
            replayed, anomalies = _replay(task, image, mask, seed)
            np.testing.assert_array_equal(anomalous, replayed)
            changed += _check_sample(image, mask, anomalous, label, anomalies)
    assert changed >= 14  # of 16 samples


@pytest.mark.parametrize("name", TASK_NAMES)
def test_same_seed_is_bit_identical_and_other_seeds_differ(name):
    task = _task(name, 2)
    image, foreground = _phantom(7, (40, 44))
    first = task(image, foreground, np.random.default_rng(3))
    again = _task(name, 2)(image, foreground, np.random.default_rng(3))
    other = task(image, foreground, np.random.default_rng(4))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(image, first[0])  # the input itself is never modified
    np.testing.assert_array_equal(image, _phantom(7, (40, 44))[0])


def test_intra_blend_without_sources_reads_the_input_itself():
    image, foreground = _phantom(8, (40, 44))
    task = make_task(0)
    for seed in range(4):
        anomalous, label = task(image, foreground, np.random.default_rng(seed))
        _check_sample(image, foreground, anomalous, label, _replay(task, image, foreground, seed)[1])


def test_one_to_four_anomalies_stopping_with_probability_one_half():
    task = make_task("intensity")
    image, _ = _phantom(9, (24, 24))
    counts = np.bincount([len(_replay(task, image, None, seed)[1]) for seed in range(800)], minlength=5)
    assert counts[0] == 0 and counts.sum() == 800
    # Expected 400 / 200 / 100 / 100; the bands are about 4 standard deviations.
    assert 345 < counts[1] < 455 and 150 < counts[2] < 250 and 65 < counts[3] < 135 and 65 < counts[4] < 135


class _RangeRecorder:
    """A task that records the clip range each draw gets and pushes its box far above the input."""

    task_id, name = 4, "range-recorder"

    def __init__(self):
        self.ranges = []

    def draw(self, rng, image, foreground, shape, corner, image_range=None):
        self.ranges.append(image_range)

    def apply(self, image, shape, corner, params):
        image[(slice(None), *(slice(c, c + n) for c, n in zip(corner, shape.mask.shape)))] += 10.0
        return shape.mask


def test_every_anomaly_of_a_sample_is_clipped_to_the_input_range():
    """The range comes from the input image, once per call, not from the sample changed so far."""
    image, _ = _phantom(3, (40, 44), channels=2)
    recorder = _RangeRecorder()
    calls = [SyntheticTask(recorder)(image, None, np.random.default_rng(seed)) for seed in range(8)]
    assert len(recorder.ranges) > len(calls)  # some calls drew several anomalies
    low, high = image.reshape(2, -1).min(axis=1), image.reshape(2, -1).max(axis=1)
    for drawn_low, drawn_high in recorder.ranges:
        np.testing.assert_array_equal(drawn_low, low)
        np.testing.assert_array_equal(drawn_high, high)


def test_intensity_change_has_the_drawn_sign_and_magnitude_with_an_edge_ramp():
    image = np.full((2, 40, 40), 0.5, np.float32)
    image[:, 0, 0], image[:, -1, -1] = 0.0, 1.0  # the range each channel is clipped to
    shape = make_shape("ellipse", [15, 21], np.eye(2))
    corner = (10, 8)
    task = IntensityTask()
    params = IntensityParams(np.array([0.3, -0.8], np.float32), 0.1, np.zeros(2, np.float32), np.ones(2, np.float32))
    anomalous = image.copy()
    returned = task.apply(anomalous, shape, corner, params)
    np.testing.assert_array_equal(returned, shape.mask)
    region = (slice(None), slice(10, 25), slice(8, 29))
    distance = scipy.ndimage.distance_transform_edt(np.pad(shape.mask, 1))[1:-1, 1:-1]
    weight = np.minimum(distance / min(40 * 0.1, distance.max()), 1)
    expected = np.clip(0.5 + np.array([0.3, -0.8])[:, None, None] * weight, 0, 1)
    np.testing.assert_allclose(anomalous[region], expected, atol=1e-6)
    first, second = anomalous[0][region[1:]][shape.mask], anomalous[1][region[1:]][shape.mask]
    assert first.min() > 0.5 and first.max() == pytest.approx(0.8)  # the full +0.3 away from the edge
    assert second.max() < 0.5 and second.min() == 0.0  # -0.8 clipped at the image's minimum
    outside = np.ones((40, 40), bool)
    outside[region[1:]] = ~shape.mask
    np.testing.assert_array_equal(anomalous[:, outside], image[:, outside])

    rng = np.random.default_rng(10)
    draws = [task.draw(rng, image, None, shape, corner) for _ in range(3000)]
    deltas = np.concatenate([p.delta for p in draws])
    # |delta| = 0.1 + Gamma(3, 0.2): mean 0.7, sd 0.35 (standard error 0.004 over 6000 values).
    assert abs(np.abs(deltas).mean() - 0.7) < 0.02 and np.abs(deltas).min() >= 0.1
    assert 0.47 < np.mean(deltas > 0) < 0.53
    # d_s / min(S) = 0.02 + Gamma(3, 0.01): mean 0.05, sd 0.017 (standard error 0.0003).
    assert abs(np.mean([p.ramp_fraction for p in draws]) - 0.05) < 0.002
    np.testing.assert_array_equal(draws[0].low, [0, 0])
    np.testing.assert_array_equal(draws[0].high, [1, 1])


def test_ramp_distance_is_the_exact_edt_up_to_its_reach():
    rng = np.random.default_rng(13)
    for index in range(60):
        mask = draw_shape(rng, (80, 112, 80) if index % 2 else (256, 256)).mask
        edt = scipy.ndimage.distance_transform_edt(np.pad(mask, 1))[(slice(1, -1),) * mask.ndim]
        reach = int(rng.integers(1, 15))  # both kinds of passes (ENVELOPE_REACH = 5)
        squared = bounded_squared_distance(mask, reach)
        near = edt <= reach
        np.testing.assert_array_equal(squared[near], (edt[near] ** 2).astype(np.float32))
        assert (squared[~near] > reach**2).all()
        if reach > ENVELOPE_REACH:
            np.testing.assert_array_equal(squared, (edt**2).astype(np.float32))  # the envelope is exact everywhere
        width = rng.uniform(0.5, 14)
        expected = np.minimum(edt / min(width, edt.max()), 1)
        np.testing.assert_allclose(ramp_weights(mask, width), expected, atol=1e-6)


def test_warm_up_loads_every_compiled_kernel():
    """In a fresh process no kernel is loaded; after warm_up every one is (so a synthesis process's
    first batch does not pay for them)."""
    code = """
from lightwork.anomalies.registry import warm_up
from lightwork.anomalies import intensity, label, patch
kernels = [label._label_region, patch._cubic_sample, intensity._first_axis_squared,
           intensity._min_plus_passes, intensity._lower_envelope_passes]
assert all(not kernel.signatures for kernel in kernels)
warm_up()
assert all(kernel.signatures for kernel in kernels), [kernel.__name__ for kernel in kernels if not kernel.signatures]
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_registry_by_id_and_name_and_its_errors():
    assert TASK_NAMES == ("intra_blend", "inter_blend", "sink", "source", "intensity")
    assert make_task(4).name == make_task("intensity").name == "intensity"
    assert make_task(np.int64(0)).task_id == 0
    with pytest.raises(ValueError, match=r"unknown anomaly task 'nope'; known tasks: 0 intra_blend, 1 inter_blend"):
        make_task("nope")
    with pytest.raises(ValueError, match="unknown anomaly task 7"):
        make_task(7)
    with pytest.raises(ValueError, match=r"task 'intensity' does not take the parameters \['max_push'\]"):
        make_task("intensity", max_push=3.0)
    with pytest.raises(ValueError, match="inter_blend needs sources"):
        make_task("inter_blend")


def test_bad_input_is_a_clear_error():
    task = make_task("intensity")
    rng = np.random.default_rng(0)
    image, foreground = _phantom(11, (32, 30))
    cases = [
        ((image.astype(np.float64), None, rng), "image must be float32, got float64"),
        ((image[0, 0], None, rng), r"image must be \[C, \*S\]"),
        ((image.tolist(), None, rng), "must be a .* numpy array, got list"),
        ((np.where(foreground, np.nan, image).astype(np.float32), None, rng), "NaN or Inf"),
        ((np.where(foreground, np.inf, image).astype(np.float32), None, rng), "NaN or Inf"),
        ((image[:, :8], None, rng), r"every spatial axis needs >= 9 voxels"),
        ((image, foreground[:, :29], rng), r"foreground shape \(32, 29\) differs"),
        ((image, foreground.astype(np.uint8), rng), "foreground must be a bool numpy array"),
        ((image, np.zeros_like(foreground), rng), "foreground too small: the foreground mask is empty"),
        ((image, None, 42), "rng must be a numpy.random.Generator"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            task(*arguments)
    speck = np.zeros((64, 64), bool)
    speck[30:32, 30:32] = True  # 4 voxels; the smallest anomaly here has at least 4x4 of its sizes
    with pytest.raises(ValueError, match="foreground too small: no placement"):
        task(_phantom(12, (64, 64))[0], speck, rng)


@functools.lru_cache(maxsize=1)
def _real_images(ixi: Path, brats_flair: Path, kermany: Path):
    """(image, foreground, external source) for an IXI T1 volume (brain mask from its parcellation,
    BraTS FLAIR as the external dataset) and a Kermany chest X-ray (a brain slice as external)."""
    import nibabel
    from PIL import Image

    path = sorted(ixi.glob("*.nii.gz"))[0]
    volume = nibabel.load(path).get_fdata(dtype=np.float32)
    volume = (volume / np.percentile(volume, 99.5))[None].astype(np.float32)
    brain = nibabel.load(ixi / "parcellation" / path.name.replace(".nii.gz", "_DLMUSE.nii.gz")).get_fdata() > 0
    external_volume = nibabel.load(brats_flair).get_fdata(dtype=np.float32)[None]
    xray_path = sorted(kermany.glob("*.jpeg"))[0]
    xray_rgb = np.asarray(Image.open(xray_path).convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255
    xray = np.ascontiguousarray(xray_rgb.mean(axis=0, keepdims=True))
    return [(volume, brain, external_volume), (xray, None, (volume[:, :, :, 45], brain[:, :, 45]))]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_task_on_a_real_brain_volume_and_a_real_chest_xray(name, real_data):
    images = _real_images(
        real_data("brain", "healthy_ixi_t1"),
        real_data("brain", "lesion_brats2015", "brats_2013_pat0001_1", "Flair_subtrMeanDivStd.nii.gz"),
        real_data("cxr_kermany", "train", "NORMAL"),
    )
    task_id = TASK_NAMES.index(name)
    for image, foreground, external in images:
        if name in DEFORMATION:
            task = make_task(name, max_push=5.0 if image.ndim == 4 else 10.0)  # brain / CXR presets
        else:
            task = make_task(task_id, **({"sources": [external]} if name == "inter_blend" else {}))
        anomalous, label = task(image, foreground, np.random.default_rng(task_id))
        replayed, anomalies = _replay(task, image, foreground, task_id)
        np.testing.assert_array_equal(anomalous, replayed)
        assert _check_sample(image, foreground, anomalous, label, anomalies)
        assert label.max() > 0.05


def test_the_registry_is_light_and_the_interface_imports_no_task():
    """The task names and count load with numpy only (what folds and the CLI need); the interface
    module loads no task module (tasks import the interface, the registry imports the tasks)."""
    code = """
import sys
import lightwork.anomalies.registry, lightwork.training.folds
heavy = sorted(name for name in sys.modules if name.startswith(("scipy", "numba", "torch", "lightwork.anomalies.base")))
assert not heavy, heavy
import lightwork.anomalies.base
tasks = sorted(name for name in sys.modules if name.rsplit(".", 1)[-1] in ("blending", "deformation", "intensity"))
assert not tasks, tasks
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    from lightwork.anomalies.registry import TASK_COUNT, task_id_of

    assert TASK_COUNT == len(TASK_NAMES) == 5
    assert [task_id_of(name) for name in ("sink", "3", 4, np.int64(1))] == [2, 3, 4, 1]
