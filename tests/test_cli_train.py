"""`lightwork train` as a user runs it, on a tiny prepared 2D dataset and the real Ray stack:
relative --data and --storage, a quiet console, the saved config.yaml reproducing the run's fold
histories exactly, a re-run with other settings stopped (exit 2, config.yaml untouched), an
identical re-run resumed. Ray is started by the job itself (not the session fixture), as a user's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightwork.cli import main
from lightwork.data import manifest
from lightwork.data.cases import PreparedCase, save_case
from lightwork.data.phantom import smooth_noise
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


def write_prepared(root, shape=(24, 24), count=10) -> None:
    """`count` smooth-noise cases prepared as by the cxr recipe, with their manifest, under `root`."""
    rng = np.random.default_rng(0)
    ids = [f"case{i:02d}" for i in range(count)]
    folds = manifest.contiguous_folds(ids)
    foreground = np.zeros(shape, bool)
    foreground[2:-2, 2:-2] = True
    rows = []
    for case_id in ids:
        uri = str(root / "cases" / f"{case_id}.npz")
        save_case(uri, PreparedCase(case_id, (smooth_noise(rng, shape, 2.0) * 0.2 + 1.0)[None], foreground))
        rows.append(
            {
                "case_id": case_id,
                "source_uri": f"/raw/{case_id}.png",
                "array_uri": uri,
                "checksum": case_id,
                "shape": list(shape),
                "spacing": [1.0, 1.0],
                "recipe": "cxr",
                "recipe_version": "1",
                "recipe_options": json.dumps({"size": shape[0]}),
                "fold": folds[case_id],
                "has_lesion": False,
                "image_label": 0,
                "status": "ok",
                "error": None,
            }
        )
    manifest.write_manifest(str(root), rows)


TIMINGS = {"epoch_seconds", "data_wait_share"}  # wall-clock measurements in a fold's history


def deterministic(history: list[dict]) -> list[dict]:
    return [{key: value for key, value in epoch.items() if key not in TIMINGS} for epoch in history]


def test_train_with_relative_paths_reproduces_from_its_config_and_guards_its_record(tmp_path, monkeypatch, capsys):
    write_prepared(tmp_path / "prep" / "tiny2d")
    # The README's form, through the console script, in the data's folder: relative --data and
    # --storage (the trial drivers run in another working directory), Ray started by the job.
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
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
    for noise in ("registers for logging while another dataset", "Checkpoint successfully created", "core_worker"):
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
