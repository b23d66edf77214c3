"""One ablation across methods (issue 32, item 5): `lightwork train --methods` trains a run per
method, every (method, fold) a trial of one Tune experiment, and `lightwork evaluate` with each
run's `--models` writes one report with the methods side by side beside the baselines; every
method so trains a fold end to end through the CLI, and its package predicts its run's maps in the
source geometry; a method that does not fit the config, or an unknown one, is one line and exit 2
before Ray starts."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightwork.cli import main
from lightwork.config import MethodSection
from lightwork.data.cases import PreparedCase, load_case, save_case
from lightwork.data.manifest import write_manifest
from lightwork.demo import smooth_noise
from lightwork.demo.noise import write_noise_dataset
from lightwork.inference.package import load_ensemble
from lightwork.models import load_model
from lightwork.models.autoencoder import Autoencoder
from lightwork.models.denoiser import ConditionedDenoiser, Denoiser
from lightwork.models.hybrid import DiffusionHybrid, Hybrid
from lightwork.models.unet import UNet
from lightwork.training import runs

# The methods trained end to end (ddpm is pddpm's network and training; its map is unit-tested),
# each with its network's name and class.
TRAINED = {
    "synthetic": ("unet", UNet),
    "autoencoder": ("autoencoder", Autoencoder),
    "pddpm": ("denoiser", Denoiser),
    "cddpm": ("conditioned_denoiser", ConditionedDenoiser),
    "hybrid": ("hybrid", Hybrid),
    "hybrid_ddpm": ("hybrid_ddpm", DiffusionHybrid),
}

SETTINGS = [  # a 2D model of the 24x24 images, one epoch; two trials at once on the session's cluster
    "model.spatial_dims=2",
    "train.max_epochs=1",
    "resources.cpus_per_worker=0.5",
    "resources.data_cpus_per_trial=0.5",
    "resources.max_concurrent_trials=2",
]


def _lesion_test_set(root) -> str:
    """Four 24x24 noise images as the training set's, three with a bright 6x6 lesion and its mask."""
    rng = np.random.default_rng(1)
    rows = []
    for index in range(4):
        image = (smooth_noise(rng, (24, 24), 2.0) * 0.2 + 1.0)[None].astype(np.float32)
        lesion = np.zeros((24, 24), np.uint8)
        lesion[8:14, 6 + index : 12 + index] = index != 3
        image[0][lesion != 0] += 1.0
        uri = str(root / f"test{index}.npz")
        save_case(uri, PreparedCase(f"test{index}", image, np.ones((24, 24), bool), lesion))
        rows.append({"case_id": f"test{index}", "array_uri": uri, "fold": 0, "has_lesion": index != 3, "status": "ok"})
    return write_manifest(str(root), rows)


def _exits_before_ray(argv: list[str]) -> tuple[list[str], str]:
    """(exit status and whether Ray was imported, stderr) of `lightwork` `argv` in a fresh process."""
    code = f"import sys; from lightwork.cli import main; status = main({argv!r}); print(status, 'ray' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return result.stdout.split(), result.stderr


@dataclasses.dataclass
class Ablation:
    """The module's one `lightwork train --methods` of every method in TRAINED (fold 0 of 1/4, one
    epoch), its console, and where its data and runs are."""

    status: int
    out: str
    tmp: Path
    data: str
    test: str

    def run(self, method: str) -> Path:
        return self.tmp / "runs" / f"abl-{method}"


@pytest.fixture(scope="module")
def ablation(ray_session, tmp_path_factory) -> Ablation:
    """One Tune experiment for every method's fold (each method end to end through the CLI, as a
    user's ablation runs): cheaper than a run per method, the Tune and Train start paid once."""
    tmp = tmp_path_factory.mktemp("ablation")
    data = write_noise_dataset(tmp / "train-data", recipe_options={"size": 24})
    test = _lesion_test_set(tmp / "test-data")
    argv = ["train", "--config", "tiny", "--data", data, "--storage", str(tmp / "runs"), "--name", "abl"]
    argv += ["--seed", "3", "--folds", "0", "--methods", ",".join(TRAINED)]
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        status = main([*argv, *[item for setting in SETTINGS for item in ("--set", setting)]])
    return Ablation(status, console.getvalue(), tmp, data, test)


