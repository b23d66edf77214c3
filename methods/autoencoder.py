"""The autoencoder baseline (docs/method.md section 8): a network that reconstructs its input
(`lightwork.models.autoencoder.Autoencoder`) trained on healthy images only, with the mean
absolute error (Baur et al. 2021's L1); its map is the absolute residual, mean over channels,
median-filtered as Baur et al. filter theirs and squashed into [0, 1) by tanh (monotone: AP and
AUROC are those of the filtered residual)."""

from __future__ import annotations

import torch
from torch.nn import functional

from lightwork.methods.base import HEALTHY, Method
from lightwork.methods.residual import residual_scores


class Reconstruction(Method):
    """Loss: mean |network(image) - image| over healthy images; map: `residual_scores`; validation
    loss per image: its mean absolute reconstruction error when its label is all zero (a healthy
    image), 0 for an image with an anomaly (it never trains on one); the mask's threshold is set on
    the healthy validation images' voxels. Draws nothing."""

    trains_on = HEALTHY
    threshold_on_healthy = True

    def loss(
        self,
        network: torch.nn.Module,
        image: torch.Tensor,
        label: torch.Tensor,
        generator: torch.Generator,
        healthy: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return functional.l1_loss(network(image), image)

    def anomaly_map(self, network: torch.nn.Module, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return residual_scores(image, network(image))

    def validate(
        self, network: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        reconstruction = network(image)
        healthy = label.flatten(1).amax(1) <= 0
        error = (reconstruction - image).abs().float().flatten(1).mean(1)
        return residual_scores(image, reconstruction), torch.where(healthy, error, torch.zeros_like(error))
