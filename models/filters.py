"""Smoothing of anomaly maps shared by the reconstruction methods: a median filter in 2D or 3D."""

from __future__ import annotations

import torch
from torch.nn import functional

MEDIAN_SLAB = 4  # planes of the first spatial axis filtered at once (a 5^3 window holds 125 values per voxel)


def median_filter(scores: torch.Tensor, width: int) -> torch.Tensor:
    """The median over a `width`-wide window (odd) in every spatial dim, replicate padding, 2D or 3D:
    float32 [B, 1, *S] -> [B, 1, *S]."""
    dims, half = scores.ndim - 2, width // 2
    padded = functional.pad(scores, [half] * (2 * dims), mode="replicate")
    filtered = torch.empty_like(scores)
    for start in range(0, scores.shape[2], MEDIAN_SLAB):
        windows = padded[:, :, start : start + MEDIAN_SLAB + 2 * half]
        for axis in range(dims):
            windows = windows.unfold(2 + axis, width, 1)
        filtered[:, :, start : start + MEDIAN_SLAB] = windows.flatten(-dims).median(dim=-1).values
    return filtered