@pytest.mark.slow
def test_methods_train_in_one_tune_experiment_and_compare_in_one_report(ablation, tmp_path, capsys):
    assert ablation.status == 0, ablation.out[-3000:]
    for method, (network, _) in TRAINED.items():
        name, run = f"abl-{method}", ablation.run(method)
        records = runs.read_folds(str(run))
        assert [record.status for record in records] == ["done", "pending", "pending", "pending", "pending"]
        saved = (run / "config.yaml").read_text()
        assert f"method:\n  name: {method}\n" in saved and f"model:\n  name: {network}\n" in saved
        assert f"fold {name}/split1-4_tasks0: done, 1 epochs" in ablation.out  # the console names the method's run
        assert f"run {run}:" in ablation.out
    # One Tune experiment, beside the runs, held the trials of every method's fold.
    storage = ablation.tmp / "runs"
    experiments = list(storage.glob("tune-*"))
    assert len(experiments) == 1 and not list(storage.glob("*/tune-*"))
    trials = [json.loads(path.read_text()) for path in experiments[0].glob("*/params.json")]
    assert sorted(trial["fold"] for trial in trials) == sorted(f"abl-{method}/split1-4_tasks0" for method in TRAINED)

    report = tmp_path / "report"
    methods = {"abl-synthetic": "synthetic", "abl-autoencoder": "autoencoder"}
    names = list(methods)
    models = [item for name in names for item in ("--models", str(storage / name))]
    assert main(["evaluate", *models, "--data", ablation.test, "--out", str(report)]) == 0
    out = capsys.readouterr().out
    assert all(f"{name} 1/4 ensemble: pixel AP" in out and f"{name} predicting: 4 of 4 cases" in out for name in names)
    metrics = json.loads((report / "metrics.json").read_text())
    assert {name: run["method"] for name, run in metrics["runs"].items()} == methods
    for name in names:
        assert list(metrics["runs"][name]["splits"]["1/4"]["folds"]) == ["split1-4_tasks0"]
        assert (report / "predictions" / name / "split1-4" / "ensemble").is_dir()
    assert set(metrics["baselines"]) == {"random", "intensity", "intensity_thresholded"}
    text = (report / "report.md").read_text()
    side_by_side = text.split("## Methods side by side", 1)[1].split("\n## ", 1)[0]
    rows = [line.split(" | ")[0] for line in side_by_side.splitlines() if line.startswith("| ")][1:]
    assert rows == [
        "| **abl-synthetic (synthetic) / 1/4 ensemble**",
        "| **abl-autoencoder (autoencoder) / 1/4 ensemble**",
        "| baseline: random",
        "| baseline: intensity",
        "| baseline: intensity_thresholded",
    ]
    assert "## Metrics: abl-autoencoder (autoencoder)" in text and "| 1/4 / split1-4_tasks0 |" in text

    # A method's figures beside the other are its figures alone; the baselines are the same cases'.
    alone = tmp_path / "alone"
    assert main(["evaluate", "--models", str(storage / names[1]), "--data", ablation.test, "--out", str(alone)]) == 0
    single = json.loads((alone / "metrics.json").read_text())
    assert single["splits"] == metrics["runs"][names[1]]["splits"]
    assert single["baselines"]["intensity"]["pixel_ap"] == metrics["baselines"]["intensity"]["pixel_ap"]


@pytest.mark.slow
@pytest.mark.parametrize("method", list(TRAINED))
def test_each_methods_run_and_its_package_predict_the_same_maps_in_the_source_geometry(ablation, tmp_path, method):
    """The run's network is the method's; `export` packs it with its method; the package's maps of a
    prepared case equal the run's, and `predict` from either writes the same heat map on a 40 x 30
    picture's own grid (the run was trained at 24 x 24)."""
    assert ablation.status == 0, ablation.out[-3000:]
    run = ablation.run(method)
    [record] = [record for record in runs.read_folds(str(run)) if record.status == "done"]
    assert type(load_model(record.best_checkpoint)) is TRAINED[method][1]
    assert 0 <= record.val_dice_threshold < 1
    package = tmp_path / f"{method}.lwpkg"
    assert main(["export", str(run), "--split", "1/4", "--out", str(package)]) == 0
    packaged = load_ensemble(str(package))
    assert packaged.method == MethodSection(method) and type(packaged.networks[0]) is TRAINED[method][1]
    case = load_case(str(Path(ablation.data).parent / "case00.npz"))
    scores = load_ensemble(str(run)).predict(case.image)
    assert scores.shape == (24, 24) and np.isfinite(scores).all() and scores.max() > scores.min()
    np.testing.assert_array_equal(packaged.predict(case.image), scores)
    rng = np.random.default_rng(5)
    picture = (128 + 40 * smooth_noise(rng, (40, 30), 3.0)).clip(0, 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "xray.png")
    heat = {}
    for source in (run, package):
        written = tmp_path / f"out-{source.suffix or 'run'}"
        assert main(["predict", "-i", str(tmp_path / "xray.png"), "-o", str(written), "--models", str(source)]) == 0
        heat[source] = np.asarray(Image.open(written / "xray.png"))
        assert heat[source].shape == (40, 30, 3)
    np.testing.assert_array_equal(heat[run], heat[package])


@pytest.mark.slow
def test_a_pipeline_of_methods_plans_a_run_per_method(ray_session, tmp_path, capsys):
    argv = ["pipeline", "--config", "demo", "--storage", str(tmp_path), "--name", "p", "--dry-run"]
    assert main([*argv, "--methods", "autoencoder,ddpm"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "p"
    assert f"dry run: {run}\n" in out
    for name in ("train-autoencoder", "train-ddpm"):
        assert f"run {run / name}: 5 fold models, 5 to train, 20 healthy cases" in out
    assert not list(run.glob("train*"))  # nothing trained, nothing written


def test_a_method_the_config_does_not_fit_is_one_line_before_ray(tmp_path):
    argv = ["train", "--config", "tiny", "--storage", str(tmp_path), "--methods", "synthetic,ddpm"]
    status, err = _exits_before_ray(argv)
    assert status == ["2", "False"]
    assert err.count("\n") == 1 and err.startswith("lightwork train: model.spatial_dims: method 'ddpm' trains 2D")
    status, err = _exits_before_ray(["pipeline", "--config", "tiny", "--storage", str(tmp_path), "--methods", "cddpm"])
    assert status == ["2", "False"] and err.startswith("lightwork pipeline: model.spatial_dims: method 'cddpm'")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "methods, message",
    [
        ("synthetic,vae", "'vae' is not a method (one of synthetic, autoencoder, "),
        ("synthetic,synthetic", "'synthetic,synthetic' names a method twice"),
    ],
)
def test_an_unknown_or_repeated_method_is_one_line(capsys, methods, message):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--config", "tiny", "--methods", methods, "--print-config"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"lightwork train: argument --methods: {message}")
