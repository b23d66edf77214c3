"""The run description: validated when built, checked against its manifest before Ray starts,
paths made absolute once, and the saved record of a run never overwritten by another description."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from lightwork.anomalies.parameters import MAX_PUSH
from lightwork.config import NETWORKS, config_from_dict, load_config
from lightwork.data import manifest
from lightwork.data.cases import PreparedCase, save_case
from lightwork.errors import UserError
from lightwork.training.loop import FoldTrainer
from lightwork.training.resolve import resolve_data
from lightwork.training.runs import check_saved, result_differences, save_config

NETWORK_NAMES = rf"\(one of {', '.join(NETWORKS)}\)$"  # the error lists config.NETWORKS


def write_manifest(
    root, shape=(16, 16), count=5, channels=1, recipe="cxr", options=None, checksum="raw", affine=None, case=None
):
    """A prepared dataset of `count` cases of spatial `shape` at `root`; its manifest URI. The cases
    are constant with `affine` (default identity), or copies of the PreparedCase `case`."""
    rows = []
    for index in range(count):
        case_id = f"case{index}"
        uri = str(root / f"{case_id}.npz")
        if case is None:
            image = np.ones((channels, *shape), np.float32)
            save_case(
                uri, PreparedCase(case_id, image, np.ones(shape, bool), affine=np.eye(4) if affine is None else affine)
            )
        else:
            shape = case.foreground.shape
            save_case(uri, dataclasses.replace(case, case_id=case_id))
        rows.append(
            {
                "case_id": case_id,
                "source_uri": f"/raw/{case_id}.png",
                "array_uri": uri,
                "checksum": f"{checksum}{index}",
                "shape": list(shape),
                "spacing": [1.0] * len(shape),
                "recipe": recipe,
                "recipe_version": "1",
                "recipe_options": json.dumps(options or {"size": 16}),
                "fold": index,
                "has_lesion": False,
                "status": "ok",
                "error": None,
            }
        )
    return manifest.write_manifest(str(root), rows)


def test_values_are_coerced_and_checked_when_built():
    config = load_config(
        preset="cxr", overrides=["train.lr=1e-3", "resources.cpus_per_worker=2", "resources.min_workers=null", "seed=7"]
    )
    assert config.train.lr == 1e-3 and config.resources.cpus_per_worker == 2.0
    assert isinstance(config.resources.cpus_per_worker, float) and config.seed == 7
    with pytest.raises(UserError, match=r"^train.flip_left_right: 2 is not allowed \(a number >= 0 and <= 1\)$"):
        load_config(preset="tiny", overrides=["train.flip_left_right=2"])
    with pytest.raises(UserError, match=r"data.max_push: 0.2 is not allowed \(a number > 0.5, or null\)"):
        load_config(overrides=["data.max_push=0.2"])
    with pytest.raises(UserError, match="train.mixed_precision: 1 is not allowed"):
        load_config(overrides=["train.mixed_precision=1"])
    with pytest.raises(UserError, match="unknown key 'seed' in train"):  # the run has one seed, at the top
        load_config(overrides=["train.seed=1"])


def test_paths_are_made_absolute_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = load_config(overrides=["storage_path=runs", "data.manifest=~/prep", "data.external_manifest=file:///x/y"])
    assert (config.storage_path, config.data.manifest) == (str(tmp_path / "runs"), str(tmp_path / "home" / "prep"))
    assert config.data.external_manifest == "/x/y"
    assert load_config(overrides=["storage_path=s3://bucket/runs"]).storage_path == "s3://bucket/runs"


def test_resolve_fills_what_the_data_decides(tmp_path):
    data = write_manifest(tmp_path)
    config = resolve_data(load_config(preset="tiny", overrides=[f"data.manifest={data}", "model.spatial_dims=2"]))
    assert (config.data.recipe, config.data.recipe_options, config.data.max_push) == ("cxr", {"size": 16}, 10.0)
    assert MAX_PUSH == {"brain": 5.0, "cxr": 10.0} and len(config.data.fingerprint) == 64
    overridden = resolve_data(
        load_config(preset="tiny", overrides=[f"data.manifest={data}", "model.spatial_dims=2", "data.max_push=3"])
    )
    assert overridden.data.max_push == 3.0
    # The resolved config, saved and loaded again, resolves to itself.
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert resolve_data(load_config(str(path))) == config


def test_model_and_recipe_must_fit_the_data(tmp_path):
    data = write_manifest(tmp_path / "a")
    with pytest.raises(
        UserError,
        match=r"model.spatial_dims: 3 does not fit .*whose cases are 2D \(shape \[16, 16\]\)"
        r": use a 2D preset \(cxr\) or --set model.spatial_dims=2",
    ):
        resolve_data(load_config(preset="tiny", overrides=[f"data.manifest={data}"]))
    two = ["model.spatial_dims=2", f"data.manifest={data}"]
    with pytest.raises(UserError, match="data.recipe: the config says 'brain' but .* was prepared with 'cxr'"):
        resolve_data(load_config(preset="tiny", overrides=[*two, "data.recipe=brain"]))
    with pytest.raises(UserError, match="data.recipe_options: the config says"):
        resolve_data(load_config(preset="tiny", overrides=[*two, "data.recipe_options={size: 256}"]))
    with pytest.raises(UserError, match="model.in_channels: 2 does not fit .* 1 channel"):
        resolve_data(load_config(preset="tiny", overrides=[*two, "model.in_channels=2"]))
    resolved = resolve_data(load_config(preset="tiny", overrides=two))
    write_manifest(tmp_path / "a", checksum="other")  # prepared again from other files
    with pytest.raises(UserError, match="data.fingerprint: .* holds other cases than the config was made for"):
        resolve_data(resolved)


def test_a_3d_preset_on_a_2d_manifest_fails_before_ray_is_even_imported(tmp_path):
    write_manifest(tmp_path)
    code = (
        "import sys; from lightwork.cli import main; "
        f"status = main(['train', '--config', 'tiny', '--data', {str(tmp_path)!r}]); "
        "print(status, 'ray' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stderr
    assert result.stderr.strip().splitlines() == [
        f"lightwork train: model.spatial_dims: 3 does not fit {tmp_path}, whose cases are 2D (shape [16, 16]): "
        "use a 2D preset (cxr) or --set model.spatial_dims=2"
    ]


def test_the_saved_record_is_never_overwritten_by_another_description(tmp_path):
    uri = str(tmp_path / "run" / "config.yaml")
    first = load_config(preset="tiny", overrides=["name=x"])
    save_config(first, uri)
    saved = (tmp_path / "run" / "config.yaml").read_bytes()
    # Where it runs and how it is scheduled may change; what it trains may not.
    moved = load_config(preset="tiny", overrides=["name=x", "resources.max_concurrent_trials=1"])
    assert result_differences(first, moved) == []
    save_config(moved, uri)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["resources"]["max_concurrent_trials"] == 1
    other = load_config(preset="tiny", overrides=["name=x", "train.max_epochs=3", "seed=1"])
    assert result_differences(first, other) == ["seed: 0 -> 1", "train.max_epochs: 2 -> 3"]
    with pytest.raises(
        UserError,
        match=r"run 'x' was trained with other settings \(seed: 0 -> 1; "
        r"train.max_epochs: 2 -> 3\): give another --name, or --fresh",
    ):
        save_config(other, uri)
    with pytest.raises(UserError):
        check_saved(other, uri)
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["max_epochs"] == 2
    assert saved != (tmp_path / "run" / "config.yaml").read_bytes()  # the moved one was written


def psr_head(tmp_path):
    """A case the brain recipe prepared from a NIfTI stored posterior-superior-right (array axes
    -y, +z, +x), an ellipsoid brain with a bright blob in its right hemisphere only."""
    import nibabel as nib

    from lightwork.data import readers, recipes

    shape = (26, 20, 22)
    affine = np.array([[0, 0, 1, -10.5], [-1, 0, 0, 12.5], [0, 1, 0, -9.5], [0, 0, 0, 1]], float)
    index = np.indices(shape).reshape(3, -1)
    x, y, z = (affine @ np.vstack([index, np.ones(index.shape[1])]))[:3].reshape(3, *shape)
    brain = (x / 9) ** 2 + (y / 11) ** 2 + (z / 8) ** 2 <= 1
    image = np.where(brain, 1.0, 0.0).astype(np.float32)
    image[brain & ((x - 5) ** 2 + y**2 + z**2 <= 9)] = 3.0
    path = tmp_path / "psr.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(path))
    assert nib.aff2axcodes(nib.load(str(path)).affine) == ("P", "S", "R")
    recipe = recipes.BrainRecipe(skull_stripped=True, shape=(24, 28, 20), downsample=1)
    return recipe("psr", readers.read_image(str(path)))


def world_x(affine, mask):
    """World x (mm) of the voxels of `mask`."""
    index = np.argwhere(mask).T
    return (affine @ np.vstack([index, np.ones(index.shape[1])]))[0]


class Recorder(torch.nn.Module):
    """Returns its input's first channel (times a unit weight) and keeps every input it saw."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.seen = []

    def forward(self, image):
        self.seen.append(image.detach().clone())
        return image[:, :1] * self.weight


