"""The run description: validated when built, checked against its manifest before Ray starts,
paths made absolute once, and the saved record of a run never overwritten by another description."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from lightwork.anomalies.parameters import MAX_PUSH
from lightwork.config import (
    check_saved,
    load_config,
    resolve_data,
    result_differences,
    save_config,
)
from lightwork.data import manifest
from lightwork.data.cases import PreparedCase, save_case
from lightwork.errors import UserError


def write_manifest(root, shape=(16, 16), count=5, channels=1, recipe="cxr", options=None, checksum="raw"):
    """A prepared dataset of `count` constant cases of spatial `shape` at `root`; its manifest URI."""
    rows = []
    for index in range(count):
        case_id = f"case{index}"
        uri = str(root / f"{case_id}.npz")
        image = np.ones((channels, *shape), np.float32)
        save_case(uri, PreparedCase(case_id, image, np.ones(shape, bool)))
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
    with pytest.raises(UserError, match=r"^train.flip_last_axis: 2 is not allowed \(a number >= 0 and <= 1\)$"):
        load_config(preset="tiny", overrides=["train.flip_last_axis=2"])
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
