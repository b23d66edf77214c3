"""The training loop of one fold model, pure torch (no Ray): it consumes any iterables of batches.

Batches are dicts of tensors (or numpy arrays):
- training: `image` float32 [B, C, *S] (augmented), `label` float32 [B, *S] or [B, 1, *S] in [0, 1];
- validation: `image` + `label` (the anomalous version) and, when present, `healthy` float32
  [B, C, *S] (its healthy image, target zero). Validation loss = MSE(healthy, 0) + MSE(anomalous,
  label), the method's per-epoch criterion. Rows without `healthy` count as one term each.
A training batch is mirrored along the data's left-right axis (image and label alike, `flip_axis`)
with probability train.flip_left_right. Loss: MSE on the soft labels. Optimizer: AdamW; schedule:
`training.schedule`. On CUDA the step runs under bf16 autocast with channels-last memory; on CPU
it is exact fp32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.nn import functional

from lightwork.config import TrainSection
from lightwork.training.schedule import make_scheduler


@dataclass
class EpochResult:
    """Metrics of one epoch. Times in seconds; `data_wait_share` = time waiting for batches / epoch time."""

    epoch: int
    step: int
    train_loss: float
    val_loss: float
    val_dice_threshold: float
    val_dice: float
    lr: float
    samples: int
    epoch_seconds: float
    data_wait_share: float
    best_val_loss: float
    best_step: int
    is_best: bool
    stop: bool
    restored_from_step: int = 0  # the step of the checkpoint this run resumed from (0: it never resumed)

    def metrics(self) -> dict:
        return asdict(self)


@dataclass
class LoopState:
    """Everything besides model/optimizer/scheduler needed to resume: counters, best-so-far, history."""

    epoch: int = 0
    step: int = 0
    best_val_loss: float = math.inf
    best_step: int = 0
    history: list[dict] = field(default_factory=list)
    restored_from_step: int = 0


def as_tensor(value, device: torch.device) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
    return tensor.to(device=device, dtype=torch.float32, non_blocking=True)


def _match_label(prediction: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Label [B, *S] -> [B, 1, *S] to match the model output."""
    return label.unsqueeze(1) if label.ndim == prediction.ndim - 1 else label


DICE_BINS = 100  # validation Dice is evaluated at thresholds 0.00, 0.01, ..., 0.99


@dataclass
class Validation:
    """Validation of one epoch: `loss` (mean over pairs of healthy + anomalous MSE), and the score
    threshold maximising Dice between `score >= threshold` and the synthetic anomaly masks
    (`label > 0`) over all validation voxels, with that Dice."""

    loss: float
    dice_threshold: float
    dice: float


def _unchanged(sums: torch.Tensor) -> torch.Tensor:
    return sums


def validation_from_sums(sums: torch.Tensor) -> Validation:
    """[loss sum, pair count, DICE_BINS positive-voxel counts, DICE_BINS negative-voxel counts] -> Validation."""
    total, count = float(sums[0]), int(sums[1])
    if count == 0:
        raise ValueError("validation produced no batches: the validation set is empty")
    positives, negatives = sums[2 : 2 + DICE_BINS], sums[2 + DICE_BINS :]
    true_positive = positives.flip(0).cumsum(0).flip(0)  # voxels with score >= bin start
    false_positive = negatives.flip(0).cumsum(0).flip(0)
    false_negative = positives.sum() - true_positive
    dice = 2 * true_positive / (2 * true_positive + false_positive + false_negative).clamp(min=1)
    best = int(dice.argmax())
    return Validation(loss=total / count, dice_threshold=best / DICE_BINS, dice=float(dice[best]))


