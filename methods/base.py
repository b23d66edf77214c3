"""The interface every method implements (docs/method.md section 8) and its lookup (`config.METHODS`).

A method decides, of a fold model, what it learns from, its loss and its anomaly map; folds,
streams, Ray Train and Tune trials, ensembles, reports and packages are shared by every method:
- `trains_on`: SYNTHETIC_ANOMALIES (an image with a synthetic anomaly of the fold's training tasks
  and its soft label) or HEALTHY (the prepared image as it is, label all zero: the stream
  synthesises no anomaly for its training);
- `loss`: the training loss of a batch, given with `healthy`, the clean image each training image
  was made from, when the method `needs_healthy` (the stream adds it to its training batches then,
  None otherwise);
- `anomaly_map`: a trained network's map of an image batch, float32 [B, 1, *S] in [0, 1], the
  higher the more anomalous (inference, ensembles and packages call it);
- `validate`: that map of a validation image with its per-image validation loss, in one pass;
- `threshold_on_healthy`: whether the mask's threshold (`train.threshold_fpr`) is set at that
  false-positive rate of the healthy validation images' voxels alone (as reconstruction methods set
  theirs), or of every normal voxel (label 0) of the validation pairs.
Images (`healthy` too) are float32 [B, C, *S], labels float32 [B, 1, *S]. A method may run the
network more than once per call. Its random draws come from the `torch.Generator` (on the CPU) it
is given, seeded from the run seed (`RunConfig.seed`) by the loop and by inference, so that a map
depends on the image, the weights and the seed only.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod

import torch

from lightwork.config import METHODS, MethodSection
from lightwork.errors import UserError

SYNTHETIC_ANOMALIES, HEALTHY = "synthetic anomalies", "healthy images"


class Method(ABC):
    """One method, built from the run's method section (`MethodSection`); see the module docstring."""

    trains_on: str = SYNTHETIC_ANOMALIES
    threshold_on_healthy: bool = False
    needs_healthy: bool = False

    def __init__(self, section: MethodSection) -> None:
        self.section = section

    @property
    def training_columns(self) -> tuple[str, ...]:
        """The columns of its training batches: `image`, `label` and, when it `needs_healthy`, `healthy`."""
        return ("image", "label", "healthy") if self.needs_healthy else ("image", "label")

    @abstractmethod
    def loss(
        self,
        network: torch.nn.Module,
        image: torch.Tensor,
        label: torch.Tensor,
        generator: torch.Generator,
        healthy: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The training loss (a scalar tensor) of `image` [B, C, *S] with `label` [B, 1, *S] and, for
        a method that `needs_healthy`, `healthy` [B, C, *S] (the image before its anomaly)."""

    @abstractmethod
    def anomaly_map(self, network: torch.nn.Module, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The anomaly map float32 [B, 1, *S] in [0, 1] of `image` [B, C, *S]."""

    @abstractmethod
    def validate(
        self, network: torch.nn.Module, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(`anomaly_map` of validation `image` [B, C, *S], its validation loss per image [B]);
        `label` [B, 1, *S] is the synthetic anomaly's soft label, all zero for a healthy image."""


def get_method(section: MethodSection) -> Method:
    """The method `section.name` (registered in METHODS) built from `section`; an unknown name
    raises UserError naming the known ones."""
    if section.name not in METHODS:
        raise UserError(f"method.name: {section.name!r} is not allowed (one of {', '.join(METHODS)})")
    module, _, attribute = METHODS[section.name].partition(":")
    return getattr(importlib.import_module(module), attribute)(section)
