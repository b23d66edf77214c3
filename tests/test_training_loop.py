"""Schedule values, the pure-torch loop: learning, best checkpoint, early stopping, resume, the
validation figures (loss terms, binned pixel AP, per task) and selection by them."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from lightwork.config import TrainSection, load_config
from lightwork.models import PRESETS, UNet
from lightwork.training.loop import DICE_BINS, FoldTrainer, validation_from_sums
from lightwork.training.schedule import lr_factor


def test_schedule_values():
    assert lr_factor(0) == pytest.approx(0.01)
    assert lr_factor(50) == pytest.approx(0.505)
    assert lr_factor(100) == pytest.approx(1.0)
    assert lr_factor(100 + 8000) == pytest.approx(0.1)
    assert lr_factor(100 + 4000) == pytest.approx(0.1**0.5)
    assert lr_factor(100 + 16000) == pytest.approx(0.05)  # floored at lr/20
    assert lr_factor(10**6) == pytest.approx(0.05)


def batches(count, seed, size=2, shape=(8, 8, 8)):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(count * size, 1, *shape, generator=generator)
    label = (image[:, 0] > 1).float()
    return [{"image": image[i : i + size], "label": label[i : i + size]} for i in range(0, count * size, size)]


def trainer(**settings):
    torch.manual_seed(0)
    defaults = dict(lr=1e-2, warmup_steps=2, batch_size=2, max_epochs=5)
    return FoldTrainer(UNet(PRESETS["tiny"]), TrainSection(**{**defaults, **settings}), torch.device("cpu"))


def test_loss_falls_and_best_is_minimum():
    train, val = batches(6, seed=1), batches(2, seed=2)
    loop = trainer()
    seen = []
    state = loop.fit(lambda epoch: train, lambda epoch: val, seen.append)
    val_losses = [result.val_loss for result in seen]
    assert len(seen) == 5 and state.step == 30
    assert val_losses[-1] < 0.5 * val_losses[0]
    assert state.best_val_loss == min(val_losses)
    assert state.best_step == seen[val_losses.index(min(val_losses))].step
    assert [r.is_best for r in seen] == [loss == min(val_losses[: i + 1]) for i, loss in enumerate(val_losses)]


def test_validation_adds_healthy_term():
    loop = trainer()
    val = batches(1, seed=3)
    anomalous_only = loop.validate(val).loss
    healthy = {**val[0], "healthy": val[0]["image"]}
    with torch.no_grad():
        extra = loop.model.eval()(val[0]["image"]).pow(2).flatten(1).mean(1).mean()
    assert loop.validate([healthy]).loss == pytest.approx(anomalous_only + float(extra), rel=1e-5)


class Echo(torch.nn.Module):
    """Returns its input (times a unit weight): lets the Dice threshold be computed by hand."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))

    def forward(self, image):
        return image * self.weight


def toy_validation(**settings):
    """Scores 0.3 on the anomaly (2 voxels), 0.1 on 5 other voxels and 0.5 on one of the anomalous
    image; the healthy image's 8 voxels score 0: 14 negative voxels in all."""
    label = torch.zeros(1, 2, 4)
    label[0, 0, :2] = 0.7
    image = torch.full((1, 1, 2, 4), 0.1)
    image[0, 0, 0, :2] = 0.3
    image[0, 0, 1, 3] = 0.5
    loop = FoldTrainer(Echo(), TrainSection(**settings), torch.device("cpu"))
    return loop.validate([{"image": image, "label": label, "healthy": torch.zeros(1, 1, 2, 4)}])


def test_validation_dice_threshold():
    # only thresholds in (0.1, 0.3] separate the anomaly from the 0.1 voxels; the 0.5 voxel stays
    # a false positive
    result = toy_validation(threshold_fpr=None)
    assert 0.1 < result.dice_threshold <= 0.3
    assert result.dice == pytest.approx(2 * 2 / (2 * 2 + 1 + 0))


def test_validation_threshold_at_a_false_positive_rate():
    # at most 10% of the 14 negatives: above the six at 0.1 or more, one (the 0.5 voxel, 7%) may
    # stay; at most 5%: none, so above 0.5, where the anomaly is lost too
    loose, strict = toy_validation(threshold_fpr=0.1), toy_validation(threshold_fpr=0.05)
    assert loose.dice_threshold == pytest.approx(0.11) and loose.dice == pytest.approx(4 / 5)
    assert strict.dice_threshold == pytest.approx(0.51) and strict.dice == 0
    assert TrainSection().threshold_fpr == 0.001


def test_early_stopping_by_patience_in_steps():
    # lr 0 after warm-up start: the model never improves after the first validation
    loop = trainer(lr=1e-12, patience_steps=6, max_epochs=100)
    seen = []
    loop.fit(lambda epoch: batches(2, seed=1), lambda epoch: batches(1, seed=2), seen.append)
    assert all(0 <= r.val_dice_threshold < 1 and 0 <= r.val_dice <= 1 for r in seen)
    first_best = seen[0].step
    assert seen[-1].step - seen[-1].best_step >= 6
    assert len(seen) < 10 and seen[-1].best_step <= first_best + 4


