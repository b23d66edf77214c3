"""`lightwork train` as a user runs it, on a tiny prepared 2D dataset and the real Ray stack:
relative --data and --storage, a quiet console, the saved config.yaml reproducing the run's fold
histories exactly, a re-run with other settings stopped (exit 2, config.yaml untouched), an
identical re-run resumed. Ray is started by the job itself (not the session fixture), as a user's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightwork.cli import main
from lightwork.data.noise import write_noise_dataset
from lightwork.training import runs

pytestmark = pytest.mark.slow
LIGHTWORK = str(Path(sys.executable).with_name("lightwork"))

SETTINGS = [
    "--set",
    "model.spatial_dims=2",
    "--set",
    "model.features=[4,8]",
    "--set",
    "train.max_epochs=1",
    "--set",
    "train.val_batch_size=4",
    "--set",
    "resources.cpus_per_worker=0.5",
    "--set",
    "resources.data_cpus_per_trial=0.5",
    "--set",
    "resources.max_concurrent_trials=5",
]


TIMINGS = {"epoch_seconds", "data_wait_share"}  # wall-clock measurements in a fold's history


def deterministic(history: list[dict]) -> list[dict]:
    return [{key: value for key, value in epoch.items() if key not in TIMINGS} for epoch in history]


def test_train_with_relative_paths_reproduces_from_its_config_and_guards_its_record(tmp_path, monkeypatch, capsys):
    write_noise_dataset(tmp_path / "prep" / "tiny2d", recipe_options={"size": 24})
    # The README's form, through the console script, in the data's folder: relative --data and
    # --storage (the trial drivers run in another working directory), Ray started by the job.
    # A user's shell: no RAY_ADDRESS, and Ray's own default authentication mode.
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    result = subprocess.run(
        [
            LIGHTWORK,
            "train",
            "--config",
            "tiny",
            "--data",
            "prep/tiny2d",
            "--storage",
            "runs",
            "--name",
            "a",
            "--seed",
            "3",
            "--num-cpus",
            "8",
            *SETTINGS,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    run = tmp_path / "runs" / "a"
    first = runs.read_folds(str(run))
    assert [record.status for record in first] == ["done"] * 5
    assert all(record.best_checkpoint.startswith(str(run)) for record in first)
    # Quiet: the trial table and the fold summary, none of Ray's internal chatter.
    assert "Trial status: 5 TERMINATED" in console and console.count(" done ") == 5
    for noise in (
        "registers for logging while another dataset",
        "Checkpoint successfully created",
        "core_worker",
        "Token authentication",
    ):
        assert noise not in console
    saved = (run / "config.yaml").read_bytes()

    monkeypatch.chdir(tmp_path)
    # The saved description alone reproduces every fold's history exactly, under another name.
    assert main(["train", "--config", "runs/a/config.yaml", "--name", "b", "--num-cpus", "8"]) == 0
    second = runs.read_folds(str(tmp_path / "runs" / "b"))
    assert [deterministic(r.history) for r in second] == [deterministic(r.history) for r in first]
    capsys.readouterr()

    # Same name, other settings: stopped before Ray is asked for anything; the record is untouched.
    assert (
        main(
            [
                "train",
                "--config",
                "tiny",
                "--data",
                "prep/tiny2d",
                "--storage",
                "runs",
                "--name",
                "a",
                "--seed",
                "3",
                *SETTINGS,
                "--set",
                "train.max_epochs=2",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.max_epochs: 1 -> 2" in err and "--fresh" in err
    assert (run / "config.yaml").read_bytes() == saved
    assert main(["train", "--config", "runs/a/config.yaml", "--seed", "4"]) == 2
    assert "seed: 3 -> 4" in capsys.readouterr().err

    # The identical description resumes: every fold is done, nothing is trained again.
    before = {r.name: (run / r.name / "fold.json").read_bytes() for r in first}
    assert main(["train", "--config", "runs/a/config.yaml", "--num-cpus", "8"]) == 0
    assert capsys.readouterr().out.count("done in an earlier run") == 5
    assert {r.name: (run / r.name / "fold.json").read_bytes() for r in first} == before
    assert (run / "config.yaml").read_bytes() == saved
