"""The diffusion methods (docs/method.md section 8): a 2D denoiser (`lightwork.models.denoiser`) trained
on healthy images to reconstruct them from partly noised input (`lightwork.models.diffusion`, whose
docstring gives the authors' figures); the map is what the reconstruction cannot reproduce.

- "ddpm" (`DDPM`): the whole image noised with simplex noise to step T_START (500 of 1000), one
  network evaluation predicts the clean image (the authors' test step).
- "pddpm" (`PatchedDDPM`, Behrendt et al. 2023): training noises one grid patch per image and
  scores the loss there; the map reconstructs patch by patch, each with the rest clean. The patch
  side is PATCH_FRACTION of the image's smaller side (the authors' 48 of 96), stride = the patch:
  a 96 x 96 slice has 4 patches, the demo's 32 x 40 slices 6 of 16 x 16 (cut at the edge).
- "cddpm" (`ConditionedDDPM`, Behrendt et al. 2024): the denoiser (`ConditionedDenoiser`) also
  sees the clean input as its condition; the map averages the reconstructions from the steps of
  ENSEMBLE_STEPS (250, 500, 750).
The map of an image float32 [B, C, H, W] is tanh of the 5-wide median of its mean absolute
residual over channels: float32 [B, 1, H, W] in [0, 1), monotone in the residual. Network
evaluations per image: 1 (ddpm), one per patch (pddpm), 3 (cddpm). Every draw (steps, noise,
patches) comes from the generator the loop or inference passes, so a map depends on the image,
the weights and the seed only.
"""

from __future__ import annotations

import torch

from lightwork.methods.base import HEALTHY, Method
from lightwork.models.diffusion import (
    ENSEMBLE_STEPS,
    MEDIAN_WIDTH,
    T_START,
    residual_map,
    training_loss,
)
from lightwork.models.filters import median_filter
from lightwork.models.simplex import NoiseKind

NOISE: NoiseKind = "simplex"  # the authors' noise (AnoDDPM's simplex)
REVERSE_STEPS = 1  # the authors' test reverse: one evaluation predicts x0 (a 1-step DDIM schedule)
PATCH_FRACTION = 0.5  # pDDPM's patch side / the image's smaller side (48 of 96)


class DDPM(Method):
    """Loss: `training_loss` (L1 of the predicted x0, t uniform in 1..1000, simplex noise) on
    healthy images; map: see the module docstring; validation loss per image: its mean absolute
    residual (unsmoothed) when its label is all zero, 0 for an image with an anomaly; the mask's
    threshold is set on the healthy validation images' voxels."""

    trains_on = HEALTHY
    threshold_on_healthy = True
    patched = False
    conditioned = False
    t_start: int | tuple[int, ...] = T_START

    def _patch_size(self, image: torch.Tensor) -> int | None:
        """pDDPM's patch side (pixels) for `image` [B, C, H, W]; None: the whole image."""
        return max(1, round(PATCH_FRACTION * min(image.shape[2:]))) if self.patched else None

    def _condition(self, image: torch.Tensor) -> torch.Tensor | None:
        return image if self.conditioned else None

    def loss(
        self,
        network: torch.nn.Module,
        image: torch.Tensor,
        label: torch.Tensor,
        generator: torch.Generator,
        healthy: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return training_loss(
            network, image, generator, self._condition(image), noise_kind=NOISE, patch_size=self._patch_size(image)
        )

    def _residual(self, network: torch.nn.Module, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The unsmoothed mean absolute residual [B, 1, H, W] of the (mean) reconstruction."""
        return residual_map(
            network,
            image,
            self.t_start,
            REVERSE_STEPS,
            NOISE,
            generator,
            condition=self._condition(image),
            patch_size=self._patch_size(image),
            smoothing=None,
        )

    def anomaly_map(self, network: torch.nn.Module, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.tanh(median_filter(self._residual(network, image, generator), MEDIAN_WIDTH))

    def validate(
        self, network: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        residual = self._residual(network, image, generator)
        healthy = label.flatten(1).amax(1) <= 0
        error = residual.flatten(1).mean(1)
        scores = torch.tanh(median_filter(residual, MEDIAN_WIDTH))
        return scores, torch.where(healthy, error, torch.zeros_like(error))


class PatchedDDPM(DDPM):
    """pDDPM: `DDPM` noising and reconstructing one grid patch at a time (module docstring)."""

    patched = True


class ConditionedDDPM(DDPM):
    """cDDPM: `DDPM` with the clean input as the denoiser's condition and the reconstructions from
    the steps of ENSEMBLE_STEPS averaged (module docstring)."""

    conditioned = True
    t_start = ENSEMBLE_STEPS
