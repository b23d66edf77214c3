"""DDPM reconstruction: the schedule, simplex noise, forward noising against its closed form, the reverse
with oracle denoisers, pDDPM's patches, the anomaly map, and the denoiser network (tiny, CPU)."""

import math

import pytest
import torch
from torch import nn

from lightwork.config import UNetConfig
from lightwork.models.denoiser import ConditionedDenoiser, Denoiser
from lightwork.models.diffusion import (
    draw_training,
    grid_boxes,
    loss_at,
    make_schedule,
    network_evaluations,
    patched_reconstruct,
    q_sample,
    reconstruct,
    residual_map,
    training_loss,
)
from lightwork.models.simplex import draw_simplex, noise, render_simplex

TINY = UNetConfig(spatial_dims=2, features=[8, 16])


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_image(shape=(2, 1, 16, 20), seed=0) -> torch.Tensor:
    """Smooth images in about [-1, 1]: low-frequency simplex noise."""
    draw = draw_simplex(shape[0] * shape[1], seeded(seed), octaves=2)
    return 0.5 * render_simplex(draw, shape[2:], wavelength=16.0).reshape(shape)


def noise_oracle(x0, schedule):
    """A denoiser that knows x0: the true noise of x_t (prediction="noise")."""

    def predict(x_t, t, condition):
        alpha_bar = schedule.alpha_bar[t].float().reshape(-1, 1, 1, 1)
        return (x_t - alpha_bar.sqrt() * x0) / (1 - alpha_bar).sqrt()

    return predict


def test_schedules_are_monotone_with_their_endpoints():
    linear, cosine = make_schedule("linear"), make_schedule("cosine")
    assert linear.timesteps == cosine.timesteps == 1000
    assert math.isclose(linear.betas[0].item(), 1e-4) and math.isclose(linear.betas[-1].item(), 0.02)
    for schedule in (linear, cosine):
        assert schedule.alpha_bar[0] == 1.0 and len(schedule.alpha_bar) == 1001
        assert (schedule.alpha_bar.diff() < 0).all()  # abar falls at every step
        assert (schedule.betas.diff() >= 0).all() and schedule.betas.max() <= 0.999  # alphas fall
        assert torch.allclose(schedule.alpha_bar[1:], torch.cumprod(1 - schedule.betas, 0))
    # cosine keeps about half the signal at the authors' test step 500; linear about 8 %
    assert 0.49 < cosine.alpha_bar[500] < 0.50 and 0.078 < linear.alpha_bar[500] < 0.079
    assert cosine.alpha_bar[-1] < 1e-8 and 4.0e-5 < linear.alpha_bar[-1] < 4.1e-5
    with pytest.raises(ValueError, match="schedule kind"):
        make_schedule("sigmoid")


@pytest.mark.parametrize("kind", ["gaussian", "simplex"])
def test_forward_noising_matches_its_closed_form(kind):
    schedule, t, draws = make_schedule(), 300, 2000
    x0 = smooth_image((1, 1, 12, 16))
    alpha_bar = schedule.alpha_bar[t].item()
    x_t = q_sample(x0.expand(draws, -1, -1, -1), t, noise((draws, 1, 12, 16), kind, seeded(1)))
    # mean over draws: sqrt(abar) x0 within 5 standard errors; variance 1 - abar within 5 %
    standard_error = math.sqrt((1 - alpha_bar) / draws)
    assert (x_t.mean(0) - math.sqrt(alpha_bar) * x0[0]).abs().max() < 5 * standard_error
    assert abs(x_t.var(0).mean().item() / (1 - alpha_bar) - 1) < 0.05
    # per-image steps: t as int64 [B]; t = 0 is the clean image
    steps = torch.tensor([0, 10, 999])
    mixed = q_sample(x0.expand(3, -1, -1, -1), steps, torch.ones(3, 1, 12, 16))
    for index, step in enumerate(steps):
        a = schedule.alpha_bar[step].item()
        assert torch.allclose(mixed[index], math.sqrt(a) * x0[0] + math.sqrt(1 - a), atol=1e-6)


