"""Learning-rate schedule of the method (docs/method.md, training), as a multiplier of the base lr.

Steps 0..warmup: linear from `warmup_start` (0.01) to 1; afterwards exponential decay by
`decay_factor` (0.1) per `decay_steps` (8000) steps, never below `floor` (1/20).
"""

from __future__ import annotations

import torch


def lr_factor(
    step: int,
    warmup_steps: int = 100,
    warmup_start: float = 0.01,
    decay_steps: int = 8000,
    decay_factor: float = 0.1,
    floor: float = 0.05,
) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return warmup_start + (1.0 - warmup_start) * step / warmup_steps
    return max(decay_factor ** ((step - warmup_steps) / decay_steps), floor)


def make_scheduler(optimizer: torch.optim.Optimizer, **schedule) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying `lr_factor(step, **schedule)`; call `.step()` after each optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, **schedule))