def test_the_flip_mirrors_left_right_whatever_the_stored_orientation(tmp_path):
    case = psr_head(tmp_path)
    blob = case.image[0] > case.image[0][case.foreground].mean() + 1
    assert blob.any() and (world_x(case.affine, blob) > 0).all()  # in the right hemisphere
    data = write_manifest(tmp_path / "psr", recipe="brain", case=case)
    config = resolve_data(load_config(preset="tiny", overrides=[f"data.manifest={data}", "train.flip_left_right=1"]))
    assert config.data.left_right_axis == 0  # prepared arrays are RAS: x is axis 0, not the stored last axis
    assert resolve_data(load_config(preset="brain2d", overrides=[f"data.manifest={data}"])).data.left_right_axis == 0
    # The loop mirrors image and label alike along that axis: the blob moves to the left hemisphere.
    network = Recorder()
    trainer = FoldTrainer(network, config.train, torch.device("cpu"), flip_axis=config.data.left_right_axis)
    image = torch.from_numpy(case.image[None])
    loss, _ = trainer.train_step({"image": image, "label": image[:, 0]})
    seen = network.seen[0]
    assert torch.equal(seen, image.flip(2)) and loss == 0.0  # the label was flipped with the image
    assert (world_x(case.affine, seen[0, 0].numpy() > case.image[0][case.foreground].mean() + 1) < 0).all()
    with pytest.raises(ValueError, match="train.flip_left_right is 1.0 but no flip axis was given"):
        FoldTrainer(Recorder(), config.train, torch.device("cpu"))