def test_resume_restores_everything():
    train, val = batches(3, seed=1), batches(1, seed=2)
    straight = trainer(max_epochs=3)
    straight.fit(lambda e: train, lambda e: val)
    first = trainer(max_epochs=3)
    first.run_epoch(train, val)
    saved = first.state_dict()
    resumed = trainer(max_epochs=3)
    resumed.load_state_dict(saved)
    resumed.fit(lambda e: train, lambda e: val)
    assert resumed.state.step == straight.state.step == 9
    assert [h["val_loss"] for h in resumed.state.history] == pytest.approx(
        [h["val_loss"] for h in straight.state.history], rel=1e-5
    )
    # the history says where the run resumed: the epochs after the restore, not those before it
    assert [h["restored_from_step"] for h in resumed.state.history] == [0, 3, 3]
    assert [h["restored_from_step"] for h in straight.state.history] == [0, 0, 0]


def test_trainer_state_loads_with_weights_only(tmp_path):
    """A checkpoint's trainer state is plain tensors and containers: torch.load(weights_only=True) reads it."""
    import torch

    first = trainer(max_epochs=2)
    first.run_epoch(batches(2, seed=1), batches(1, seed=2))
    torch.save(first.state_dict(), tmp_path / "trainer.pt")
    resumed = trainer(max_epochs=2)
    resumed.load_state_dict(torch.load(tmp_path / "trainer.pt", weights_only=True))
    assert resumed.state.step == first.state.step and resumed.state.history == first.state.history
    assert resumed.flip_generator.random() == first.flip_generator.random()


def test_config_overrides_and_unknown_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: cxr\ntrain:\n  batch_size: 4\n")
    config = load_config(str(path), overrides=["train.lr=1e-3", "resources.num_workers=2"])
    assert (config.model.spatial_dims, config.train.batch_size, config.train.lr) == (2, 4, 1e-3)
    assert config.resources.num_workers == 2
    with pytest.raises(ValueError, match="unknown key 'lrr'"):
        load_config(str(path), overrides=["train.lrr=1"])


def echo_loop(**settings):
    """A loop whose model returns its input: validation scores are the images given."""
    return FoldTrainer(Echo(), TrainSection(**settings), torch.device("cpu"))


def pairs(count, seed, shape=(6, 5)):
    """`count` validation pairs of 2D images in [0, 1]: anomalous image, soft label, healthy image."""
    generator = torch.Generator().manual_seed(seed)
    label = torch.rand(count, *shape, generator=generator) * (torch.rand(count, *shape, generator=generator) > 0.7)
    image = torch.rand(count, 1, *shape, generator=generator)
    return {"image": image, "label": label, "healthy": torch.rand(count, 1, *shape, generator=generator) * 0.5}


def test_the_loss_terms_add_up_to_the_loss():
    batch = pairs(4, seed=1)
    result = echo_loop().validate([batch])
    healthy = float(batch["healthy"].pow(2).mean())
    anomalous = float((batch["image"][:, 0] - batch["label"]).pow(2).mean())
    assert result.loss_healthy == pytest.approx(healthy, rel=1e-6)
    assert result.loss_anomalous == pytest.approx(anomalous, rel=1e-6)
    assert result.loss == pytest.approx(result.loss_healthy + result.loss_anomalous, rel=1e-12)


