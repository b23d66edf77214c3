"""Methods behind one interface (`lightwork.methods`): the autoencoder learns to reconstruct what it
is trained on, its map is a bounded residual, its training stream holds healthy images (every
method's run through the CLI, its report, package and predict: tests/test_methods_ablation.py)."""

from __future__ import annotations

import numpy as np
import torch

from lightwork.cli import main
from lightwork.config import METHODS, MethodSection, load_config
from lightwork.data.cases import load_case
from lightwork.demo.noise import write_noise_dataset
from lightwork.methods import HEALTHY, SYNTHETIC_ANOMALIES, get_method
from lightwork.methods.residual import RESIDUAL_MEDIAN
from lightwork.models import build_model
from lightwork.models.filters import median_filter
from lightwork.synthesis.samples import NO_TASK, BatchSynthesiser
from lightwork.training.loop import (
    DICE_BINS,
    HISTOGRAMS,
    PAIRS,
    SUM_COLUMNS,
    SUM_ROWS,
    FoldTrainer,
    validation_from_sums,
)


def autoencoder_config(*overrides: str):
    return load_config(preset="demo", overrides=["method.name=autoencoder", *overrides])


def test_the_autoencoder_reproduces_what_it_was_trained_on():
    """Trained on one healthy image alone (through FoldTrainer and the method's loss), its
    reconstruction error falls more than tenfold; its map (float32 [B, 1, *S] in [0, 1)) is low on
    that image and high on a bright square the network never saw, highest inside the square."""
    config = autoencoder_config("train.lr=3e-3", "train.warmup_steps=0", "train.flip_left_right=0")
    torch.manual_seed(0)
    network = build_model(config.model)
    method = get_method(config.method)
    trainer = FoldTrainer(network, config.train, torch.device("cpu"), method=method)
    yy, xx = np.mgrid[:16, :20]
    image = (np.sin(yy / 2.5) * np.cos(xx / 3.5))[None].astype(np.float32)
    batch = {"image": np.repeat(image[None], 2, 0), "label": np.zeros((2, 16, 20), np.float32)}
    losses = [trainer.train_step(batch)[0] for _ in range(150)]
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 10
    network.eval()
    anomalous = image.copy()
    anomalous[:, 5:9, 6:10] += 3.0
    with torch.no_grad():
        maps = method.anomaly_map(network, torch.from_numpy(np.stack([image, anomalous])), torch.Generator())
    assert maps.shape == (2, 1, 16, 20) and maps.dtype == torch.float32
    assert float(maps.min()) >= 0 and float(maps.max()) < 1
    healthy_map, anomalous_map = maps[0, 0].numpy(), maps[1, 0].numpy()
    assert anomalous_map[6:8, 7:9].mean() > 10 * healthy_map.mean()
    assert anomalous_map[6:8, 7:9].mean() > 10 * np.delete(anomalous_map, np.s_[4:10], axis=0).mean()


