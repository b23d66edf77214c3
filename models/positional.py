"""Positional-encoding input channels of the method (docs/method.md section 4).

For an image of spatial shape S (D = len(S) dims) the encoding has D + 64 channels:
- D coordinate channels, channel d = linspace(-1, 1, S_d) broadcast along axis d;
- 64 random Fourier channels: B = 12 * N(0, 1) of shape [32, D] drawn from
  `torch.Generator().manual_seed(42)`; coordinates x_d = linspace(0, 1, S_d, endpoint=False);
  channels = [sin(2 pi B x), cos(2 pi B x)] (32 each).
So a 1-channel 3D image becomes 1 + 3 + 64 = 68 input channels, a 2D image 1 + 2 + 64 = 67.
"""

from __future__ import annotations

import math

import torch
from torch import nn

FOURIER_FEATURES = 32
FOURIER_SCALE = 12.0
FOURIER_SEED = 42


def fourier_matrix(spatial_dims: int) -> torch.Tensor:
    """B = 12 * N(0, 1), float32 [32, D], from a generator seeded with 42 (deterministic)."""
    generator = torch.Generator().manual_seed(FOURIER_SEED)
    return torch.randn(FOURIER_FEATURES, spatial_dims, generator=generator) * FOURIER_SCALE


def positional_encoding(shape: tuple[int, ...]) -> torch.Tensor:
    """The encoding for spatial `shape`: float32 [D + 64, *shape]."""
    dims = len(shape)
    coordinate_axes = [torch.linspace(-1.0, 1.0, size) for size in shape]
    coordinates = torch.stack(torch.meshgrid(*coordinate_axes, indexing="ij"))  # [D, *S]
    fourier_axes = [torch.arange(size, dtype=torch.float64) / size for size in shape]  # endpoint=False
    grid = torch.stack(torch.meshgrid(*fourier_axes, indexing="ij")).reshape(dims, -1)  # [D, N]
    projected = 2 * math.pi * (fourier_matrix(dims).double() @ grid)  # [32, N]
    fourier = torch.cat([projected.sin(), projected.cos()]).float().reshape(-1, *shape)
    return torch.cat([coordinates, fourier])


class _EncodedInputConv:
    """The network's first convolution over [image, encoding] (C + D + 64 input channels).

    The encoding is the same for every sample, so its half of the convolution is computed once per
    batch: conv([x, E], W) = conv(x, W[:, :C]) + conv(E, W[:, C:]) broadcast over the batch. Same
    weights and state_dict as a plain convolution with C + D + 64 input channels, the same result up
    to float summation order, and (B - 1) / B less work on the encoding channels (their share of
    the first layer is 67 of 68 input channels). The encoding is cached per shape, device and
    dtype (not saved in the state_dict).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._encodings: dict[tuple[tuple[int, ...], torch.device, torch.dtype], torch.Tensor] = {}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image_channels = self.in_channels - len(self.kernel_size) - 2 * FOURIER_FEATURES
        shape = tuple(image.shape[2:])
        key = (shape, image.device, image.dtype)
        if key not in self._encodings:
            self._encodings[key] = positional_encoding(shape).to(device=image.device, dtype=image.dtype)[None]
        image_part = self._conv_forward(image, self.weight[:, :image_channels], None)
        return image_part + self._conv_forward(self._encodings[key], self.weight[:, image_channels:], self.bias)


class EncodedInputConv2d(_EncodedInputConv, nn.Conv2d):
    """`_EncodedInputConv` in 2D: [B, C, H, W] image -> [B, out, H', W']; in_channels = C + 2 + 64."""


class EncodedInputConv3d(_EncodedInputConv, nn.Conv3d):
    """`_EncodedInputConv` in 3D: [B, C, *S] image -> [B, out, *S']; in_channels = C + 3 + 64."""
