"""lightwork.models."""
