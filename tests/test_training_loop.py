"""Schedule values, the pure-torch loop: learning, best checkpoint, early stopping, resume."""

import pytest
import torch

from lightwork.config import TrainSection, load_config
from lightwork.models import PRESETS, UNet
from lightwork.training.loop import FoldTrainer
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


def test_validation_dice_threshold():
    # scores 0.3 on the anomaly, 0.1 / 0.5 elsewhere: only thresholds in (0.1, 0.3] separate
    # the anomaly from the 0.1 voxels; the 0.5 voxels (one of 8) stay false positives.
    label = torch.zeros(1, 2, 4)
    label[0, 0, :2] = 0.7
    image = torch.full((1, 1, 2, 4), 0.1)
    image[0, 0, 0, :2] = 0.3
    image[0, 0, 1, 3] = 0.5
    loop = FoldTrainer(Echo(), TrainSection(), torch.device("cpu"))
    result = loop.validate([{"image": image, "label": label, "healthy": torch.zeros(1, 1, 2, 4)}])
    assert 0.1 < result.dice_threshold <= 0.3
    assert result.dice == pytest.approx(2 * 2 / (2 * 2 + 1 + 0))


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
