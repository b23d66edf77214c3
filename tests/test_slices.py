"""2D-slice training of volumes, the parts without Ray: which slices are samples (lesion-free slices
never admit a lesion voxel), volumes cut into slices and reassembled exactly, slice samples seeded
by their own ids, and the config's slicing keys checked when built and against the data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lightwork.config import UNetConfig, load_config
from lightwork.data import manifest
from lightwork.data.cases import PreparedCase, load_case, load_masks, save_case
from lightwork.data.slices import (
    SampleRef,
    eligible_slices,
    reassemble,
    slice_sample_id,
    take_slice,
    training_rows,
    training_samples,
    volume_slices,
)
from lightwork.errors import UserError
from lightwork.inference.ensemble import Ensemble, model_scores
from lightwork.synthesis.samples import Synthesiser
from lightwork.training.resolve import resolve_data

SHAPE = (12, 14, 10)


def blob_volume(rng: np.random.Generator, shape=SHAPE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image [1, *S] float32, foreground bool ellipsoid [*S], lesion uint8 [*S]: a few random boxes)."""
    index = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    foreground = sum(((index[a] - centre[a]) / (0.45 * shape[a])) ** 2 for a in range(3)) <= 1
    lesion = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        corner = rng.integers(0, np.array(shape) - 2)
        size = rng.integers(1, 4, size=3)
        lesion[tuple(slice(c, c + s) for c, s in zip(corner, size))] = 1
    image = (1.0 + 0.1 * rng.normal(size=shape)).astype(np.float32)[None] * foreground
    return image.astype(np.float32), foreground, lesion


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_eligible_slices_are_exactly_those_with_enough_foreground_and_no_lesion_voxel(axis):
    rng = np.random.default_rng(axis)
    for _ in range(20):
        _, foreground, lesion = blob_volume(rng)
        minimum = float(rng.uniform(0.05, 0.6))
        chosen = eligible_slices(foreground, axis, minimum, lesion)
        lesion_free = eligible_slices(foreground, axis, minimum)
        for index in range(SHAPE[axis]):
            fg = np.take(foreground, index, axis=axis)
            has_lesion = np.take(lesion, index, axis=axis).any()
            enough = fg.mean() >= minimum and fg.any()
            assert (index in lesion_free) == enough
            assert (index in chosen) == (enough and not has_lesion)
        # never a slice with a lesion voxel
        assert all(not np.take(lesion, index, axis=axis).any() for index in chosen)
        assert set(chosen) <= set(lesion_free) and list(chosen) == sorted(chosen)


def test_an_empty_slice_is_never_eligible_and_2d_masks_are_refused():
    foreground = np.zeros(SHAPE, bool)
    foreground[3:9, 2:12, 2:8] = True
    assert eligible_slices(foreground, 0, 1e-9).tolist() == list(range(3, 9))
    with pytest.raises(ValueError, match="3D volumes"):
        eligible_slices(np.ones((8, 8), bool), 0, 0.1)


def write_cases(root, lesions: dict[str, bool], labels: dict[str, int] | None = None) -> list[dict]:
    """Prepared blob volumes; `lesions[case]`: the case stores a lesion mask. Returns usable rows."""
    rng = np.random.default_rng(7)
    rows = []
    folds = manifest.contiguous_folds(list(lesions))
    for case_id, with_lesion in lesions.items():
        image, foreground, lesion = blob_volume(rng)
        uri = str(root / f"{case_id}.npz")
        save_case(uri, PreparedCase(case_id, image, foreground, lesion if with_lesion else None))
        rows.append(
            {
                "case_id": case_id,
                "array_uri": uri,
                "shape": list(SHAPE),
                "fold": folds[case_id],
                "has_lesion": with_lesion,
                "image_label": (labels or {}).get(case_id, int(with_lesion and lesion.any())),
                "status": "ok",
            }
        )
    return rows


def test_lesion_free_slices_of_lesion_cases_join_only_when_asked(tmp_path):
    lesions = {f"case{i}": i in (1, 3, 6) for i in range(10)}
    rows = write_cases(tmp_path, lesions, labels={"case8": 1})  # case8: labelled anomalous, no mask
    healthy = {f"case{i}" for i in range(10)} - {"case1", "case3", "case6", "case8"}
    assert {row["case_id"] for row in training_rows(rows, False)} == healthy
    assert {row["case_id"] for row in training_rows(rows, True)} == healthy | {"case1", "case3", "case6"}

    off = training_samples(rows, 1, 0.2, lesion_free_slices=False)
    on = training_samples(rows, 1, 0.2, lesion_free_slices=True)
    assert {ref.case_id for refs in off.by_fold.values() for ref in refs} == healthy
    assert off.lesion_cases == 0 and on.lesion_cases == 3
    lesion_refs = [ref for refs in on.by_fold.values() for ref in refs if lesions[ref.case_id]]
    assert len(lesion_refs) == on.lesion_case_slices > 0
    for ref in lesion_refs:
        foreground, lesion = load_masks(ref.array_uri)
        assert not np.take(lesion, ref.slice, axis=1).any()  # never a lesion voxel
        assert np.take(foreground, ref.slice, axis=1).mean() >= 0.2
    # the healthy cases' slices are the same either way, in case then slice order
    assert [r for r in on.refs(range(5)) if not lesions[r.case_id]] == off.refs(range(5))
    assert on.count(range(5)) == len(off.refs(range(5))) + len(lesion_refs)
    whole = training_samples(rows, None)
    assert whole.refs(range(5)) == [SampleRef(c, str(tmp_path / f"{c}.npz")) for c in sorted(healthy)]
    assert "lesion-free slices of 3 lesion cases" in on.describe(0.2)


