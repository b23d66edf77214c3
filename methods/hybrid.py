"""The hybrid methods (docs/method.md section 8): a reconstructor and a U-Net of [image, reconstruction]
(`lightwork.models.hybrid`), trained together on the synthetic anomalies of the fold's training
tasks, as DRAEM trains its pair and SADM its diffusion variant.

- "hybrid" (`Hybrid`): the autoencoder learns to give back the clean image from the anomalous
  one, with the autoencoder method's L1; the U-Net learns the soft label from [image,
  reconstruction] with the synthetic-task method's MSE (the reconstruction detached).
- "hybrid_ddpm" (`DiffusionHybrid`, 2D): the denoiser learns the clean images with the ddpm
  method's loss (`lightwork.models.diffusion.training_loss`, simplex noise); the U-Net learns the
  soft label from [image, its ddpm reconstruction] (noised to T_START, one network evaluation back,
  as the ddpm method's map).
The loss is the sum of the two terms. The map is the U-Net's output (raw scores [B, 1, *S], clipped
to [0, 1] where they are binned or scored, as the synthetic-task method's); validation as
`SyntheticTasks`. A map costs one autoencoder and one U-Net evaluation ("hybrid"), or one denoiser
and one U-Net evaluation ("hybrid_ddpm", its draws from the generator given).
"""

from __future__ import annotations

import torch
from torch.nn import functional

from lightwork.methods.diffusion import NOISE, REVERSE_STEPS
from lightwork.methods.synthetic import SyntheticTasks
from lightwork.models.diffusion import T_START, reconstruct, training_loss


class Hybrid(SyntheticTasks):
    """Loss L1(reconstruction, healthy) + MSE(scores, label); map: the U-Net's scores. Draws nothing."""

    needs_healthy = True

    def loss(
        self,
        network: torch.nn.Module,
        image: torch.Tensor,
        label: torch.Tensor,
        generator: torch.Generator,
        healthy: torch.Tensor | None = None,
    ) -> torch.Tensor:
        reconstruction, scores = network(image)
        return functional.l1_loss(reconstruction, healthy) + functional.mse_loss(scores, label)

    def anomaly_map(self, network: torch.nn.Module, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return network(image)[1]


class DiffusionHybrid(SyntheticTasks):
    """Loss: the ddpm training loss of the denoiser on `healthy` + MSE(scores, label), one pass of
    the network with grad (the scores are taken from it); map: the U-Net's scores of [image, its
    ddpm reconstruction]."""

    needs_healthy = True

    def _reconstruction(
        self, network: torch.nn.Module, image: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """The ddpm method's reconstruction of `image` [B, C, H, W]: noised to T_START, then
        REVERSE_STEPS network evaluations back (no grad)."""

        def denoise(x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
            return network(x_t, t)[0]

        return reconstruct(denoise, image, T_START, REVERSE_STEPS, NOISE, generator)

    def loss(
        self,
        network: torch.nn.Module,
        image: torch.Tensor,
        label: torch.Tensor,
        generator: torch.Generator,
        healthy: torch.Tensor | None = None,
    ) -> torch.Tensor:
        reconstruction = self._reconstruction(network, image, generator)
        scores = []

        def denoise(x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
            denoised, pair_scores = network(x_t, t, image, reconstruction)
            scores.append(pair_scores)
            return denoised

        denoiser_loss = training_loss(denoise, healthy, generator, noise_kind=NOISE)
        return denoiser_loss + functional.mse_loss(scores[0], label)

    def anomaly_map(self, network: torch.nn.Module, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return network(image=image, reconstruction=self._reconstruction(network, image, generator))[1]