def test_the_autoencoders_map_is_its_filtered_residual_and_its_loss_counts_healthy_images():
    """3D: the map is tanh of the 5-wide median of the mean absolute residual (a one-voxel spike
    leaves no trace); validation's loss is the reconstruction error of the images whose label is
    all zero, 0 for the others."""
    config = load_config(preset="tiny", overrides=["method.name=autoencoder", "model.in_channels=2"])
    network = build_model(config.model).eval()
    method = get_method(config.method)
    image = torch.randn(2, 2, 9, 10, 11, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reconstruction = network(image)
        assert reconstruction.shape == image.shape
        residual = (image - reconstruction).abs().mean(1, keepdim=True)
        padded = np.pad(residual.numpy(), [(0, 0), (0, 0), (2, 2), (2, 2), (2, 2)], mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (5, 5, 5), axis=(2, 3, 4))
        expected = np.tanh(np.median(windows.reshape(*windows.shape[:5], -1), axis=-1))
        maps = method.anomaly_map(network, image, torch.Generator())
        np.testing.assert_allclose(maps.numpy(), expected, rtol=0, atol=1e-6)
        spike = torch.full((1, 1, 9, 10, 11), 0.2)
        spike[0, 0, 4, 5, 5] = 5.0
        assert torch.equal(median_filter(spike, RESIDUAL_MEDIAN), torch.full_like(spike, 0.2))
        label = torch.zeros(2, 1, 9, 10, 11)
        label[1, 0, 4, 5, 5] = 0.5
        scores, losses = method.validate(network, image, label, torch.Generator())
        assert torch.equal(scores, maps)
        assert losses[0] == (reconstruction[0] - image[0]).abs().mean() and losses[1] == 0


def test_the_median_filter_is_numpys_median_over_edge_padded_windows_in_2d_and_3d():
    generator = torch.Generator().manual_seed(3)
    for shape in ((2, 1, 9, 13), (1, 1, 9, 6, 7)):
        scores = torch.rand(shape, generator=generator)
        dims = len(shape) - 2
        padded = np.pad(scores.numpy(), [(0, 0), (0, 0)] + [(2, 2)] * dims, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (5,) * dims, axis=tuple(range(2, 2 + dims)))
        expected = np.median(windows.reshape(*shape, -1), axis=-1)
        np.testing.assert_array_equal(median_filter(scores, 5).numpy(), expected)


def test_methods_say_what_they_train_on_and_the_autoencoders_threshold_is_set_by_healthy_images():
    """The synthetic-task method's threshold counts every normal voxel of the validation pairs; the
    autoencoder's only the healthy images' (a residual also rises around an anomaly)."""
    synthetic, autoencoder = get_method(MethodSection()), get_method(MethodSection("autoencoder"))
    assert (synthetic.trains_on, synthetic.threshold_on_healthy) == (SYNTHETIC_ANOMALIES, False)
    assert (autoencoder.trains_on, autoencoder.threshold_on_healthy) == (HEALTHY, True)
    sums = torch.zeros(SUM_ROWS, SUM_COLUMNS, dtype=torch.float64)
    sums[0, PAIRS] = 1
    for kind, score_bin in ((0, 90), (1, 50), (2, 10)):  # positives, the anomalous image's normal voxels, healthy
        sums[0, HISTOGRAMS + kind * DICE_BINS + score_bin] = 100
    assert validation_from_sums(sums, 0.001, synthetic.threshold_on_healthy).dice_threshold == 0.51
    assert validation_from_sums(sums, 0.001, autoencoder.threshold_on_healthy).dice_threshold == 0.11


def test_the_training_batches_of_a_method_trained_on_healthy_images_are_the_prepared_cases(tmp_path):
    """`BatchSynthesiser(healthy_only=True)`, what the stream runs for such a method: each item is
    the prepared case (or its slice) as it is, label zero, task NO_TASK, and nothing is synthesised;
    the anomalous batch of the same items differs."""
    write_noise_dataset(str(tmp_path / "data"), (10, 12, 6), count=4)
    image_set = [(path.stem, str(path)) for path in sorted((tmp_path / "data").glob("*.npz"))]
    items = {
        "case_id": np.array([image_set[0][0], image_set[1][0]]),
        "array_uri": np.array([image_set[0][1], image_set[1][1]]),
        "epoch": np.array([3, 5]),
        "slice": np.array([2, 4]),
    }
    arguments = (0, (0, 2, 3, 4), image_set, (), 5.0)
    healthy = BatchSynthesiser(*arguments, validation=False, keys=True, slice_axis=2, healthy_only=True)(items)
    for row, (case_id, uri) in enumerate(image_set[:2]):
        np.testing.assert_array_equal(healthy["image"][row], load_case(uri).image[..., items["slice"][row]])
    assert not healthy["label"].any() and (healthy["task"] == NO_TASK).all()
    assert list(healthy["sample_key"]) == [f"{image_set[0][0]}[2:2]@3", f"{image_set[1][0]}[2:4]@5"]
    anomalous = BatchSynthesiser(*arguments, validation=False, keys=True, slice_axis=2)(items)
    assert anomalous["label"].any() and not np.array_equal(anomalous["image"], healthy["image"])


def test_a_bad_method_name_is_one_line(capsys):
    assert main(["train", "--config", "demo", "--set", "method.name=vae", "--print-config"]) == 2
    assert capsys.readouterr().err == (
        f"lightwork train: method.name: 'vae' is not allowed (one of {', '.join(METHODS)})\n"
    )
