"""The residual map of the reconstruction methods (docs/method.md section 8): tanh of the median-filtered
absolute residual, mean over channels, 2D or 3D."""

from __future__ import annotations

import torch
from torch.nn import functional

# Width of the median filter of the residual: Baur et al. filter the residual volume with a
# 5 x 5 x 5 median (their `medianFiltering`); lightwork filters each image with a 5-wide window in
# its own dims (5 x 5 on a slice, 5 x 5 x 5 on a volume).
RESIDUAL_MEDIAN = 5
MEDIAN_SLAB = 4  # planes of the first spatial axis filtered at once (a 5^3 window holds 125 values per voxel)


def median_filter(scores: torch.Tensor, width: int = RESIDUAL_MEDIAN) -> torch.Tensor:
    """The median over a `width`-wide window in every spatial dim (replicate padding), 2D or 3D:
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


def residual_scores(image: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """tanh of the median-filtered absolute residual, mean over channels: [B, C, *S] twice ->
    float32 [B, 1, *S] in [0, 1)."""
    residual = (image - reconstruction).abs().float().mean(dim=1, keepdim=True)
    return torch.tanh(median_filter(residual))
