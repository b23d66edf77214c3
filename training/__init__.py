"""lightwork.training."""
