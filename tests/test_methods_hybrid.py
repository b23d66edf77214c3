"""The hybrid methods (`lightwork.methods.hybrid`): the U-Net sees the image and its reconstruction, two
channels per modality; a training step trains the reconstructor on the clean image and the U-Net on
the soft label, from training batches that carry the clean image for the hybrids only (both hybrids'
runs through the CLI, a package and predict: tests/test_methods_ablation.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional

from lightwork.cli import main
from lightwork.config import load_config
from lightwork.data.cases import load_case
from lightwork.demo.noise import write_noise_dataset
from lightwork.distributed.stream import fold_dataset
from lightwork.errors import UserError
from lightwork.methods import SYNTHETIC_ANOMALIES, get_method
from lightwork.models import build_model, load_model, save_model
from lightwork.models.autoencoder import Autoencoder
from lightwork.models.denoiser import Denoiser
from lightwork.models.hybrid import DiffusionHybrid, Hybrid
from lightwork.training.folds import plan_split
from lightwork.training.loop import FoldTrainer

NETWORKS = {"hybrid": (Hybrid, Autoencoder), "hybrid_ddpm": (DiffusionHybrid, Denoiser)}


def hybrid_config(name: str, *overrides: str, preset: str = "demo"):
    return load_config(preset=preset, overrides=[f"method.name={name}", "train.flip_left_right=0", *overrides])


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    "name, preset, channels, shape",
    [("hybrid", "demo", 1, (32, 40)), ("hybrid", "tiny", 2, (9, 10, 11)), ("hybrid_ddpm", "demo", 2, (32, 40))],
)
def test_the_unet_sees_the_image_and_its_reconstruction_two_channels_per_modality(
    name, preset, channels, shape, tmp_path
):
    """The U-Net's input is [image, reconstruction] on the channel axis, float32 [B, 2C, *S], the
    image's C channels first; its map is float32 [B, 1, *S]; the network saves and loads as the
    others do (model.json + model.pt) and gives the same map after loading."""
    config = hybrid_config(name, f"model.in_channels={channels}", preset=preset)
    torch.manual_seed(0)
    network = build_model(config.model).eval()
    network_class, reconstructor_class = NETWORKS[name]
    assert type(network) is network_class and type(network.reconstructor) is reconstructor_class
    assert network.unet.config.in_channels == 2 * channels
    seen = []
    network.unet.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    image = torch.randn(2, channels, *shape, generator=seeded(1))
    method = get_method(config.method)
    with torch.no_grad():
        maps = method.anomaly_map(network, image, seeded(0))
    assert maps.shape == (2, 1, *shape) and maps.dtype == torch.float32
    [pair] = seen
    assert pair.shape == (2, 2 * channels, *shape) and torch.equal(pair[:, :channels], image)
    if name == "hybrid":
        assert torch.equal(pair[:, channels:], network.reconstructor(image))
    save_model(network, str(tmp_path / "best"))
    loaded = load_model(str(tmp_path / "best"))
    assert type(loaded) is network_class and loaded.config == network.config
    with torch.no_grad():
        assert torch.equal(method.anomaly_map(loaded, image, seeded(0)), maps)


@pytest.mark.parametrize("name", ["hybrid", "hybrid_ddpm"])
def test_a_training_step_trains_the_reconstructor_on_the_clean_image_and_the_unet_on_the_label(name):
    """One FoldTrainer step on a batch with `healthy` (a batch without is refused): every parameter
    of both parts gets a gradient.
    The autoencoder hybrid's loss is L1(reconstruction of the anomalous image, clean image) +
    MSE(U-Net scores, label); the reconstruction reaches the U-Net detached (the MSE alone trains no
    autoencoder weight). Validation is the synthetic-task method's: the map and its MSE per image."""
    config = hybrid_config(name)
    torch.manual_seed(0)
    network = build_model(config.model)
    method = get_method(config.method)
    assert method.trains_on == SYNTHETIC_ANOMALIES and method.needs_healthy and not method.threshold_on_healthy
    rng = np.random.default_rng(0)
    healthy = rng.normal(size=(2, 1, 32, 40)).astype(np.float32)
    label = np.zeros((2, 32, 40), np.float32)
    label[:, 10:20, 12:24] = 0.8
    image = healthy + 2 * label[:, None]
    if name == "hybrid":
        with torch.no_grad():
            reconstruction, scores = network(torch.from_numpy(image))
        expected = functional.l1_loss(reconstruction, torch.from_numpy(healthy)) + functional.mse_loss(
            scores, torch.from_numpy(label[:, None])
        )
        _, scores = network(torch.from_numpy(image))
        functional.mse_loss(scores, torch.from_numpy(label[:, None])).backward()
        assert all(parameter.grad is None for parameter in network.reconstructor.parameters())
        network.zero_grad(set_to_none=True)
    trainer = FoldTrainer(network, config.train, torch.device("cpu"), method=method)
    with pytest.raises(ValueError, match="training batches need `healthy`"):
        trainer.train_step({"image": image, "label": label})
    loss, size = trainer.train_step({"image": image, "label": label, "healthy": healthy})
    assert size == 2 and np.isfinite(loss)
    if name == "hybrid":
        assert loss == pytest.approx(float(expected), rel=1e-6)
    for part in (network.reconstructor, network.unet):
        grads = [parameter.grad for parameter in part.parameters()]
        assert all(grad is not None for grad in grads) and any(bool(grad.abs().sum() > 0) for grad in grads)
    network.eval()
    with torch.no_grad():
        maps = method.anomaly_map(network, torch.from_numpy(image), seeded(0))
        scores, losses = method.validate(network, torch.from_numpy(image), torch.from_numpy(label[:, None]), seeded(0))
    assert torch.equal(scores, maps)
    assert torch.allclose(losses, (maps - torch.from_numpy(label[:, None])).pow(2).flatten(1).mean(1))


