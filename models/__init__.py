"""lightwork.models: the networks by name (the U-Net with positional encoding), presets and checkpoints."""

from lightwork.config import MODEL_PRESETS as PRESETS
from lightwork.config import UNetConfig
from lightwork.models.checkpoint import load_model, save_model
from lightwork.models.positional import positional_encoding
from lightwork.models.registry import build_model
from lightwork.models.unet import UNet

__all__ = ["PRESETS", "UNet", "UNetConfig", "build_model", "load_model", "positional_encoding", "save_model"]
