"""The training loop of one fold model, pure torch (no Ray): it consumes any iterables of batches.

Batches are dicts of tensors (or numpy arrays):
- training: `image` float32 [B, C, *S] (augmented), `label` float32 [B, *S] or [B, 1, *S] in [0, 1]
  and, for a method that `needs_healthy`, `healthy` float32 [B, C, *S] (the image before its
  anomaly; the method's loss gets it, None without it);
- validation: `image` + `label` (the anomalous version) and, when present, `healthy` float32
  [B, C, *S] (its healthy image, label zero) and `task` int [B] (the task id of each sample).
The run's method (`lightwork.methods.Method`) gives the training loss, and per validation image its
anomaly map and validation loss (`Method.validate`; for the synthetic-task method MSE(healthy map,
0) and MSE(anomalous map, label)). Validation loss = the healthy term + the anomalous term, the
per-epoch criterion, reported with its two terms, the synthetic pixel AP of the maps, a Dice
threshold, and (with `task`) the loss terms and pixel AP per task (`Validation`). Rows without
`healthy` count as one term each. The best epoch follows train.select_by (the validation loss, or
the pixel AP). A training batch is mirrored along the data's left-right axis (image, label and
healthy image alike, `flip_axis`) with probability train.flip_left_right. Optimizer: AdamW;
schedule: `training.schedule`. On CUDA the method's calls run under bf16 autocast with
channels-last memory; on CPU they are exact fp32.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from lightwork.anomalies.registry import TASK_COUNT
from lightwork.config import SELECT_BY, MethodSection, TrainSection
from lightwork.methods import Method, get_method
from lightwork.training.schedule import make_scheduler


@dataclass
class EpochResult:
    """Metrics of one epoch. Times in seconds; `data_wait_share` = time waiting for batches / epoch time.

    val_*: the epoch's `Validation` (loss = loss_healthy + loss_anomalous, pixel AP, Dice);
    val_by_task: the same loss terms and pixel AP per validation task id t present in the batches,
    flat: "val_loss_task{t}", "val_loss_healthy_task{t}", "val_loss_anomalous_task{t}",
    "val_pixel_ap_task{t}". best_*: the figures of the best epoch so far (train.select_by).
    """

    epoch: int
    step: int
    train_loss: float
    val_loss: float
    val_loss_healthy: float
    val_loss_anomalous: float
    val_pixel_ap: float
    val_dice_threshold: float
    val_dice: float
    lr: float
    samples: int
    epoch_seconds: float
    data_wait_share: float
    best_val_loss: float
    best_val_pixel_ap: float
    best_step: int
    is_best: bool
    stop: bool
    restored_from_step: int = 0  # the step of the checkpoint this run resumed from (0: it never resumed)
    val_by_task: dict[str, float] = field(default_factory=dict)

    def metrics(self) -> dict[str, float | int | bool]:
        """Flat scalars (what Ray's `train.report` takes and the history keeps): the fields, with
        `val_by_task`'s entries in its place."""
        flat = asdict(self)
        flat.update(flat.pop("val_by_task"))
        return flat


@dataclass
class LoopState:
    """Everything besides model/optimizer/scheduler needed to resume: counters, best-so-far, history.

    best_val_loss / best_val_pixel_ap: the validation figures of the best epoch (train.select_by),
    best_step its step. Checkpoints written before the pixel AP lack best_val_pixel_ap (-inf then).
    """

    epoch: int = 0
    step: int = 0
    best_val_loss: float = math.inf
    best_val_pixel_ap: float = -math.inf
    best_step: int = 0
    history: list[dict] = field(default_factory=list)
    restored_from_step: int = 0


def as_tensor(value, device: torch.device) -> torch.Tensor:
    tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
    return tensor.to(device=device, dtype=torch.float32, non_blocking=True)


def _match_label(image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Label [B, *S] -> [B, 1, *S], the shape of the model output for `image` [B, C, *S]."""
    return label.unsqueeze(1) if label.ndim == image.ndim - 1 else label


DICE_BINS = 100  # validation Dice and pixel AP are evaluated at score thresholds 0.00, 0.01, ..., 0.99
# One row of validation sums: the sums over pairs of the healthy and of the anomalous loss terms,
# the pair count, then score counts by bin (DICE_BINS each) of the positive voxels (label > 0),
# of the other voxels of the anomalous images, and of the healthy images' voxels.
HEALTHY, ANOMALOUS, PAIRS, HISTOGRAMS = 0, 1, 2, 3
SUM_COLUMNS = HISTOGRAMS + 3 * DICE_BINS
# Rows: 0 = every validation pair; 1 + t = the pairs of task t (batches with a `task` column).
SUM_ROWS = 1 + TASK_COUNT


@dataclass
class ValidationFigures:
    """Validation figures of a set of pairs (an anomalous image, its label and, when given, its
    healthy image). `loss` = `loss_healthy` + `loss_anomalous`: the means over pairs of the method's
    validation loss of the healthy image and of the anomalous one (the synthetic-task method's:
    MSE(healthy map, 0) and MSE(anomalous map, label)). `pixel_ap`: the synthetic
    pixel average precision, positives = the `label > 0` voxels of the anomalous images,
    negatives = their other voxels and every voxel of the healthy images, scores clipped to
    [0, 1]; binned: scores are known by their DICE_BINS bin only, so voxels of one bin tie
    (`binned_average_precision`); NaN when no voxel is positive."""

    loss: float
    loss_healthy: float
    loss_anomalous: float
    pixel_ap: float


@dataclass
class Validation(ValidationFigures):
    """Validation of one epoch: the figures over all pairs, the score threshold of the binary mask
    (`validation_from_sums`) with the Dice between `score >= threshold` and the synthetic anomaly
    masks (`label > 0`) over all validation voxels, and `by_task`: the figures of each task id the
    batches named."""

    dice_threshold: float
    dice: float
    by_task: dict[int, ValidationFigures]


def _unchanged(sums: torch.Tensor) -> torch.Tensor:
    return sums


def _at_or_above(counts: torch.Tensor) -> torch.Tensor:
    """Per bin b of voxel counts by score bin: the voxels scoring at least bin b's start."""
    return counts.flip(0).cumsum(0).flip(0)


def binned_average_precision(positives: torch.Tensor, negatives: torch.Tensor) -> float:
    """Average precision of scores known by bin: `positives` / `negatives` [DICE_BINS] are voxel
    counts per score bin. Thresholds are the bin starts, from the top: the sum over bins of the
    precision at `score >= bin start` times the recall that bin adds (average_precision_score's
    step sum, with every voxel of a bin tied). NaN without positives."""
    total = float(positives.sum())
    if total == 0:
        return math.nan
    true_positive, flagged = _at_or_above(positives), _at_or_above(positives + negatives)
    return float((true_positive / flagged.clamp(min=1) * positives).sum() / total)


def _histograms(row: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positive, negative, healthy-image-voxel) score counts by bin [DICE_BINS] of a row of
    validation sums; the negatives include the healthy images' voxels."""
    positives, normal, healthy = row[HISTOGRAMS:].view(3, DICE_BINS)
    return positives, normal + healthy, healthy


def _figures(row: torch.Tensor) -> ValidationFigures:
    """One row of validation sums (SUM_COLUMNS) -> its figures."""
    pairs = float(row[PAIRS])
    healthy, anomalous = float(row[HEALTHY]) / pairs, float(row[ANOMALOUS]) / pairs
    positives, negatives, _ = _histograms(row)
    return ValidationFigures(healthy + anomalous, healthy, anomalous, binned_average_precision(positives, negatives))


def validation_from_sums(
    sums: torch.Tensor, threshold_fpr: float | None = None, threshold_on_healthy: bool = False
) -> Validation:
    """Validation sums float64 [SUM_ROWS, SUM_COLUMNS] (summed over workers) -> Validation.

    The mask's threshold, a bin start: with `threshold_fpr`, the lowest at which at most that share
    of the negative voxels score at or above it (`train.threshold_fpr`), of the healthy images'
    voxels alone with `threshold_on_healthy` (`Method.threshold_on_healthy`) when there are any;
    None: the one maximising Dice.
    """
    if int(sums[0, PAIRS]) == 0:
        raise ValueError("validation produced no batches: the validation set is empty")
    overall = _figures(sums[0])
    positives, negatives, healthy = _histograms(sums[0])
    true_positive, false_positive = _at_or_above(positives), _at_or_above(negatives)
    false_negative = positives.sum() - true_positive
    dice = 2 * true_positive / (2 * true_positive + false_positive + false_negative).clamp(min=1)
    if threshold_fpr is None:
        chosen = int(dice.argmax())
    else:  # the rate falls with the bin; a rate no bin start reaches keeps the top bin
        rated = healthy if threshold_on_healthy and healthy.sum() > 0 else negatives
        within = (_at_or_above(rated) <= threshold_fpr * rated.sum()).nonzero()
        chosen = int(within[0]) if len(within) else DICE_BINS - 1
    by_task = {task: _figures(sums[1 + task]) for task in range(TASK_COUNT) if sums[1 + task, PAIRS] > 0}
    return Validation(**asdict(overall), dice_threshold=chosen / DICE_BINS, dice=float(dice[chosen]), by_task=by_task)


def _score_bins(score: torch.Tensor) -> torch.Tensor:
    """Model output [B, 1, *S] -> the DICE_BINS bin of each voxel's score clipped to [0, 1], int64 [B, V]."""
    return (score.float().clamp(0, 1) * DICE_BINS).long().clamp(max=DICE_BINS - 1).flatten(1)


class FoldTrainer:
    """Trains one model; `fit` runs epochs until `max_epochs`, `max_steps` or the patience ends.

    Args:
        model: maps [B, C, *S] -> [B, 1, *S].
        settings: the run's TrainSection.
        device: where to train; defaults to CUDA when available.
        sum_over_workers: sums this worker's validation sums (float64 [SUM_ROWS, SUM_COLUMNS])
            over all workers (data-parallel training passes an all-reduce; one worker keeps them).
        seed: the run seed (`RunConfig.seed`): of the flip generator, of the method's generator in
            training, and of a fresh one for each validation (the same draws every epoch).
        flip_axis: the spatial axis (0 = the first after [B, C]) a training batch is mirrored along
            with probability `settings.flip_left_right`: the data's left-right axis
            (`DataSection.left_right_axis`, which `resolve_data` fills). Needed when that
            probability is above 0.
        method: the run's method (`lightwork.methods.get_method(config.method)`); the
            synthetic-task method by default.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        settings: TrainSection,
        device: torch.device | None = None,
        sum_over_workers: Callable[[torch.Tensor], torch.Tensor] = _unchanged,
        seed: int = 0,
        flip_axis: int | None = None,
        method: Method | None = None,
    ) -> None:
        if settings.flip_left_right and flip_axis is None:
            raise ValueError(
                f"train.flip_left_right is {settings.flip_left_right} but no flip axis was given: pass the "
                "data's left-right axis (data.left_right_axis, filled by lightwork.training.resolve.resolve_data)"
            )
        self.settings = settings
        self.method = method or get_method(MethodSection())
        self.seed = seed
        self.flip_axis = flip_axis
        self.sum_over_workers = sum_over_workers
        self.device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.fast = self.device.type == "cuda" and settings.mixed_precision
        self.model = model.to(self.device)
        self.memory_format = self._memory_format()
        if self.memory_format is not None:
            self.model = self.model.to(memory_format=self.memory_format)
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
        self.generator = torch.Generator().manual_seed(seed)

    def _memory_format(self) -> torch.memory_format | None:
        """Channels-last where it was measured faster: on CUDA under bf16, and for a 3D network on
        the CPU (1.20x less CPU time per step there, benchmarks/RESULTS.md; 2D within 5%);
        None keeps the network's own layout."""
        network = getattr(self.model, "module", self.model)
        three_d = getattr(getattr(network, "config", None), "spatial_dims", 2) == 3
        if self.fast or (three_d and self.device.type == "cpu"):
            return torch.channels_last_3d if three_d else torch.channels_last
        return None

    def _call(self, compute: Callable, image: torch.Tensor, *args) -> tuple[torch.Tensor, ...]:
        """`compute(model, image, *args)` (a method's call) as float32 tensors, a tuple; on CUDA
        under bf16 autocast; `image` in the network's memory format."""
        if self.memory_format is not None:
            image = image.contiguous(memory_format=self.memory_format)
        if self.fast:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                result = compute(self.model, image, *args)
        else:
            result = compute(self.model, image, *args)
        return tuple(tensor.float() for tensor in (result if isinstance(result, tuple) else (result,)))

    def train_step(self, batch: dict) -> tuple[float, int]:
        """One optimizer step on `batch`; returns (loss, batch size)."""
        image, label = as_tensor(batch["image"], self.device), as_tensor(batch["label"], self.device)
        healthy = as_tensor(batch["healthy"], self.device) if "healthy" in batch else None
        if healthy is None and self.method.needs_healthy:
            raise ValueError(f"{type(self.method).__name__}: its training batches need `healthy` (needs_healthy)")
        if self.settings.flip_left_right and self.flip_generator.random() < self.settings.flip_left_right:
            dim = self.flip_axis - (image.ndim - 2)  # counted from the end: label is [B, *S] or [B, 1, *S]
            image, label = image.flip(dim), label.flip(dim)
            healthy = None if healthy is None else healthy.flip(dim)
        self.model.train()
        (loss,) = self._call(self.method.loss, image, _match_label(image, label), self.generator, healthy)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.state.step += 1
        return float(loss.detach()), image.shape[0]

    @torch.no_grad()
    def validate(self, batches: Iterable[dict]) -> Validation:
        """The `Validation` of `batches` (module docstring), in one pass: per pair the method's two
        loss terms, per voxel its map's score bin, summed by pair set (all; each task id) on this
        worker, then over workers (`sum_over_workers`)."""
        self.model.eval()
        generator = torch.Generator().manual_seed(self.seed)
        sums = torch.zeros(SUM_ROWS, SUM_COLUMNS, dtype=torch.float64, device=self.device)
        for batch in batches:
            image, label = as_tensor(batch["image"], self.device), as_tensor(batch["label"], self.device)
            label = _match_label(image, label)
            scores, anomalous = self._call(self.method.validate, image, label, generator)
            bins, kind = [_score_bins(scores)], [(label <= 0).flatten(1).long()]  # 0 positive, 1 normal
            if "healthy" in batch:
                healthy_scores, healthy = self._call(
                    self.method.validate, as_tensor(batch["healthy"], self.device), torch.zeros_like(label), generator
                )
                bins.append(_score_bins(healthy_scores))
                kind.append(torch.full_like(kind[0], 2))  # a healthy image's voxel
            else:
                healthy = torch.zeros_like(anomalous)
            per_pair = torch.stack([healthy, anomalous, torch.ones_like(anomalous)], 1).double()  # [B, 3]
            voxels = torch.cat(kind, 1) * DICE_BINS + torch.cat(bins, 1)  # [B, V]: 0..3*DICE_BINS-1
            rows = [torch.zeros(len(anomalous), dtype=torch.long, device=self.device)]
            if "task" in batch:
                rows.append(1 + torch.as_tensor(batch["task"], device=self.device).long())
            for row in rows:
                sums[:, :HISTOGRAMS].index_add_(0, row, per_pair)
                cells = (row[:, None] * (3 * DICE_BINS) + voxels).flatten()
                sums[:, HISTOGRAMS:] += torch.bincount(cells, minlength=SUM_ROWS * 3 * DICE_BINS).view(SUM_ROWS, -1)
        return validation_from_sums(
            self.sum_over_workers(sums), self.settings.threshold_fpr, self.method.threshold_on_healthy
        )

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
        state.epoch += 1
        figure, best = {
            "val_loss": (validation.loss, state.best_val_loss),
            "val_pixel_ap": (validation.pixel_ap, state.best_val_pixel_ap),
        }[settings.select_by]
        is_best = figure > best if SELECT_BY[settings.select_by] == "max" else figure < best
        if is_best:
            state.best_val_loss, state.best_val_pixel_ap, state.best_step = (
                validation.loss,
                validation.pixel_ap,
                state.step,
            )
        stop = (
            state.step - state.best_step >= settings.patience_steps
            or state.epoch >= settings.max_epochs
            or (settings.max_steps is not None and state.step >= settings.max_steps)
        )
        result = EpochResult(
            epoch=state.epoch,
            step=state.step,
            train_loss=float(np.mean(losses)),
            val_loss=validation.loss,
            val_loss_healthy=validation.loss_healthy,
            val_loss_anomalous=validation.loss_anomalous,
            val_pixel_ap=validation.pixel_ap,
            val_dice_threshold=validation.dice_threshold,
            val_dice=validation.dice,
            lr=self.optimizer.param_groups[0]["lr"],
            samples=samples,
            epoch_seconds=elapsed,
            data_wait_share=waiting / elapsed if elapsed > 0 else 0.0,
            best_val_loss=state.best_val_loss,
            best_val_pixel_ap=state.best_val_pixel_ap,
            best_step=state.best_step,
            is_best=is_best,
            stop=stop,
            restored_from_step=state.restored_from_step,
            val_by_task={
                f"val_{name}_task{task}": value
                for task, figures in validation.by_task.items()
                for name, value in asdict(figures).items()
            },
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
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, saved: dict) -> None:
        """Restore model, optimizer, scheduler, counters, best-so-far and history; the epochs that
        follow record the step they resumed from (`restored_from_step`)."""
        getattr(self.model, "module", self.model).load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = LoopState(**{**saved["loop"], "restored_from_step": saved["loop"]["step"]})
        self.flip_generator.bit_generator.state = saved["flip_generator"]
        if "generator" in saved:  # checkpoints written before methods had generators lack it
            self.generator.set_state(saved["generator"])
