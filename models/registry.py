"""Networks by name: `build_model` makes the network a model section names (`lightwork.config.NETWORKS`).

A network is a torch module class built as `Class(config)` from the model section (`UNetConfig`:
`name` and keyword arguments), keeping it as `.config` (checkpoints and packages save it); it maps
float32 [B, in_channels, *S] to what the run's method (`lightwork.methods`) makes its map from: the
U-Net to raw scores [B, out_channels, *S] (no nonlinearity), the autoencoder to its reconstruction.
"""

from __future__ import annotations

import importlib

from torch import nn

from lightwork.config import NETWORKS, UNetConfig
from lightwork.errors import UserError


def network_class(name: str) -> type[nn.Module]:
    """The class registered as `name` in NETWORKS; an unknown name raises UserError naming the known ones."""
    if name not in NETWORKS:
        raise UserError(f"model.name: {name!r} is not allowed (one of {', '.join(NETWORKS)})")
    module, _, attribute = NETWORKS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def build_model(config: UNetConfig) -> nn.Module:
    """A new (randomly initialised, torch's global generator) network of `config.name` built from `config`."""
    return network_class(config.name)(config)