def test_simplex_noise_is_deterministic_standardised_and_correlated():
    first = noise((4, 2, 32, 40), "simplex", seeded(0))
    assert first.shape == (4, 2, 32, 40) and first.dtype == torch.float32
    assert torch.equal(first, noise((4, 2, 32, 40), "simplex", seeded(0)))
    assert not torch.allclose(first, noise((4, 2, 32, 40), "simplex", seeded(1)))
    planes = first.reshape(8, -1)
    assert planes.mean(1).abs().max() < 1e-5 and (planes.std(1, unbiased=False) - 1).abs().max() < 1e-4
    assert not torch.allclose(first[0, 0], first[0, 1])  # each channel its own draw

    def neighbour_correlation(field):
        return (field[..., 1:] * field[..., :-1]).mean().item()

    gaussian = noise((4, 2, 32, 40), "gaussian", seeded(0))
    assert neighbour_correlation(first) > 0.6 and abs(neighbour_correlation(gaussian)) < 0.05
    with pytest.raises(ValueError, match="noise kind"):
        noise((1, 1, 4, 4), "perlin", seeded(0))


def test_reconstruct_from_step_zero_is_the_input():
    def never(x_t, t, condition):
        raise AssertionError("no network evaluation at t_start = 0")

    image = smooth_image()
    assert torch.equal(reconstruct(never, image, 0, None, "simplex", seeded(0)), image)
    assert torch.equal(patched_reconstruct(never, image, 0, 1, "simplex", seeded(0), patch_size=8), image)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_oracle_denoisers_recover_the_clean_image(kind):
    schedule, image = make_schedule(kind), smooth_image()
    oracle = noise_oracle(image, schedule)
    for steps in (1, 10):  # deterministic DDIM schedules
        recovered = reconstruct(oracle, image, 500, steps, "simplex", seeded(0), schedule=schedule, prediction="noise")
        assert (recovered - image).abs().max() < 1e-4
    # the full ancestral chain, fresh simplex noise at every step
    recovered = reconstruct(oracle, image, 100, None, "simplex", seeded(0), schedule=schedule, prediction="noise")
    assert (recovered - image).abs().max() < 1e-4
    # an x0 oracle (the authors' prediction)
    recovered = reconstruct(lambda x_t, t, c: image, image, 500, 5, "gaussian", seeded(0), schedule=schedule)
    assert (recovered - image).abs().max() < 1e-4
    with pytest.raises(ValueError, match="steps must be in 1..t_start"):
        reconstruct(oracle, image, 5, 10, "gaussian", seeded(0), schedule=schedule, prediction="noise")


def test_patched_reconstruction_changes_only_its_patch_and_counts_its_evaluations():
    image = smooth_image((2, 1, 32, 40))
    box = (4, 8, 20, 24)
    halved = patched_reconstruct(lambda x_t, t, c: 0.5 * x_t, image, 400, 1, "simplex", seeded(0), boxes=[box])
    inside = torch.zeros_like(image, dtype=torch.bool)
    inside[..., 4:20, 8:24] = True
    assert torch.equal(halved[~inside], image[~inside])
    assert (halved[inside] - image[inside]).abs().min() > 0
    # the grid: 16-pixel patches over 32 x 40, the last column cut at the edge
    boxes = grid_boxes((32, 40), 16)
    assert boxes == [
        (0, 0, 16, 16),
        (0, 16, 16, 32),
        (0, 32, 16, 40),
        (16, 0, 32, 16),
        (16, 16, 32, 32),
        (16, 32, 32, 40),
    ]
    assert len(grid_boxes((96, 96))) == 4  # pDDPM: 48-pixel patches on 96 x 96 slices
    # each patch sees its own noised box and a clean context; the batch runs as patches x images
    batches = []

    def x0_oracle(x_t, t, condition):
        batches.append(x_t.shape[0])
        return image.repeat(len(boxes), 1, 1, 1)

    rebuilt = patched_reconstruct(x0_oracle, image, 500, 3, "gaussian", seeded(0), patch_size=16)
    assert (rebuilt - image).abs().max() < 1e-4
    assert sum(batches) == image.shape[0] * network_evaluations(500, 3, patches=6) == 2 * 18
    ones = lambda x_t, t, c: torch.ones_like(x_t)  # noqa: E731
    overlapping = patched_reconstruct(ones, image, 500, 1, "gaussian", seeded(0), patch_size=16, stride=8)
    assert torch.allclose(overlapping, torch.ones_like(image))  # overlapping patches averaged
    assert network_evaluations(500, None) == 500 and network_evaluations(500, 1, draws=3) == 3