def test_only_the_hybrids_training_stream_carries_the_clean_images(ray_session, tmp_path):
    """The fold's training rows hold `healthy` (the prepared case each anomalous image was made
    from) for the hybrid, and no such column for the synthetic-task method."""
    data = write_noise_dataset(str(tmp_path / "data"), (24, 24))
    plan = plan_split("1/4", {fold: 2 for fold in range(5)})[0]
    columns = {}
    for name in ("synthetic", "hybrid"):
        config = hybrid_config(name, f"data.manifest={data}", "model.spatial_dims=2", preset="tiny")
        [row] = fold_dataset(plan, config, seed=0, part="train", data_cpus=1.0, keys=True).take(1)
        columns[name] = set(row)
        if name == "hybrid":
            clean = load_case(str(tmp_path / "data" / f"{row['case_id']}.npz")).image
            np.testing.assert_array_equal(row["healthy"], clean)
            assert row["label"].any() and not np.array_equal(row["image"], clean)
    assert columns["hybrid"] == columns["synthetic"] | {"healthy"}


def test_the_ddpm_hybrid_is_2d_only_and_each_hybrid_trains_its_own_network(capsys):
    assert load_config(preset="tiny", overrides=["method.name=hybrid"]).model.name == "hybrid"  # 3D
    assert load_config(preset="demo", overrides=["method.name=hybrid_ddpm"]).model.name == "hybrid_ddpm"
    with pytest.raises(UserError, match=r"^model.name: 'hybrid' is not a network method 'hybrid_ddpm' trains "):
        load_config(preset="demo", overrides=["method.name=hybrid_ddpm", "model.name=hybrid"])
    assert main(["train", "--config", "tiny", "--set", "method.name=hybrid_ddpm", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("lightwork train: model.spatial_dims: method 'hybrid_ddpm' trains 2D networks only, got 3")
