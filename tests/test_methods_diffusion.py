"""The diffusion methods (`lightwork.methods.diffusion`): each learns a healthy image through the loop,
maps a bright square it never saw, deterministically for a seed, at its stated number of network
evaluations (their runs through the CLI, a package and predict: tests/test_methods_ablation.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightwork.config import load_config
from lightwork.errors import UserError
from lightwork.methods import HEALTHY, get_method
from lightwork.models import build_model
from lightwork.models.denoiser import ConditionedDenoiser, Denoiser
from lightwork.training.loop import FoldTrainer

NETWORKS = {"ddpm": Denoiser, "pddpm": Denoiser, "cddpm": ConditionedDenoiser}


def diffusion_config(name: str, *overrides: str):
    return load_config(preset="demo", overrides=[f"method.name={name}", *overrides])


def healthy_image() -> np.ndarray:
    """float32 [1, 16, 20], smooth, in [-1, 1]."""
    yy, xx = np.mgrid[:16, :20]
    return (np.sin(yy / 2.5) * np.cos(xx / 3.5))[None].astype(np.float32)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", ["ddpm", "pddpm", "cddpm"])
def test_each_diffusion_method_learns_a_healthy_image_and_maps_a_square_it_never_saw(name):
    """60 steps through FoldTrainer on one healthy image: the loss is finite and falls by more than a
    quarter (measured: by 46 % for pddpm, about 90 % for the others); the map (float32 [B, 1, H, W]
    in [0, 1]) is the same for the same seed, and inside a bright square more than 4 times its
    mean away from the square and on the healthy image (measured: 6 for pddpm, 30-37 the others)."""
    config = diffusion_config(name, "train.lr=3e-3", "train.warmup_steps=0", "train.flip_left_right=0")
    torch.manual_seed(0)
    network = build_model(config.model)
    method = get_method(config.method)
    assert type(network) is NETWORKS[name] and method.trains_on == HEALTHY and method.threshold_on_healthy
    trainer = FoldTrainer(network, config.train, torch.device("cpu"), method=method)
    image = healthy_image()
    batch = {"image": np.repeat(image[None], 2, 0), "label": np.zeros((2, 16, 20), np.float32)}
    losses = [trainer.train_step(batch)[0] for _ in range(60)]
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5])
    network.eval()
    anomalous = image.copy()
    anomalous[:, 5:9, 6:10] += 3.0
    images = torch.from_numpy(np.stack([image, anomalous]))
    with torch.no_grad():
        maps = method.anomaly_map(network, images, seeded(0))
        again = method.anomaly_map(network, images, seeded(0))
    assert maps.shape == (2, 1, 16, 20) and maps.dtype == torch.float32
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1
    assert torch.equal(maps, again)
    square = maps[1, 0, 6:8, 7:9].mean()
    away = np.delete(maps[1, 0].numpy(), np.s_[4:10], axis=0).mean()
    assert square > 4 * away and square > 4 * maps[0].mean()


@pytest.mark.parametrize("name, evaluations", [("ddpm", 1), ("pddpm", 6), ("cddpm", 3)])
def test_a_map_costs_its_stated_network_evaluations_and_validation_scores_healthy_images(name, evaluations):
    """On the demo's 32 x 40 slices: 1 evaluation per image (ddpm), 6 (pddpm: 16 x 16 patches,
    half the smaller side, the last column cut to 8 wide), 3 (cddpm's steps 250, 500, 750).
    Validation gives the map and, per image, its mean absolute residual when healthy, 0 otherwise."""
    config = diffusion_config(name)
    torch.manual_seed(0)
    network = build_model(config.model).eval()
    method = get_method(config.method)
    seen = []
    network.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].shape[0]))
    images = torch.randn(2, 1, 32, 40, generator=seeded(1))
    with torch.no_grad():
        maps = method.anomaly_map(network, images, seeded(0))
        assert sum(seen) == evaluations * 2
        label = torch.zeros(2, 1, 32, 40)
        label[1, 0, 3, 4] = 0.5
        scores, losses = method.validate(network, images, label, seeded(0))
    assert torch.equal(scores, maps)
    # the denoiser's head starts at zero, so the reconstruction is the image outside the noised
    # part (pDDPM: nowhere else), zero inside it: the residual is |image|
    assert torch.allclose(losses[0], images[0].abs().mean()) and losses[1] == 0


def test_the_methods_choose_their_own_2d_networks_and_ddpm_and_pddpm_share_one():
    assert load_config(preset="demo", overrides=["method.name=ddpm"]).model.name == "denoiser"
    assert load_config(preset="demo", overrides=["model.name=denoiser", "method.name=pddpm"]).model.name == "denoiser"
    assert load_config(preset="demo", overrides=["method.name=cddpm"]).model.name == "conditioned_denoiser"
    with pytest.raises(UserError, match=r"^model.name: 'denoiser' is not a network method 'cddpm' trains "):
        load_config(preset="demo", overrides=["method.name=cddpm", "model.name=denoiser"])
    with pytest.raises(UserError, match=r"^model.name: 'denoiser' is the network of method 'ddpm': "):
        load_config(preset="demo", overrides=["model.name=denoiser"])
    with pytest.raises(UserError, match=r"^model.spatial_dims: method 'pddpm' trains 2D networks only, got 3: "):
        load_config(preset="tiny", overrides=["method.name=pddpm"])  # before Ray, not in a trial
