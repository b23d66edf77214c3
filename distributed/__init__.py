"""lightwork.distributed."""
