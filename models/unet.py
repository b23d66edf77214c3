"""U-Net of the method (docs/method.md section 4), 2D and 3D from one definition.

Stage = 2 x (conv k=3 -> InstanceNorm -> GELU); downsampling = the first conv of a stage with
stride 2; decoder = linear (bi/trilinear) upsampling to the skip's shape, concatenation with
the skip, a stage; output = 1x1 conv without bias and without nonlinearity.
Upsampling goes to the skip's exact shape, so spatial sizes need not be divisible by 2^depth
(e.g. 80x112x80 with 4 downsamplings, odd sizes too).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional

from lightwork.config import UNetConfig
from lightwork.models.positional import EncodedInputConv2d, EncodedInputConv3d


def _conv(dims: int):
    return nn.Conv3d if dims == 3 else nn.Conv2d


def _norm(dims: int):
    return nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d


class ConvBlock(nn.Sequential):
    """conv(k=3, stride) -> InstanceNorm(affine) -> GELU; `conv` defaults to the plain convolution."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, stride: int = 1, conv=None) -> None:
        super().__init__(
            (conv or _conv(dims))(in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
            _norm(dims)(out_channels, affine=True),
            nn.GELU(),
        )


class Stage(nn.Sequential):
    """Two ConvBlocks; the first may downsample with stride 2 (and may be given its conv class)."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, stride: int = 1, conv=None) -> None:
        super().__init__(
            ConvBlock(dims, in_channels, out_channels, stride, conv), ConvBlock(dims, out_channels, out_channels)
        )


class UNet(nn.Module):
    """[B, in_channels, *S] float -> [B, out_channels, *S] raw scores (no nonlinearity).

    With `config.positional_encoding` the D + 64 encoding channels are added inside the model
    (by its first convolution, `EncodedInputConv*d`), so callers feed only the image.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if config.spatial_dims not in (2, 3):
            raise ValueError(f"UNet: spatial_dims must be 2 or 3, got {config.spatial_dims}")
        if len(config.features) < 2:
            raise ValueError(f"UNet: features needs at least 2 levels, got {config.features}")
        self.config = config
        dims = config.spatial_dims
        channels = config.in_channels + (dims + 64 if config.positional_encoding else 0)
        first_conv = (EncodedInputConv3d if dims == 3 else EncodedInputConv2d) if config.positional_encoding else None
        self.encoder = nn.ModuleList()
        for level, width in enumerate(config.features):
            self.encoder.append(
                Stage(dims, channels, width, stride=1 if level == 0 else 2, conv=first_conv if level == 0 else None)
            )
            channels = width
        self.decoder = nn.ModuleList()
        for skip_width in reversed(config.features[:-1]):
            self.decoder.append(Stage(dims, channels + skip_width, skip_width))
            channels = skip_width
        self.head = _conv(dims)(channels, config.out_channels, kernel_size=1, bias=False)
        self.upsample_mode = "trilinear" if dims == 3 else "bilinear"

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        expected = self.config.spatial_dims + 2
        if image.ndim != expected or image.shape[1] != self.config.in_channels:
            raise ValueError(
                f"UNet: expected [B, {self.config.in_channels}, *S] with {self.config.spatial_dims} "
                f"spatial dims, got shape {tuple(image.shape)}"
            )
        x = image
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        skips.pop()  # the bottleneck output is x itself
        for stage in self.decoder:
            skip = skips.pop()
            x = functional.interpolate(x, size=skip.shape[2:], mode=self.upsample_mode, align_corners=False)
            x = stage(torch.cat([x, skip], dim=1))
        return self.head(x)