def test_an_unreadable_case_is_left_out_of_slicing_and_named(tmp_path):
    rows = write_cases(tmp_path, {f"case{i}": False for i in range(5)})
    (tmp_path / "case2.npz").write_bytes(b"broken")
    samples = training_samples(rows, 0, 0.1)
    assert {ref.case_id for refs in samples.by_fold.values() for ref in refs} == {"case0", "case1", "case3", "case4"}
    assert len(samples.unreadable) == 1 and str(tmp_path / "case2.npz") in samples.unreadable[0]


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_and_reassembly_are_inverse(axis):
    rng = np.random.default_rng(axis)
    image = rng.normal(size=(2, *SHAPE)).astype(np.float32)
    foreground = rng.random(SHAPE) > 0.5
    stack = volume_slices(image, axis)
    assert stack.shape == (SHAPE[axis], 2, *[n for d, n in enumerate(SHAPE) if d != axis])
    for index in (0, SHAPE[axis] // 2, SHAPE[axis] - 1):
        cut, fg = take_slice(image, foreground, axis, index)
        np.testing.assert_array_equal(cut, stack[index])
        np.testing.assert_array_equal(fg, np.take(foreground, index, axis=axis))
        assert cut.flags.c_contiguous and cut.dtype == np.float32
    np.testing.assert_array_equal(reassemble(stack[:, 1], axis), image[1])
    with pytest.raises(ValueError, match="outside a volume"):
        take_slice(image, foreground, axis, SHAPE[axis])


class SliceMaximum(torch.nn.Module):
    """A constant-per-slice fake model: every pixel of a slice's output is the slice's maximum input."""

    def __init__(self):
        super().__init__()
        self.config = UNetConfig(spatial_dims=2, in_channels=1, features=[4, 8])
        self.offset = torch.nn.Parameter(torch.zeros(()))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        assert image.ndim == 4  # [B, C, H, W]: slices, never the volume
        return image.amax(dim=(1, 2, 3), keepdim=True).expand(-1, 1, *image.shape[2:]) + self.offset


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_constant_per_slice_models_output_reassembles_exactly(axis):
    """Slice k along the axis holds the value k + 1 at one pixel (0 elsewhere, so most slices have no
    foreground at all): the reassembled map is k + 1 on every voxel of slice k, whatever the batch."""
    volume = np.zeros((1, *SHAPE), np.float32)
    for index in range(SHAPE[axis]):
        where = [int(n) // 3 for n in SHAPE]
        where[axis] = index
        volume[(0, *where)] = index + 1
    shape = [1, 1, 1]
    shape[axis] = SHAPE[axis]
    expected = np.broadcast_to((np.arange(SHAPE[axis], dtype=np.float32) + 1).reshape(shape), SHAPE)
    for batch in (1, 4, 5, SHAPE[axis], 64):
        scores = model_scores(SliceMaximum(), volume, axis, slice_batch=batch)
        assert scores.shape == SHAPE and scores.dtype == np.float32
        np.testing.assert_array_equal(scores, expected)
    ensemble = Ensemble("1/4", ["a", "b"], [SliceMaximum(), SliceMaximum()], "brain", {}, 0.5, "test", axis)
    assert ensemble.input_dims == 3 and ensemble.spatial_dims == 2
    np.testing.assert_array_equal(ensemble.predict(volume), expected)


def test_slice_samples_are_2d_and_seeded_by_their_own_slice(tmp_path):
    rows = write_cases(tmp_path, {f"case{i}": False for i in range(4)})
    samples = training_samples(rows, 2, 0.1)
    refs = samples.refs(range(5))
    assert all(ref.slice >= 0 for ref in refs)
    synthesiser = Synthesiser(3, (0, 2, 3, 4), refs, slice_axis=2)
    first, second = refs[0], refs[1]
    assert first.case_id == second.case_id and first.slice != second.slice
    a = synthesiser.sample(first.case_id, first.array_uri, 5, first.slice)
    again = Synthesiser(3, (0, 2, 3, 4), refs, slice_axis=2).sample(first.case_id, first.array_uri, 5, first.slice)
    assert a.image.shape == (1, SHAPE[0], SHAPE[1]) and a.label.shape == (SHAPE[0], SHAPE[1])
    assert a.key == f"{slice_sample_id('case0', 2, first.slice)}@5" == "case0[2:%d]@5" % first.slice
    np.testing.assert_array_equal(a.image, again.image)
    np.testing.assert_array_equal(a.label, again.label)
    case = load_case(first.array_uri)
    healthy, _ = take_slice(case.image, case.foreground, 2, first.slice)
    np.testing.assert_array_equal(a.healthy, healthy)
    # every slice draws from its own generator: over the slices of a case, tasks and labels differ
    drawn = [synthesiser.sample(ref.case_id, ref.array_uri, 5, ref.slice) for ref in refs if ref.case_id == "case0"]
    assert len({s.task for s in drawn}) > 1
    assert len({s.label.tobytes() for s in drawn}) == len(drawn)
    # intra-dataset blending takes 2D sources: slices of the other cases
    blend = Synthesiser(3, (0,), refs, slice_axis=2).sample(first.case_id, first.array_uri, 1, first.slice)
    assert blend.task == 0 and blend.image.shape == a.image.shape and blend.label.max() > 0


def test_a_3d_external_source_gives_a_2d_slice_when_slicing(tmp_path):
    rows = write_cases(tmp_path, {f"case{i}": False for i in range(3)})
    refs = training_samples(rows, 0, 0.1).refs(range(5))
    external = [row["array_uri"] for row in rows]
    sample = Synthesiser(1, (1,), refs, external=external, slice_axis=0).sample(
        refs[2].case_id, refs[2].array_uri, 0, refs[2].slice
    )
    assert sample.task == 1 and sample.image.shape == (1, SHAPE[1], SHAPE[2]) and sample.label.max() > 0


def test_slicing_keys_are_checked_when_built_in_any_order():
    config = load_config(preset="brain2d")
    assert config.data.slice_axis == 2 and config.model.spatial_dims == 2 and config.data_dims == 3
    assert config.data.lesion_free_slices and not load_config(preset="brain").data.lesion_free_slices
    for order in (
        ["data.slice_axis=0", "model.spatial_dims=2"],
        ["model.spatial_dims=2", "data.slice_axis=0"],
    ):
        assert load_config(preset="brain", overrides=order).data.slice_axis == 0
    cases = [
        (["data.slice_axis=0"], "data.slice_axis: 0 trains a 2D model .* model.spatial_dims is 3"),
        (["data.slice_axis=3"], r"data.slice_axis: 3 is not allowed \(one of 0, 1, 2, or null\)"),
        (["data.min_slice_foreground=0"], "data.min_slice_foreground: 0 is not allowed"),
        (["data.lesion_free_slices=true"], "data.lesion_free_slices: true needs data.slice_axis"),
    ]
    for overrides, message in cases:
        with pytest.raises(UserError, match=message):
            load_config(preset="brain", overrides=overrides)
    with pytest.raises(UserError, match="data.slice_axis: 1 trains a 2D model"):
        load_config(preset="brain2d", overrides=["data.slice_axis=1", "model.spatial_dims=3"])
    assert (
        load_config(
            preset="brain2d",
            overrides=["model.spatial_dims=3", "data.slice_axis=null", "data.lesion_free_slices=false"],
        ).data_dims
        == 3
    )


def test_a_slice_axis_on_2d_data_is_one_error_naming_the_key(tmp_path):
    uri = str(tmp_path / "case0.npz")
    save_case(uri, PreparedCase("case0", np.ones((1, 16, 16), np.float32), np.ones((16, 16), bool)))
    row = {
        "case_id": "case0",
        "source_uri": "/raw/case0.png",
        "array_uri": uri,
        "checksum": "raw0",
        "shape": [16, 16],
        "spacing": [1.0, 1.0],
        "recipe": "cxr",
        "recipe_version": "1",
        "recipe_options": json.dumps({"size": 16}),
        "fold": 0,
        "has_lesion": False,
        "status": "ok",
        "error": None,
    }
    data = manifest.write_manifest(str(tmp_path), [row])
    config = load_config(preset="brain2d", overrides=[f"data.manifest={data}"])
    with pytest.raises(UserError, match="data.slice_axis: 2 slices 3D volumes, but .* holds 2D cases") as error:
        resolve_data(config)
    assert "\n" not in str(error.value)
    # on 3D data the 2D model of slices resolves
    (tmp_path / "vol").mkdir()
    rows = write_cases(tmp_path / "vol", {"case0": False})
    full = [
        dict(row, source_uri="/raw", checksum="c", spacing=[1.0] * 3, recipe="brain", recipe_version="1", error=None)
        for row in rows
    ]
    volumes = manifest.write_manifest(str(tmp_path / "vol"), full)
    resolved = resolve_data(load_config(preset="brain2d", overrides=[f"data.manifest={volumes}"]))
    assert resolved.data.recipe == "brain" and resolved.task_max_push == 5.0
