"""lightwork.methods: what a fold model learns from, its loss and its anomaly map (`Method`), by `method.name`."""

from lightwork.methods.base import HEALTHY, SYNTHETIC_ANOMALIES, Method, get_method

__all__ = ["HEALTHY", "SYNTHETIC_ANOMALIES", "Method", "get_method"]