def test_the_binned_pixel_ap():
    batch = pairs(3, seed=2)
    positive = batch["label"] > 0
    fraction = float(positive.sum()) / (2 * positive.numel())  # the healthy images' voxels are all negative
    perfect = {**batch, "image": positive[:, None].float(), "healthy": torch.zeros_like(batch["healthy"])}
    assert echo_loop().validate([perfect]).pixel_ap == 1.0
    constant = {
        **batch,
        "image": torch.full_like(batch["image"], 0.42),
        "healthy": torch.full_like(batch["image"], 0.42),
    }
    assert echo_loop().validate([constant]).pixel_ap == pytest.approx(fraction, rel=1e-12)
    # Scores at bin centres lose nothing to the binning: the AP is scikit-learn's.
    generator = torch.Generator().manual_seed(3)
    centred = {
        **batch,
        "image": (torch.randint(0, DICE_BINS, batch["image"].shape, generator=generator) + 0.5) / DICE_BINS,
        "healthy": (torch.randint(0, DICE_BINS // 2, batch["image"].shape, generator=generator) + 0.5) / DICE_BINS,
    }
    truth = np.concatenate([positive.flatten().numpy(), np.zeros(positive.numel(), bool)])
    scores = np.concatenate([centred["image"].flatten().numpy(), centred["healthy"].flatten().numpy()])
    assert echo_loop().validate([centred]).pixel_ap == pytest.approx(average_precision_score(truth, scores), rel=1e-9)
    assert math.isnan(echo_loop().validate([{**batch, "label": torch.zeros_like(batch["label"])}]).pixel_ap)


def test_figures_per_task_and_summed_over_workers():
    batch = {**pairs(4, seed=4), "task": torch.tensor([2, 3, 2, 3], dtype=torch.int8)}
    result = echo_loop().validate([batch])
    assert sorted(result.by_task) == [2, 3]
    for task in (2, 3):
        alone = {key: value[batch["task"] == task] for key, value in batch.items() if key != "task"}
        expected = echo_loop().validate([alone])
        figures = result.by_task[task]
        assert (figures.loss, figures.loss_healthy, figures.loss_anomalous, figures.pixel_ap) == pytest.approx(
            (expected.loss, expected.loss_healthy, expected.loss_anomalous, expected.pixel_ap), rel=1e-9
        )
    # Two workers' sums, added, give the figures of all their batches (what DDP's all-reduce does).
    halves = [{key: value[:2] for key, value in batch.items()}, {key: value[2:] for key, value in batch.items()}]
    sums = []
    keep = echo_loop()
    keep.sum_over_workers = lambda worker: sums.append(worker.clone()) or worker
    for half in halves:
        keep.validate([half])
    combined = validation_from_sums(sums[0] + sums[1], keep.settings.threshold_fpr)
    assert (combined.loss, combined.pixel_ap, combined.dice_threshold) == pytest.approx(
        (result.loss, result.pixel_ap, result.dice_threshold), rel=1e-12
    )
    assert sorted(combined.by_task) == [2, 3]
    assert combined.by_task[3].pixel_ap == pytest.approx(result.by_task[3].pixel_ap, rel=1e-12)
    # The epoch's metrics are flat scalars, per task as val_*_task{t}.
    loop = echo_loop(lr=1e-12, max_epochs=1)
    metrics = loop.run_epoch([{"image": batch["image"], "label": batch["label"]}], [batch]).metrics()
    assert metrics["val_pixel_ap_task2"] == pytest.approx(result.by_task[2].pixel_ap, rel=1e-6)
    assert {"val_loss_task3", "val_loss_healthy_task3", "val_loss_anomalous_task3"} <= set(metrics)
    assert all(isinstance(value, (int, float, bool)) for value in metrics.values())


def diverging_epochs():
    """Validation batches of two epochs: the first ranks the anomalies perfectly at a high loss,
    the second scores a constant close to every target (a lower loss, AP = the positive fraction)."""
    batch = pairs(3, seed=5)
    positive = (batch["label"] > 0)[:, None].float()
    ranked = {**batch, "image": 0.6 + 0.4 * positive, "healthy": torch.full_like(positive, 0.5)}
    flat = {**batch, "image": torch.full_like(positive, 0.05), "healthy": torch.full_like(positive, 0.05)}
    return [[ranked], [flat]]


@pytest.mark.parametrize("select_by, best_epoch", [("val_loss", 2), ("val_pixel_ap", 1)])
def test_the_best_epoch_follows_select_by(select_by, best_epoch):
    epochs = diverging_epochs()
    loop = echo_loop(lr=1e-12, max_epochs=2, select_by=select_by)
    train = [{"image": torch.zeros(1, 1, 6, 5), "label": torch.zeros(1, 6, 5)}]
    seen = []
    loop.fit(lambda epoch: train, lambda epoch: epochs[epoch], seen.append)
    first, second = seen
    assert first.val_pixel_ap == 1.0 > second.val_pixel_ap and first.val_loss > second.val_loss
    assert [r.is_best for r in seen] == [True, best_epoch == 2]
    best = seen[best_epoch - 1]
    assert (loop.state.best_step, loop.state.best_val_loss, loop.state.best_val_pixel_ap) == (
        best.step,
        best.val_loss,
        best.val_pixel_ap,
    )


def test_a_checkpoint_from_before_the_pixel_ap_resumes():
    """Checkpoints written before the new figures hold loop state and history without them."""
    train, val = batches(2, seed=1), batches(1, seed=2)
    first = trainer(max_epochs=3)
    first.run_epoch(train, val)
    saved = first.state_dict()
    new_keys = {"best_val_pixel_ap", "val_loss_healthy", "val_loss_anomalous", "val_pixel_ap"}
    saved["loop"] = {key: value for key, value in saved["loop"].items() if key not in new_keys}
    saved["loop"]["history"] = [
        {k: v for k, v in entry.items() if k not in new_keys} for entry in saved["loop"]["history"]
    ]
    resumed = trainer(max_epochs=3)
    resumed.load_state_dict(saved)
    assert resumed.state.best_val_pixel_ap == -math.inf and resumed.state.best_val_loss == first.state.best_val_loss
    resumed.fit(lambda e: train, lambda e: val)
    assert resumed.state.epoch == 3 and len(resumed.state.history) == 3
