"""lightwork.data."""
