"""DDPM reconstruction for anomaly maps (2D): the forward process, its reverse, pDDPM's patches, the map.

A clean image x0 (float32 [B, C, H, W]) is noised to step t in closed form,
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (`q_sample`; t counts steps, 0 = clean, 1..T), and
a denoiser trained on healthy images only (`training_loss`) takes it back to step 0
(`reconstruct`); what it cannot reconstruct is the anomaly (`residual_map`). A denoiser is any
callable `denoiser(x_t [B, C, H, W], t int64 [B], condition [B, C, H, W] | None) -> [B, C, H, W]`
whose output is the noise or the clean image (`prediction`), as `lightwork.models.denoiser.Denoiser`.

The figures of Behrendt et al.'s public code (pDDPM: "Patched diffusion models for unsupervised
anomaly detection in brain MRI", MIDL 2023, github.com/FinnBehrendt/patched-Diffusion-Models-UAD;
cDDPM: "Guided reconstruction with conditioned diffusion models for unsupervised anomaly
detection in brain MRIs", github.com/FinnBehrendt/Conditioned-Diffusion-Models-UAD), which this
module's defaults follow:

| quantity | value (their code, file or config key) | here |
|---|---|---|
| steps T | 1000 (`GaussianDiffusion(timesteps=1000)`, cond_DDPM.py) | `TIMESTEPS` |
| beta schedule | cosine, s = 0.008, beta <= 0.999 (the class's default; no config sets it) | `make_schedule` |
| the network predicts | the clean image x0 (`objective: pred_x0`) | `PREDICTION` |
| loss | L1 against x0, t uniform in 1..T (`loss: l1`, `p2_loss_weight_gamma=0`) | `LOSS` |
| noise | simplex, AnoDDPM's parameters (`noisetype: simplex`, `gen_noise`) | `models/simplex.py` |
| test noise level | t = 500, their index 499 (`test_timesteps: 500`) | `T_START` |
| test reverse | one network evaluation predicts x0 (`test_step`) | `steps=1` |
| pDDPM patch | 48 x 48, stride 48: 2 x 2 on a 96 x 96 slice (`patch_size: 48`, `BoxSampler`) | `PATCH_SIZE` |
| pDDPM training | one grid patch per image noised, the rest clean, loss in it (`inpaint`) | `draw_training` |
| cDDPM ensemble | reconstructions at t = 250, 500, 750 averaged (`step_ensemble`) | `ENSEMBLE_STEPS` |
| map | L1 residual, median filter 5 wide (`residualmode`, `medianFiltering`, `kernelsize_median`) | `residual_map` |
| data | 96 x 96 slices in [-1, 1] (IXI.yaml: 192 x 192 x 100 / 2), batch 32, Adam 1e-4 | the method's |

"linear" is Ho et al.'s (2020) schedule, betas 1e-4..0.02 over 1000 steps. Their median filter is
3D over a volume, and the map is kept inside an eroded brain mask; here the filter is 2D, per
slice, and masking is the evaluation's.

The reverse runs either as the full ancestral DDPM chain (t_start network evaluations) or as a
deterministic DDIM schedule of `steps` evenly spaced steps (`steps` evaluations; `steps=1` is
the authors' one-step prediction). pDDPM multiplies that by its number of patches, an ensemble by
its draws (`network_evaluations`): pDDPM on a 96 x 96 slice costs 4, cDDPM 3, a full chain from
500 costs 500.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional

from lightwork.models.filters import median_filter
from lightwork.models.simplex import NoiseKind, noise

TIMESTEPS = 1000
T_START = 500
ENSEMBLE_STEPS = (250, 500, 750)
PATCH_SIZE = 48
MEDIAN_WIDTH = 5
COSINE_OFFSET = 0.008
MAX_BETA = 0.999
PREDICTION = "x0"
LOSS = "l1"

Prediction = Literal["noise", "x0"]
Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
Box = tuple[int, int, int, int]  # (top, left, bottom, right) pixels, bottom and right exclusive


@dataclass(frozen=True)
class Schedule:
    """A noise schedule: `alpha_bar` float64 [T + 1], abar_0 = 1 > abar_1 > ... > abar_T, and
    `betas` float64 [T], beta_t = 1 - abar_t / abar_(t-1) (betas[t - 1] is beta_t)."""

    alpha_bar: torch.Tensor
    betas: torch.Tensor

    @property
    def timesteps(self) -> int:
        return len(self.betas)


@functools.lru_cache(maxsize=8)
def make_schedule(
    kind: Literal["cosine", "linear"] = "cosine",
    timesteps: int = TIMESTEPS,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> Schedule:
    """The schedule of `timesteps` steps: "cosine" (abar_t = f(t) / f(0), f(t) = cos^2(pi/2 (t/T + s)
    / (1 + s)), s = 0.008, each beta at most 0.999) or "linear" (betas evenly from `beta_start` to
    `beta_end`). Cached: the same arguments give the same (read-only) tensors."""
    if kind == "linear":
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    elif kind == "cosine":
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)
    else:
        raise ValueError(f"schedule kind must be 'cosine' or 'linear', got {kind!r}")
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, dim=0)])
    return Schedule(alpha_bar, betas)


def _alpha_bar(schedule: Schedule, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
    """abar_t as float32 broadcastable against `like` [B, ...], for t an int or int64 [B]."""
    values = schedule.alpha_bar[torch.as_tensor(t).long().cpu()].to(like.device, torch.float32)
    return values.reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(
    x0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor, schedule: Schedule | None = None
) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise: x0 and noise float32 [B, C, H, W], t an int
    or int64 [B] in 0..T; the schedule defaults to `make_schedule()`."""
    alpha_bar = _alpha_bar(schedule or make_schedule(), t, x0)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise


