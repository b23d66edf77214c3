"""Model checkpoints: a folder (local or URI) holding `model.pt` (state_dict) + `model.json` (the
model section, `UNetConfig`: the network's name and keyword arguments; a `model.json` written
before networks had names has no `name`: a U-Net)."""

from __future__ import annotations

import io
import json

import torch

from lightwork.config import UNetConfig
from lightwork.data import storage
from lightwork.errors import UserError
from lightwork.models.registry import build_model

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "model.json"


def save_model(model: torch.nn.Module, checkpoint_dir: str) -> None:
    """Write `model.pt` and `model.json` into `checkpoint_dir` (local path or s3:// URI)."""
    network = getattr(model, "module", model)  # unwrap DDP
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in network.state_dict().items()}, buffer)
    storage.write_bytes(storage.join(checkpoint_dir, WEIGHTS_FILE), buffer.getvalue())
    storage.write_bytes(storage.join(checkpoint_dir, CONFIG_FILE), json.dumps(network.config.to_dict()).encode())


def load_model(checkpoint_dir: str) -> torch.nn.Module:
    """The network stored in `checkpoint_dir` (`lightwork.models.build_model`), on CPU, in eval mode, fp32.

    A U-Net includes the positional encoding: feed the image [B, C, *S] (float32), get raw scores
    [B, 1, *S] (no clipping, no sigmoid).
    """
    try:
        config = UNetConfig(**json.loads(storage.read_bytes(storage.join(checkpoint_dir, CONFIG_FILE))))
        state = torch.load(
            io.BytesIO(storage.read_bytes(storage.join(checkpoint_dir, WEIGHTS_FILE))),
            map_location="cpu",
            weights_only=True,
        )
    except FileNotFoundError as error:
        raise UserError(
            f"{checkpoint_dir}: not a lightwork checkpoint ({CONFIG_FILE} + {WEIGHTS_FILE}): {error}"
        ) from error
    model = build_model(config)
    model.load_state_dict(state)
    return model.eval()
