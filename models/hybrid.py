"""The hybrid methods' networks (docs/method.md section 8): a reconstructor and a U-Net that scores an
image beside its reconstruction (`lightwork.methods.hybrid`).

The U-Net is `lightwork.models.unet.UNet` built from the model section with `in_channels` doubled:
it sees [image, reconstruction] concatenated on the channel axis, float32 [B, 2C, *S] (C =
`model.in_channels`, the image's channels first), and outputs raw scores [B, out_channels, *S], as
the synthetic-task U-Net does (its positional encoding included). The reconstructor is built from
the same model section (its `features`, `in_channels`, `spatial_dims`):
- `Hybrid` ("hybrid"): `lightwork.models.autoencoder.Autoencoder`, 2D and 3D;
- `DiffusionHybrid` ("hybrid_ddpm"): `lightwork.models.denoiser.Denoiser`, 2D only.
Each network is one module, so that every call a method makes goes through `forward` (a
data-parallel wrapper sees every pass).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from lightwork.config import UNetConfig
from lightwork.models.autoencoder import Autoencoder
from lightwork.models.denoiser import Denoiser
from lightwork.models.unet import UNet


def pair_unet(config: UNetConfig) -> UNet:
    """The U-Net of [image, reconstruction]: the model section's U-Net with 2 x `in_channels` inputs."""
    return UNet(dataclasses.replace(config, name="unet", in_channels=2 * config.in_channels))


class Hybrid(nn.Module):
    """An autoencoder and the U-Net of [image, its reconstruction].

    forward(image float32 [B, C, *S]) -> (reconstruction [B, C, *S], the autoencoder's output with
    its gradient; scores [B, out_channels, *S], the U-Net's raw scores of [image, reconstruction],
    the reconstruction detached: the U-Net's loss does not train the autoencoder).
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        self.reconstructor = Autoencoder(config)
        self.unet = pair_unet(config)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reconstruction = self.reconstructor(image)
        return reconstruction, self.unet(torch.cat([image, reconstruction.detach()], dim=1))


class DiffusionHybrid(nn.Module):
    """A diffusion denoiser and the U-Net of [image, its reconstruction] (2D).

    forward(x_t, t, image, reconstruction), each optional, -> (denoised, scores): `denoised` the
    denoiser's output [B', C, H, W] for x_t float32 [B', C, H, W] at steps t int64 [B']
    (`lightwork.models.denoiser.Denoiser`; None without x_t); `scores` the U-Net's raw scores
    [B, out_channels, H, W] of `image` and `reconstruction`, float32 [B, C, H, W] each (None
    without them). A training step passes all four in one call.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        self.reconstructor = Denoiser(config)
        self.unet = pair_unet(config)

    def forward(
        self,
        x_t: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        reconstruction: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        denoised = None if x_t is None else self.reconstructor(x_t, t)
        scores = None if image is None else self.unet(torch.cat([image, reconstruction], dim=1))
        return denoised, scores