def _clean_and_noise(
    output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction: Prediction
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's output read as (x0 estimate, noise estimate) at x_t with abar_t `alpha_bar`."""
    if prediction == "x0":
        return output, (x_t - alpha_bar.sqrt() * output) / (1 - alpha_bar).sqrt()
    if prediction == "noise":
        return (x_t - (1 - alpha_bar).sqrt() * output) / alpha_bar.sqrt(), output
    raise ValueError(f"prediction must be 'noise' or 'x0', got {prediction!r}")


def grid_boxes(size: tuple[int, int], patch_size: int = PATCH_SIZE, stride: int | None = None) -> list[Box]:
    """pDDPM's grid of patches over an (H, W) image, row by row: corners every `stride` pixels
    (default: `patch_size`, no overlap) from 0, each box cut at the image's edge."""
    stride = stride or patch_size
    height, width = size
    return [
        (top, left, min(top + patch_size, height), min(left + patch_size, width))
        for top in range(0, height, stride)
        for left in range(0, width, stride)
    ]


def _box_masks(boxes: Sequence[Box], size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """bool [len(boxes), 1, H, W], True inside each box."""
    masks = torch.zeros(len(boxes), 1, *size, dtype=torch.bool, device=device)
    for index, (top, left, bottom, right) in enumerate(boxes):
        masks[index, :, top:bottom, left:right] = True
    return masks


@dataclass(frozen=True)
class TrainingDraw:
    """The random half of one training step: `t` int64 [B] in 1..T, `noise` float32 [B, C, H, W],
    `mask` bool [B, 1, H, W] (the noised region: all of it, or one pDDPM grid patch) or None."""

    t: torch.Tensor
    noise: torch.Tensor
    mask: torch.Tensor | None


def draw_training(
    shape: tuple[int, int, int, int],
    generator: torch.Generator,
    timesteps: int = TIMESTEPS,
    noise_kind: NoiseKind = "simplex",
    patch_size: int | None = None,
) -> TrainingDraw:
    """A uniform step in 1..T per image, its noise and, with `patch_size`, one grid patch per image."""
    t = torch.randint(1, timesteps + 1, (shape[0],), generator=generator)
    drawn = noise(shape, noise_kind, generator)
    if patch_size is None:
        return TrainingDraw(t, drawn, None)
    boxes = grid_boxes(shape[2:], patch_size)
    chosen = torch.randint(len(boxes), (shape[0],), generator=generator)
    return TrainingDraw(t, drawn, _box_masks(boxes, shape[2:], torch.device("cpu"))[chosen])


def loss_at(
    denoiser: Denoise,
    x0: torch.Tensor,
    draw: TrainingDraw,
    condition: torch.Tensor | None = None,
    schedule: Schedule | None = None,
    prediction: Prediction = PREDICTION,
    loss: Literal["l1", "l2"] = LOSS,
) -> torch.Tensor:
    """The training loss of `denoiser` on clean `x0` [B, C, H, W] with `draw` (scalar float32): the
    mean L1 or L2 error of its prediction (noise or x0) over the noised pixels. With a patch mask
    the rest of the image is given clean, as pDDPM trains."""
    device = x0.device
    t, drawn = draw.t.to(device), draw.noise.to(device)
    x_t = q_sample(x0, t, drawn, schedule)
    if draw.mask is not None:
        x_t = torch.where(draw.mask.to(device), x_t, x0)
    output = denoiser(x_t, t, condition)
    error = output - (x0 if prediction == "x0" else drawn)
    error = error.abs() if loss == "l1" else error.square()
    if draw.mask is None:
        return error.mean()
    weight = draw.mask.to(device).expand_as(error).to(error.dtype)
    return (error * weight).sum() / weight.sum()


def training_loss(
    denoiser: Denoise,
    x0: torch.Tensor,
    generator: torch.Generator,
    condition: torch.Tensor | None = None,
    schedule: Schedule | None = None,
    noise_kind: NoiseKind = "simplex",
    prediction: Prediction = PREDICTION,
    loss: Literal["l1", "l2"] = LOSS,
    patch_size: int | None = None,
) -> torch.Tensor:
    """`loss_at` with a draw (step, noise, pDDPM patch with `patch_size`) from `generator`."""
    schedule = schedule or make_schedule()
    draw = draw_training(tuple(x0.shape), generator, schedule.timesteps, noise_kind, patch_size)
    return loss_at(denoiser, x0, draw, condition, schedule, prediction, loss)


def _reverse(
    denoiser: Denoise,
    x_t: torch.Tensor,
    t_start: int,
    steps: int | None,
    noise_kind: NoiseKind,
    generator: torch.Generator,
    condition: torch.Tensor | None,
    schedule: Schedule,
    prediction: Prediction,
    clean: torch.Tensor,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """From x_t at step t_start back to step 0. steps=None: ancestral DDPM, every step, fresh noise
    of `noise_kind` at each (DDIM with eta = 1); an int: deterministic DDIM (eta = 0) over `steps`
    evenly spaced steps. Outside `mask` (bool, broadcast against x_t; None: nowhere) the image
    is `clean` at every step."""
    if steps is None:
        times, eta = list(range(t_start, -1, -1)), 1.0
    else:
        if not 1 <= steps <= t_start:
            raise ValueError(f"steps must be in 1..t_start ({t_start}), got {steps}")
        times, eta = [t_start * (steps - index) // steps for index in range(steps + 1)], 0.0
    x = x_t
    for now, after in zip(times[:-1], times[1:]):
        alpha_now = _alpha_bar(schedule, now, x)
        alpha_after = _alpha_bar(schedule, after, x)
        t = torch.full((x.shape[0],), now, dtype=torch.long, device=x.device)
        clean_estimate, noise_estimate = _clean_and_noise(denoiser(x, t, condition), x, alpha_now, prediction)
        sigma = eta * ((1 - alpha_after) / (1 - alpha_now) * (1 - alpha_now / alpha_after)).sqrt()
        x = alpha_after.sqrt() * clean_estimate + (1 - alpha_after - sigma**2).clamp(min=0).sqrt() * noise_estimate
        if eta > 0 and after > 0:
            x = x + sigma * noise(tuple(x.shape), noise_kind, generator, x.device)
        if mask is not None:
            x = torch.where(mask, x, clean)
    return x


@torch.no_grad()
def reconstruct(
    denoiser: Denoise,
    image: torch.Tensor,
    t_start: int,
    steps: int | None,
    noise_kind: NoiseKind,
    generator: torch.Generator,
    condition: torch.Tensor | None = None,
    schedule: Schedule | None = None,
    prediction: Prediction = PREDICTION,
) -> torch.Tensor:
    """`image` [B, C, H, W] noised to step `t_start` with noise from `generator`, then denoised back
    to step 0: float32 [B, C, H, W]. steps=None runs the ancestral DDPM chain (t_start network
    evaluations), an int a DDIM schedule of that many evaluations; t_start=0 returns the image."""
    if t_start == 0:
        return image.clone()
    schedule = schedule or make_schedule()
    drawn = noise(tuple(image.shape), noise_kind, generator, image.device)
    x_t = q_sample(image, t_start, drawn, schedule)
    return _reverse(denoiser, x_t, t_start, steps, noise_kind, generator, condition, schedule, prediction, image, None)


@torch.no_grad()
def patched_reconstruct(
    denoiser: Denoise,
    image: torch.Tensor,
    t_start: int,
    steps: int | None,
    noise_kind: NoiseKind,
    generator: torch.Generator,
    condition: torch.Tensor | None = None,
    schedule: Schedule | None = None,
    prediction: Prediction = PREDICTION,
    patch_size: int = PATCH_SIZE,
    stride: int | None = None,
    boxes: Sequence[Box] | None = None,
) -> torch.Tensor:
    """pDDPM: each patch of `boxes` (default `grid_boxes(patch_size, stride)`) noised to `t_start`
    and denoised with the rest of the image clean, the patches' reconstructions put together
    (averaged where they overlap; the image itself outside every box): float32 [B, C, H, W]. One
    noise field per image serves all its patches; the patches run as one batch of len(boxes) x B."""
    if t_start == 0:
        return image.clone()
    schedule = schedule or make_schedule()
    batch, size = image.shape[0], tuple(image.shape[2:])
    masks = _box_masks(boxes if boxes is not None else grid_boxes(size, patch_size, stride), size, image.device)
    patches = masks.shape[0]
    mask = masks.repeat_interleave(batch, dim=0)  # [P * B, 1, H, W], patch-major
    clean = image.repeat(patches, 1, 1, 1)
    drawn = noise(tuple(image.shape), noise_kind, generator, image.device).repeat(patches, 1, 1, 1)
    x_t = torch.where(mask, q_sample(clean, t_start, drawn, schedule), clean)
    repeated = None if condition is None else condition.repeat(patches, *([1] * (condition.ndim - 1)))
    output = _reverse(denoiser, x_t, t_start, steps, noise_kind, generator, repeated, schedule, prediction, clean, mask)
    weight = mask.to(image.dtype).reshape(patches, batch, 1, *size)
    total = (output.reshape(patches, *image.shape) * weight).sum(dim=0)
    covered = weight.sum(dim=0)
    return torch.where(covered > 0, total / covered.clamp(min=1), image)


def gaussian_filter(scores: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of [B, 1, H, W] with standard deviation `sigma` pixels (kernel cut at
    3 sigma, replicate padding)."""
    half = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-half, half + 1, dtype=scores.dtype, device=scores.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    padded = functional.pad(scores, [half] * 4, mode="replicate")
    rows = functional.conv2d(padded, kernel.reshape(1, 1, -1, 1))
    return functional.conv2d(rows, kernel.reshape(1, 1, 1, -1))


def network_evaluations(t_start: int, steps: int | None, patches: int = 1, draws: int = 1) -> int:
    """Network evaluations of one image's map: per draw `steps` (DDIM) or `t_start` (ancestral DDPM),
    times pDDPM's patches, times the ensemble's draws."""
    return (t_start if steps is None else steps) * patches * draws


@torch.no_grad()
def residual_map(
    denoiser: Denoise,
    image: torch.Tensor,
    t_start: int | Sequence[int],
    steps: int | None,
    noise_kind: NoiseKind,
    generator: torch.Generator,
    n: int = 1,
    condition: torch.Tensor | None = None,
    schedule: Schedule | None = None,
    prediction: Prediction = PREDICTION,
    patch_size: int | None = None,
    stride: int | None = None,
    smoothing: Literal["median", "gaussian"] | None = "median",
    width: int = MEDIAN_WIDTH,
    sigma: float = 2.0,
) -> torch.Tensor:
    """The anomaly map of `image` [B, C, H, W]: float32 [B, 1, H, W], |image - the mean
    reconstruction| averaged over channels, then median- (`width` pixels) or Gaussian- (`sigma`
    pixels) smoothed, or not. The mean runs over `n` noise draws at each step of `t_start` (one
    int, or several: cDDPM's `ENSEMBLE_STEPS`), patch by patch with `patch_size` (pDDPM)."""
    starts = [t_start] if isinstance(t_start, int) else list(t_start)
    rebuild = reconstruct
    if patch_size is not None:
        rebuild = functools.partial(patched_reconstruct, patch_size=patch_size, stride=stride)
    total = torch.zeros_like(image)
    for start in starts:
        for _ in range(n):
            total += rebuild(denoiser, image, start, steps, noise_kind, generator, condition, schedule, prediction)
    residual = (image - total / (len(starts) * n)).abs().mean(dim=1, keepdim=True)
    if smoothing == "median":
        return median_filter(residual, width)
    if smoothing == "gaussian":
        return gaussian_filter(residual, sigma)
    return residual
