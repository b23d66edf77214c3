"""A convolutional autoencoder, 2D and 3D (docs/method.md section 8): the network of the autoencoder
method (`lightwork.methods.autoencoder`), which makes its anomaly map from the reconstruction.

Encoder: one stage per entry of `config.features` (the U-Net's `Stage`: two conv-InstanceNorm-GELU
blocks; every stage after the first downsamples by 2 with a strided convolution); the last stage is
the bottleneck. Decoder: the widths back in reverse, each stage after a linear upsampling to the
encoder's shape at that level, with no skip connections, so that everything the reconstruction
holds passes the bottleneck; then a 1x1 convolution to `config.in_channels`. The model section's
`out_channels` and `positional_encoding` are not used.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from lightwork.config import UNetConfig
from lightwork.models.unet import Stage, _conv


class Autoencoder(nn.Module):
    """float32 [B, in_channels, *S] -> its reconstruction [B, in_channels, *S] (any S)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if config.spatial_dims not in (2, 3):
            raise ValueError(f"Autoencoder: model.spatial_dims must be 2 or 3, got {config.spatial_dims}")
        self.config = config
        dims, channels = config.spatial_dims, config.in_channels
        self.encoder = nn.ModuleList()
        for level, width in enumerate(config.features):
            self.encoder.append(Stage(dims, channels, width, stride=1 if level == 0 else 2))
            channels = width
        self.decoder = nn.ModuleList()
        for width in reversed(config.features[:-1]):
            self.decoder.append(Stage(dims, channels, width))
            channels = width
        self.head = _conv(dims)(channels, config.in_channels, kernel_size=1)
        self.upsample_mode = "trilinear" if dims == 3 else "bilinear"

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != self.config.spatial_dims + 2 or image.shape[1] != self.config.in_channels:
            raise ValueError(
                f"Autoencoder: expected [B, {self.config.in_channels}, *S] with {self.config.spatial_dims} "
                f"spatial dims, got shape {tuple(image.shape)}"
            )
        x, shapes = image, []
        for stage in self.encoder:
            shapes.append(x.shape[2:])
            x = stage(x)
        for stage, shape in zip(self.decoder, reversed(shapes[1:])):
            x = stage(functional.interpolate(x, size=shape, mode=self.upsample_mode, align_corners=False))
        return self.head(x)
