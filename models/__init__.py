"""lightwork.models: the U-Net with positional encoding, its presets and checkpoints."""

from lightwork.models.checkpoint import load_model, save_model
from lightwork.models.positional import positional_encoding
from lightwork.models.unet import PRESETS, UNet, UNetConfig

__all__ = ["PRESETS", "UNet", "UNetConfig", "load_model", "positional_encoding", "save_model"]
