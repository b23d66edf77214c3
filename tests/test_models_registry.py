"""Networks by name (`model.name`): checkpoints and packages written before networks had names load
as the U-Nets they were and predict the same maps; a registered network trains a fold end to end."""

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
import torch

from lightwork import __version__
from lightwork.config import NETWORKS, MethodSection, UNetConfig, load_config
from lightwork.data import manifest
from lightwork.data.slices import training_samples
from lightwork.demo.noise import write_noise_dataset
from lightwork.errors import UserError
from lightwork.inference.ensemble import Ensemble
from lightwork.inference.package import package_bytes, read_package
from lightwork.models import PRESETS, UNet, build_model, load_model, save_model
from lightwork.synthesis.samples import BatchSynthesiser
from lightwork.training.folds import plan_split
from lightwork.training.loop import FoldTrainer
from lightwork.training.resolve import resolve_data

# The model section as checkpoints and packages held it before networks had names.
OLD_CONFIG = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "features": [4, 8, 8],
    "positional_encoding": True,
}


NETWORK_NAMES = rf"\(one of {', '.join(NETWORKS)}\)$"  # the error lists config.NETWORKS


def image(shape=(1, 1, 12, 10)) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).normal(size=shape).astype(np.float32))


def state_bytes(network: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}, buffer)
    return buffer.getvalue()


def old_unet(seed: int) -> UNet:
    torch.manual_seed(seed)
    return UNet(UNetConfig(**OLD_CONFIG)).eval()


def test_the_unet_is_the_default_and_the_name_is_saved(tmp_path):
    network = build_model(PRESETS["tiny"])
    assert type(network) is UNet and PRESETS["tiny"].name == load_config(preset="tiny").model.name == "unet"
    save_model(network, str(tmp_path / "best"))
    assert json.loads((tmp_path / "best" / "model.json").read_text()) == {**PRESETS["tiny"].to_dict(), "name": "unet"}
    ensemble = Ensemble("1/4", ["fold0"], [network], "brain", {}, 0.5, "run")
    with zipfile.ZipFile(io.BytesIO(package_bytes(ensemble))) as archive:
        assert json.loads(archive.read("package.json"))["models"][0]["config"]["name"] == "unet"


def test_an_unknown_name_is_one_line_naming_the_networks():
    with pytest.raises(UserError, match=r"^model.name: 'vit' is not allowed " + NETWORK_NAMES):
        load_config(preset="tiny", overrides=["model.name=vit"])
    with pytest.raises(UserError, match=r"^model.name: 'vit' is not allowed " + NETWORK_NAMES):
        build_model(UNetConfig(name="vit"))


def test_a_checkpoint_saved_before_the_registry_loads_and_predicts_the_same_maps(tmp_path):
    network = old_unet(0)
    (tmp_path / "model.json").write_text(json.dumps(OLD_CONFIG))
    (tmp_path / "model.pt").write_bytes(state_bytes(network))
    loaded = load_model(str(tmp_path))
    assert type(loaded) is UNet and loaded.config == UNetConfig(name="unet", **OLD_CONFIG)
    assert torch.equal(loaded(image()), network(image()))