def test_the_left_right_axis_follows_the_affine_into_the_slices(tmp_path):
    # A volume stored with its axes permuted and tilted 30 degrees: axis 2 points mostly along x.
    tilt = np.radians(30)
    rotation = np.array([[np.cos(tilt), 0, np.sin(tilt)], [0, 1, 0], [-np.sin(tilt), 0, np.cos(tilt)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.array([[0, 0, 2.0], [0, 1.5, 0], [-1.0, 0, 0]])
    data = write_manifest(tmp_path, shape=(6, 7, 8), recipe="brain", affine=affine)

    def resolved(*overrides):
        return resolve_data(load_config(preset="tiny", overrides=[f"data.manifest={data}", *overrides]))

    assert resolved().data.left_right_axis == 2
    on_slices = ["model.spatial_dims=2", "train.flip_left_right=0.5"]
    assert resolved(*on_slices, "data.slice_axis=0").data.left_right_axis == 1
    assert resolved(*on_slices, "data.slice_axis=1").data.left_right_axis == 1
    with pytest.raises(UserError) as refused:
        resolved(*on_slices, "data.slice_axis=2")
    assert str(refused.value) == (
        f"train.flip_left_right: 0.5 mirrors samples left-right, but data.slice_axis: 2 is the left-right axis "
        f"of {data}'s volumes, so its slices have none: slice along another axis or set train.flip_left_right=0"
    )
    assert resolved("model.spatial_dims=2", "data.slice_axis=2").data.left_right_axis is None  # no flip: fine
    with pytest.raises(UserError, match=r"^data.left_right_axis: the config says 0 but the samples of .* axis 2$"):
        resolved("data.left_right_axis=0")


def test_chest_x_rays_have_no_left_right_to_mirror(tmp_path):
    data = write_manifest(tmp_path)
    config = resolve_data(load_config(preset="cxr", overrides=[f"data.manifest={data}"]))
    assert config.train.flip_left_right == 0 and config.data.left_right_axis is None
    with pytest.raises(UserError) as refused:
        resolve_data(load_config(preset="cxr", overrides=[f"data.manifest={data}", "train.flip_left_right=0.5"]))
    assert str(refused.value) == (
        f"train.flip_left_right: 0.5 mirrors samples left-right, but {data} holds 2D images, which have no "
        "left-right axis to mirror: set train.flip_left_right=0"
    )


def test_a_run_saved_with_the_retired_flip_key_still_loads(tmp_path):
    """Runs saved before the flip was anatomical hold train.flip_last_axis and no data.left_right_axis."""
    data = write_manifest(tmp_path / "data", shape=(6, 7, 8), recipe="brain")
    config = resolve_data(load_config(preset="tiny", overrides=[f"data.manifest={data}", "name=old"]))
    document = config.to_dict()
    del document["train"]["flip_left_right"], document["data"]["left_right_axis"]
    uri = tmp_path / "run" / "config.yaml"
    uri.parent.mkdir()
    for flip in (0.0, 0.5):
        document["train"]["flip_last_axis"] = flip
        uri.write_text(yaml.safe_dump(document, sort_keys=False))
        loaded = config_from_dict(yaml.safe_load(uri.read_text()))
        assert loaded.train.flip_left_right == 0.0 and loaded.data.left_right_axis is None
    check_saved(config, str(uri))  # the same run, without flips: it may resume
    flipped = dataclasses.replace(config, train=dataclasses.replace(config.train, flip_left_right=0.5))
    with pytest.raises(UserError, match=r"train.flip_left_right: 0.0 -> 0.5"):
        check_saved(flipped, str(uri))


def test_a_run_saved_before_networks_had_names_is_a_unet_run(tmp_path, monkeypatch):
    """Runs saved before model.name and method.name hold neither: they load as U-Net runs of the
    synthetic-task method and may resume as one; another network is another run, and an unknown
    name is one line naming the networks."""
    data = write_manifest(tmp_path / "data", shape=(6, 7, 8), recipe="brain")
    config = resolve_data(load_config(preset="tiny", overrides=[f"data.manifest={data}", "name=old"]))
    document = config.to_dict()
    del document["model"]["name"], document["method"]
    uri = tmp_path / "run" / "config.yaml"
    uri.parent.mkdir()
    uri.write_text(yaml.safe_dump(document, sort_keys=False))
    assert config_from_dict(yaml.safe_load(uri.read_text())) == config
    assert (config.model.name, config.method.name) == ("unet", "synthetic")
    check_saved(config, str(uri))
    with pytest.raises(UserError, match=r"^model.name: 'resnet' is not allowed " + NETWORK_NAMES):
        load_config(preset="tiny", overrides=["model.name=resnet"])
    monkeypatch.setitem(NETWORKS, "resnet", "a.module:ResNet")  # reading a config imports no network
    other = dataclasses.replace(config, model=dataclasses.replace(config.model, name="resnet"))
    with pytest.raises(UserError, match=r"model.name: 'unet' -> 'resnet'"):
        check_saved(other, str(uri))


def test_a_method_trains_only_its_networks():
    """method.name picks the method, and a method with a network of its own gets it unless a source
    names one; a network it does not train, or an unknown method, is one line naming the key and
    what would do."""
    config = load_config(preset="demo", overrides=["method.name=autoencoder"])
    assert (config.method.name, config.model.name) == ("autoencoder", "autoencoder")
    assert config.model.features == load_config(preset="demo").model.features
    assert load_config(preset="demo", overrides=["model.name=autoencoder", "method.name=autoencoder"]) == config
    with pytest.raises(UserError, match=r"^model.name: 'unet' is not a network method 'autoencoder' trains "):
        load_config(preset="demo", overrides=["method.name=autoencoder", "model.name=unet"])
    with pytest.raises(UserError, match=r"^model.name: 'autoencoder' is the network of method 'autoencoder': "):
        load_config(preset="demo", overrides=["model.name=autoencoder"])
    with pytest.raises(UserError, match=r"^method.name: 'vae' is not allowed \(one of synthetic, autoencoder, ddpm, "):
        load_config(preset="demo", overrides=["method.name=vae"])
