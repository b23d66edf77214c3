"""The diffusion methods' denoiser: a 2D U-Net conditioned on the step t (and, for cDDPM, on an image).

`Denoiser(config)` maps x_t float32 [B, C, H, W] and t int64 [B] (steps, 1..T) to a tensor of
x_t's shape, the noise or the clean image as the diffusion reads it (`lightwork.models.diffusion`,
`prediction`). From `lightwork.config.UNetConfig` it uses `spatial_dims` (2 only), `in_channels`
and `features` (channels per level, level 0 first, the last the bottleneck); its output has
`in_channels` channels, and `out_channels` and `positional_encoding` are not used.

- Step embedding: sinusoids of t (`SINUSOIDS` of them, periods up to 10000 steps), then
  Linear -> SiLU -> Linear to E = 4 * features[0] (the authors' OpenAI U-Net: 4 x its width).
- Levels: a 3x3 stem, then per level a residual block (GroupNorm -> SiLU -> 3x3 conv, the
  embedding as a scale and shift of the second GroupNorm -> SiLU -> 3x3 conv, plus a 1x1 skip
  where widths differ), each level after the first behind a stride-2 3x3 conv. Decoder: bilinear
  upsampling to the skip's shape, concatenation, a residual block. Head: GroupNorm -> SiLU ->
  3x3 conv, zero-initialised. No attention, so that it trains on CPU at the demo's 32x40 slices.
- `ConditionedDenoiser` (cDDPM): an encoder of the clean image `condition` [B, C, H, W] (the
  U-Net's stages, stride 2 after the first, global average pooling, Linear to E), whose latent,
  through Linear -> SiLU -> Linear, is concatenated to the step embedding (2E), as cDDPM feeds its
  encoder's latent to its U-Net's embedding. cDDPM's encoder is a SparK-pretrained ResNet-50 with
  a 4 x 128 = 512 latent; this one is small and trained with the denoiser.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional

from lightwork.config import UNetConfig
from lightwork.models.unet import Stage

SINUSOIDS = 64
MAX_PERIOD = 10000.0
NORM_GROUPS = 8


def step_embedding(t: torch.Tensor, dims: int = SINUSOIDS) -> torch.Tensor:
    """Sinusoidal embedding of steps t [B] (any number type): float32 [B, dims], the cosines of
    t * f_k then their sines, f_k = MAX_PERIOD^(-k / (dims / 2)), k = 0 .. dims/2 - 1."""
    half = dims // 2
    frequencies = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(NORM_GROUPS, channels), channels)


class ResidualBlock(nn.Module):
    """[B, in, H, W] and an embedding [B, E] -> [B, out, H, W]: two 3x3 convs, the embedding as a
    scale and shift after the second GroupNorm, plus the input (1x1 conv where widths differ)."""

    def __init__(self, in_channels: int, out_channels: int, embedding: int) -> None:
        super().__init__()
        self.first = nn.Sequential(_norm(in_channels), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.scale_shift = nn.Sequential(nn.SiLU(), nn.Linear(embedding, 2 * out_channels))
        self.norm = _norm(out_channels)
        self.second = nn.Sequential(nn.SiLU(), nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift(embedding)[:, :, None, None].chunk(2, dim=1)
        h = self.second(self.norm(self.first(x)) * (1 + scale) + shift)
        return h + self.skip(x)


def _mlp(in_features: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, out_features), nn.SiLU(), nn.Linear(out_features, out_features))


class Denoiser(nn.Module):
    """x_t [B, in_channels, H, W], t int64 [B] (, condition) -> [B, in_channels, H, W] (2D only)."""

    conditioned = False

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if config.spatial_dims != 2:
            raise ValueError(f"model.spatial_dims: the denoiser is 2D only, got {config.spatial_dims}")
        if len(config.features) < 2:
            raise ValueError(f"model.features: the denoiser needs at least 2 levels, got {config.features}")
        self.config = config
        features, embedding = list(config.features), 4 * config.features[0]
        self.step_mlp = _mlp(SINUSOIDS, embedding)
        if self.conditioned:
            self.encoder = nn.Sequential(
                *(
                    Stage(2, width_in, width, stride=1 if level == 0 else 2)
                    for level, (width_in, width) in enumerate(zip([config.in_channels, *features[:-1]], features))
                ),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(features[-1], embedding),
            )
            self.latent_mlp = _mlp(embedding, embedding)
            embedding *= 2
        self.stem = nn.Conv2d(config.in_channels, features[0], 3, padding=1)
        self.downsample = nn.ModuleList(nn.Conv2d(width, width, 3, stride=2, padding=1) for width in features[:-1])
        self.down = nn.ModuleList(
            ResidualBlock(width_in, width, embedding)
            for width_in, width in zip([features[0], *features[:-1]], features)
        )
        self.up = nn.ModuleList(
            ResidualBlock(width_in + width, width, embedding)
            for width_in, width in zip(features[:0:-1], features[-2::-1])
        )
        self.head = nn.Sequential(
            _norm(features[0]), nn.SiLU(), nn.Conv2d(features[0], config.in_channels, 3, padding=1)
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"{type(self).__name__}: expected [B, {self.config.in_channels}, H, W], got shape {tuple(x.shape)}"
            )
        if (condition is not None) != self.conditioned:
            needs = "needs a condition image" if self.conditioned else "takes no condition"
            raise ValueError(f"{type(self).__name__}: {needs}")
        embedding = self.step_mlp(step_embedding(t.to(x.device)))
        if condition is not None:
            embedding = torch.cat([embedding, self.latent_mlp(self.encoder(condition))], dim=1)
        h, skips = self.stem(x), []
        for level, block in enumerate(self.down):
            if level > 0:
                skips.append(h)
                h = self.downsample[level - 1](h)
            h = block(h, embedding)
        for block in self.up:
            skip = skips.pop()
            h = functional.interpolate(h, size=skip.shape[2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], dim=1), embedding)
        return self.head(h)


class ConditionedDenoiser(Denoiser):
    """cDDPM's denoiser: `Denoiser` whose step embedding is joined by an encoder's latent of the
    clean image `condition` [B, in_channels, H, W] (required)."""

    conditioned = True
