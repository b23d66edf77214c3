"""The method of Baugh et al. (docs/method.md sections 1-5): a network trained on synthetic anomalies of the
fold's training tasks to output their soft labels, with the mean squared error; its output is the
anomaly map (scores clipped to [0, 1] where they are binned or scored)."""

from __future__ import annotations

import torch
from torch.nn import functional

from lightwork.methods.base import SYNTHETIC_ANOMALIES, Method


class SyntheticTasks(Method):
    """Loss MSE(network(image), label); map network(image); validation loss per image: the MSE of
    its map (`anomaly_map`, which a subclass may change) against its label (zero for a healthy
    image). Draws nothing."""

    trains_on = SYNTHETIC_ANOMALIES

    def loss(
        self,
        network: torch.nn.Module,
        image: torch.Tensor,
        label: torch.Tensor,
        generator: torch.Generator,
        healthy: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return functional.mse_loss(network(image), label)

    def anomaly_map(self, network: torch.nn.Module, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return network(image)

    def validate(
        self, network: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.anomaly_map(network, image, generator)
        return scores, (scores - label).pow(2).flatten(1).mean(1)