def test_residual_map_marks_what_the_denoiser_cannot_reconstruct():
    healthy = smooth_image((1, 1, 32, 40))
    anomalous = healthy.clone()
    anomalous[..., 10:18, 12:20] += 2.0

    def healthy_prior(x_t, t, condition):  # reconstructs the healthy image whatever it sees
        return healthy.expand(x_t.shape[0], -1, -1, -1)

    scores = residual_map(healthy_prior, anomalous, (250, 500), 2, "simplex", seeded(0), n=2, patch_size=16)
    assert scores.shape == (1, 1, 32, 40) and scores.dtype == torch.float32
    inside = torch.zeros_like(scores, dtype=torch.bool)
    inside[..., 10:18, 12:20] = True
    assert torch.allclose(scores[..., 12:16, 14:18], torch.full((4, 4), 2.0), atol=1e-4)  # the median keeps the core
    assert scores[~inside].abs().max() < 1e-4
    smoothed = residual_map(healthy_prior, anomalous, 500, 1, "gaussian", seeded(0), smoothing="gaussian", sigma=1.0)
    assert 0 < smoothed[0, 0, 9, 15] < 2.0 and smoothed[0, 0, 14, 16] > 1.5
    raw = residual_map(healthy_prior, anomalous, 500, 1, "gaussian", seeded(0), smoothing=None)
    assert torch.allclose(raw, (anomalous - healthy).abs(), atol=1e-4)


def test_the_same_seed_gives_the_same_reconstruction():
    torch.manual_seed(0)
    model = Denoiser(TINY).eval()
    nn.init.normal_(model.head[-1].weight, std=0.1)  # the head starts at zero: make the output depend on x_t
    image = smooth_image()
    first = reconstruct(model, image, 20, None, "simplex", seeded(3))
    assert torch.equal(first, reconstruct(model, image, 20, None, "simplex", seeded(3)))
    assert not torch.allclose(first, reconstruct(model, image, 20, None, "simplex", seeded(4)))
    maps = [residual_map(model, image, (5, 10), 2, "simplex", seeded(3), n=2, patch_size=8) for _ in range(2)]
    assert torch.equal(maps[0], maps[1])


def test_training_loss_of_a_tiny_denoiser_falls_on_one_image():
    torch.manual_seed(0)
    model = Denoiser(TINY)
    image = smooth_image((1, 1, 16, 20))
    batch = image.expand(8, -1, -1, -1)
    fixed = draw_training((8, 1, 16, 20), seeded(100))  # the same draws before and after

    def held_out():
        with torch.no_grad():
            return loss_at(model, batch, fixed).item()

    before = held_out()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = seeded(1)
    for _ in range(40):
        loss = training_loss(model, batch, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert held_out() < 0.6 * before
    # pDDPM's draw noises one grid patch per image (8 x 8 of 16 x 16), and its loss counts only that patch
    draw = draw_training((8, 1, 16, 16), seeded(2), patch_size=8)
    assert draw.mask.shape == (8, 1, 16, 16) and (draw.mask.sum((1, 2, 3)) == 64).all()
    assert ((1 <= draw.t) & (draw.t <= 1000)).all()
    images = smooth_image((8, 1, 16, 16))
    assert loss_at(lambda x_t, t, c: torch.where(draw.mask, images, images + 5.0), images, draw).item() == 0.0


def test_denoiser_shapes_conditioning_and_refusals():
    for size in ((32, 40), (17, 23)):
        x = torch.randn(2, 1, *size)
        assert (
            Denoiser(UNetConfig(spatial_dims=2, features=[4, 8, 8])).forward(x, torch.tensor([1, 500])).shape == x.shape
        )
    with pytest.raises(ValueError, match="model.spatial_dims"):
        Denoiser(UNetConfig(spatial_dims=3, features=[4, 8]))
    torch.manual_seed(0)
    model = ConditionedDenoiser(UNetConfig(spatial_dims=2, in_channels=2, features=[4, 8]))
    nn.init.normal_(model.head[-1].weight, std=0.1)
    x, t = torch.randn(2, 2, 16, 20), torch.tensor([10, 700])
    first, second = model(x, t, torch.randn(2, 2, 16, 20)), model(x, t, torch.randn(2, 2, 16, 20))
    assert first.shape == x.shape and not torch.allclose(first, second)  # the condition matters
    assert not torch.allclose(model(x, t.flip(0), x), model(x, t, x))  # and so does the step
    first.square().mean().backward()
    assert model.encoder[0][0][0].weight.grad.abs().sum() > 0  # the encoder trains with the denoiser
    with pytest.raises(ValueError, match="needs a condition image"):
        model(x, t)
    with pytest.raises(ValueError, match="takes no condition"):
        Denoiser(TINY)(torch.randn(1, 1, 8, 8), torch.tensor([1]), torch.randn(1, 1, 8, 8))
    with pytest.raises(ValueError, match="expected"):
        Denoiser(TINY)(torch.randn(1, 2, 8, 8), torch.tensor([1]))