def test_a_package_saved_before_the_registry_loads_and_predicts_the_same_maps(tmp_path):
    networks = [old_unet(seed) for seed in (0, 1)]
    members = {f"models/fold{i}.pt": state_bytes(network) for i, network in enumerate(networks)}
    description = {
        "format": "lightwork-package",
        "lightwork_version": __version__,
        "split": "1/4",
        "recipe": "cxr",
        "recipe_options": {"shape": [12, 10]},
        "threshold": 0.5,
        "slice_axis": None,
        "models": [{"name": f"fold{i}", "config": OLD_CONFIG, "weights": f"models/fold{i}.pt"} for i in (0, 1)],
    }
    members["package.json"] = json.dumps(description).encode()
    members["SHA256SUMS"] = json.dumps(
        {key: hashlib.sha256(value).hexdigest() for key, value in members.items()}
    ).encode()
    path = tmp_path / "old.lwpkg"
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in members.items():
            archive.writestr(key, value)
    ensemble = read_package(str(path))
    before = Ensemble("1/4", ["fold0", "fold1"], networks, "cxr", {"shape": [12, 10]}, 0.5, "old")
    assert [type(network) for network in ensemble.networks] == [UNet, UNet]
    assert (ensemble.method, ensemble.seed) == (MethodSection("synthetic"), 0)  # nor before methods had names
    scan = image((1, 12, 10)).numpy()
    np.testing.assert_array_equal(ensemble.predict(scan), before.predict(scan))
    with torch.no_grad():
        by_hand = (networks[0](torch.from_numpy(scan)[None]) + networks[1](torch.from_numpy(scan)[None])) / 2
    np.testing.assert_allclose(ensemble.predict(scan), by_hand[0, 0].numpy(), rtol=0, atol=1e-6)


class Toy(torch.nn.Module):
    """One 3x3 convolution: [B, in_channels, *S] -> [B, out_channels, *S] (a registered network)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        conv = torch.nn.Conv3d if config.spatial_dims == 3 else torch.nn.Conv2d
        self.conv = conv(config.in_channels, config.out_channels, kernel_size=3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image)


def test_a_registered_network_trains_a_fold_end_to_end_through_model_name(tmp_path, monkeypatch):
    """config (model.name=toy) -> synthetic samples of the first 1/4 fold -> FoldTrainer -> checkpoint
    -> package -> predicted maps, the toy network throughout."""
    monkeypatch.setitem(NETWORKS, "toy", f"{__name__}:Toy")
    data = write_noise_dataset(str(tmp_path / "data"), (16, 16))
    overrides = [f"data.manifest={data}", "model.name=toy", "model.spatial_dims=2", "train.max_epochs=3"]
    config = resolve_data(load_config(preset="tiny", overrides=overrides))
    samples = training_samples(manifest.usable(manifest.read_manifest(data)), None)
    plan = plan_split("1/4", samples.fold_counts())[0]
    train_refs, val_refs = samples.refs(plan.train_folds), samples.refs(plan.val_folds)

    def items(refs, epoch):
        return {
            "case_id": np.array([ref.case_id for ref in refs]),
            "array_uri": np.array([ref.array_uri for ref in refs]),
            "epoch": np.full(len(refs), epoch),
        }

    push = config.task_max_push
    train = BatchSynthesiser(config.seed, plan.train_tasks, train_refs, (), push, validation=False, keys=False)
    val = BatchSynthesiser(config.seed, plan.val_tasks, val_refs, (), push, validation=True, keys=True)
    torch.manual_seed(config.seed)
    trainer = FoldTrainer(build_model(config.model), config.train, torch.device("cpu"), seed=config.seed)
    saved = []

    def keep_best(result):
        if result.is_best:
            save_model(trainer.model, str(tmp_path / "best"))
            saved.append(result.step)

    state = trainer.fit(
        lambda epoch: [train(items(train_refs, epoch))] * 2, lambda epoch: [val(items(val_refs, 0))], keep_best
    )
    assert (state.epoch, state.step) == (3, 6) and saved and saved[0] == 2
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]
    assert json.loads((tmp_path / "best" / "model.json").read_text())["name"] == "toy"
    fold = load_model(str(tmp_path / "best"))
    assert type(fold) is Toy
    (tmp_path / "toy.lwpkg").write_bytes(
        package_bytes(Ensemble("1/4", [plan.name], [fold], config.data.recipe, {}, 0.5, "run"))
    )
    packaged = read_package(str(tmp_path / "toy.lwpkg"))
    assert type(packaged.networks[0]) is Toy
    scan = image((1, 16, 16)).numpy()
    with torch.no_grad():
        expected = fold(torch.from_numpy(scan)[None])[0, 0].numpy()
    np.testing.assert_array_equal(packaged.predict(scan), expected)