class FoldTrainer:
    """Trains one model; `fit` runs epochs until `max_epochs`, `max_steps` or the patience ends.

    Args:
        model: maps [B, C, *S] -> [B, 1, *S].
        settings: the run's TrainSection.
        device: where to train; defaults to CUDA when available.
        sum_over_workers: sums this worker's validation sums (float64 vector) over all workers
            (data-parallel training passes an all-reduce; one worker keeps them).
        seed: the run seed (`RunConfig.seed`), of the flip generator.
        flip_axis: the spatial axis (0 = the first after [B, C]) a training batch is mirrored along
            with probability `settings.flip_left_right`: the data's left-right axis
            (`DataSection.left_right_axis`, which `resolve_data` fills). Needed when that
            probability is above 0.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        settings: TrainSection,
        device: torch.device | None = None,
        sum_over_workers: Callable[[torch.Tensor], torch.Tensor] = _unchanged,
        seed: int = 0,
        flip_axis: int | None = None,
    ) -> None:
        if settings.flip_left_right and flip_axis is None:
            raise ValueError(
                f"train.flip_left_right is {settings.flip_left_right} but no flip axis was given: pass the "
                "data's left-right axis (data.left_right_axis, filled by lightwork.config.resolve_data)"
            )
        self.settings = settings
        self.flip_axis = flip_axis
        self.sum_over_workers = sum_over_workers
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.fast = self.device.type == "cuda" and settings.mixed_precision
        self.model = model.to(self.device)
        if self.fast:
            self.model = self.model.to(memory_format=self._memory_format())
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        self.scheduler = make_scheduler(
            self.optimizer,
            warmup_steps=settings.warmup_steps,
            warmup_start=settings.warmup_start,
            decay_steps=settings.decay_steps,
            decay_factor=settings.decay_factor,
            floor=settings.lr_floor,
        )
        self.state = LoopState()
        self.flip_generator = np.random.default_rng(seed)

    def _memory_format(self) -> torch.memory_format:
        network = getattr(self.model, "module", self.model)
        return torch.channels_last_3d if getattr(network.config, "spatial_dims", 2) == 3 else torch.channels_last

    def _forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.fast:
            image = image.contiguous(memory_format=self._memory_format())
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.model(image).float()
        return self.model(image)

    def train_step(self, batch: dict) -> tuple[float, int]:
        """One optimizer step on `batch`; returns (loss, batch size)."""
        image, label = as_tensor(batch["image"], self.device), as_tensor(batch["label"], self.device)
        if self.settings.flip_left_right and self.flip_generator.random() < self.settings.flip_left_right:
            dim = self.flip_axis - (image.ndim - 2)  # counted from the end: label is [B, *S] or [B, 1, *S]
            image, label = image.flip(dim), label.flip(dim)
        self.model.train()
        prediction = self._forward(image)
        loss = functional.mse_loss(prediction, _match_label(prediction, label))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.state.step += 1
        return float(loss.detach()), image.shape[0]

    @torch.no_grad()
    def validate(self, batches: Iterable[dict]) -> Validation:
        """Per pair MSE(healthy, 0) + MSE(anomalous, label), averaged; Dice threshold over all voxels."""
        self.model.eval()
        sums = torch.zeros(2 + 2 * DICE_BINS, dtype=torch.float64, device=self.device)
        for batch in batches:
            image, label = as_tensor(batch["image"], self.device), as_tensor(batch["label"], self.device)
            prediction = self._forward(image)
            label = _match_label(prediction, label)
            per_sample = (prediction - label).pow(2).flatten(1).mean(1)
            scores, anomalous = [prediction], [label > 0]
            if "healthy" in batch:
                healthy = self._forward(as_tensor(batch["healthy"], self.device))
                per_sample = per_sample + healthy.pow(2).flatten(1).mean(1)
                scores.append(healthy)
                anomalous.append(torch.zeros_like(label, dtype=torch.bool))
            sums[0] += per_sample.sum()
            sums[1] += per_sample.numel()
            score, mask = torch.cat([s.flatten() for s in scores]).float(), torch.cat([m.flatten() for m in anomalous])
            bins = (score.clamp(0, 1) * DICE_BINS).long().clamp(max=DICE_BINS - 1)
            sums[2 : 2 + DICE_BINS] += torch.bincount(bins[mask], minlength=DICE_BINS)
            sums[2 + DICE_BINS :] += torch.bincount(bins[~mask], minlength=DICE_BINS)
        return validation_from_sums(self.sum_over_workers(sums))

    def run_epoch(self, train_batches: Iterable[dict], val_batches: Iterable[dict]) -> EpochResult:
        """Train over `train_batches` (stopping early at max_steps), validate, update best-so-far."""
        settings, state = self.settings, self.state
        started = time.perf_counter()
        waiting, losses, samples = 0.0, [], 0
        iterator = iter(train_batches)
        while settings.max_steps is None or state.step < settings.max_steps:
            before = time.perf_counter()
            batch = next(iterator, None)
            waiting += time.perf_counter() - before
            if batch is None:
                break
            loss, size = self.train_step(batch)
            losses.append(loss)
            samples += size
        if not losses:
            raise ValueError("training produced no batches: the training set is empty or smaller than a batch")
        elapsed = time.perf_counter() - started
        validation = self.validate(val_batches)
        val_loss = validation.loss
        state.epoch += 1
        is_best = val_loss < state.best_val_loss
        if is_best:
            state.best_val_loss, state.best_step = val_loss, state.step
        stop = (
            state.step - state.best_step >= settings.patience_steps
            or state.epoch >= settings.max_epochs
            or (settings.max_steps is not None and state.step >= settings.max_steps)
        )
        result = EpochResult(
            epoch=state.epoch,
            step=state.step,
            train_loss=float(np.mean(losses)),
            val_loss=val_loss,
            val_dice_threshold=validation.dice_threshold,
            val_dice=validation.dice,
            lr=self.optimizer.param_groups[0]["lr"],
            samples=samples,
            epoch_seconds=elapsed,
            data_wait_share=waiting / elapsed if elapsed > 0 else 0.0,
            best_val_loss=state.best_val_loss,
            best_step=state.best_step,
            is_best=is_best,
            stop=stop,
            restored_from_step=state.restored_from_step,
        )
        state.history.append(result.metrics())
        return result

    def fit(
        self,
        train_epoch: Callable[[int], Iterable[dict]],
        val_epoch: Callable[[int], Iterable[dict]],
        on_epoch: Callable[[EpochResult], None] = lambda result: None,
    ) -> LoopState:
        """Run epochs from the current state until a stop criterion; `train_epoch(epoch)` and
        `val_epoch(epoch)` return that epoch's batches; `on_epoch` sees each result (checkpoint, report)."""
        while True:
            result = self.run_epoch(train_epoch(self.state.epoch), val_epoch(self.state.epoch))
            on_epoch(result)
            if result.stop:
                return self.state

    def state_dict(self) -> dict:
        network = getattr(self.model, "module", self.model)
        return {
            "model": network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loop": asdict(self.state),
            "flip_generator": self.flip_generator.bit_generator.state,
        }

    def load_state_dict(self, saved: dict) -> None:
        """Restore model, optimizer, scheduler, counters, best-so-far and history; the epochs that
        follow record the step they resumed from (`restored_from_step`)."""
        getattr(self.model, "module", self.model).load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = LoopState(**{**saved["loop"], "restored_from_step": saved["loop"]["step"]})
        self.flip_generator.bit_generator.state = saved["flip_generator"]
