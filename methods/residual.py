"""The residual map of the reconstruction methods (docs/method.md section 8): tanh of the median-filtered
absolute residual, mean over channels, 2D or 3D."""

from __future__ import annotations

import torch

from lightwork.models.filters import median_filter

# Width of the median filter of the residual: Baur et al. filter the residual volume with a
# 5 x 5 x 5 median (their `medianFiltering`); lightwork filters each image with a 5-wide window in
# its own dims (5 x 5 on a slice, 5 x 5 x 5 on a volume).
RESIDUAL_MEDIAN = 5


def residual_scores(image: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """tanh of the median-filtered absolute residual, mean over channels: [B, C, *S] twice ->
    float32 [B, 1, *S] in [0, 1)."""
    residual = (image - reconstruction).abs().float().mean(dim=1, keepdim=True)
    return torch.tanh(median_filter(residual, RESIDUAL_MEDIAN))
