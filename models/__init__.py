"""lightwork.models: the U-Net with positional encoding, its presets and checkpoints."""

from lightwork.config import MODEL_PRESETS as PRESETS
from lightwork.config import UNetConfig
from lightwork.models.checkpoint import load_model, save_model
from lightwork.models.positional import positional_encoding
from lightwork.models.unet import UNet

__all__ = ["PRESETS", "UNet", "UNetConfig", "load_model", "positional_encoding", "save_model"]
