"""`lightwork train` as a user runs it, on a tiny prepared 2D dataset and the real Ray stack
(the session's `cli_2d_run`: relative --data and --storage, Ray started by the job itself, as a
user's): a quiet console, the saved config.yaml reproducing the run's fold histories exactly, a
re-run with other settings stopped (exit 2, config.yaml untouched), an identical re-run resumed;
`--folds` trains only the folds asked for. The commands run in-process attach to the session's
cluster (`ray_session`, as a job does where Ray is already up) instead of each starting its own."""

from __future__ import annotations

import re

import pytest

from lightwork.cli import main
from lightwork.data import manifest
from lightwork.training import runs

pytestmark = pytest.mark.slow

TIMINGS = {"epoch_seconds", "data_wait_share"}  # wall-clock measurements in a fold's history


def deterministic(history: list[dict]) -> list[dict]:
    return [{key: value for key, value in epoch.items() if key not in TIMINGS} for epoch in history]


def test_train_with_relative_paths_reproduces_from_its_config_and_guards_its_record(
    cli_2d_run, ray_session, tmp_path, monkeypatch, capsys
):
    console, run, trained = cli_2d_run.console, cli_2d_run.run, cli_2d_run.folds
    assert cli_2d_run.returncode == 0, console[-3000:]
    first = runs.read_folds(str(run))
    # --folds: only the folds asked for trained; the run's record lists the others as pending.
    assert [record.status for record in first] == ["done" if i in trained else "pending" for i in range(5)]
    assert all(first[i].best_checkpoint.startswith(str(run)) for i in trained)
    # Quiet: a line per fold epoch and per finished fold, the summary, none of Ray's chatter nor Tune's tables.
    assert console.count(": done, ") == len(trained) and console.count(" done ") == len(trained)
    assert re.search(
        r"fold split\d-\d_tasks\d+: step \d+ of \d+, val loss [\d.]+, val pixel AP [\d.]+ \(\d+ s\)", console
    )
    for noise in (
        "Trial status",
        "Configuration for experiment",
        "View detailed results",
        "Wrote the latest version",
        "registers for logging while another dataset",
        "Checkpoint successfully created",
        "core_worker",
        "Token authentication",
    ):
        assert noise not in console
    saved = (run / "config.yaml").read_bytes()

    monkeypatch.chdir(cli_2d_run.root)
    # The saved description alone reproduces a fold's history exactly, under another name.
    again = trained[-1]
    reproduce = ["train", "--config", "runs/a/config.yaml", "--name", "b", "--storage", str(tmp_path)]
    assert main([*reproduce, "--folds", str(again)]) == 0
    second = runs.read_folds(str(tmp_path / "b"))
    assert [r.status for r in second] == ["done" if i == again else "pending" for i in range(5)]
    assert deterministic(second[again].history) == deterministic(first[again].history)
    capsys.readouterr()

    # A trial no node can hold: the plan's error (the plan needs the cluster's shape), one line
    # naming the field, no traceback, nothing written.
    too_big = ["train", "--config", "runs/a/config.yaml", "--name", "c", "--storage", str(tmp_path)]
    too_big += ["--set", "resources.cpus_per_worker=16"]
    assert main(too_big) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("lightwork train: resources.cpus_per_worker: one Train worker needs {CPU: 16} on one node")
    assert not (tmp_path / "c").exists()

    # Same name, other settings: stopped before Ray is asked for anything; the record is untouched.
    assert main([*cli_2d_run.arguments, "--set", "train.max_epochs=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.max_epochs: 1 -> 2" in err and "--fresh" in err
    assert (run / "config.yaml").read_bytes() == saved
    assert main(["train", "--config", "runs/a/config.yaml", "--seed", "4"]) == 2
    assert "seed: 3 -> 4" in capsys.readouterr().err

    # The identical description resumes: every fold asked for is done, nothing is trained again;
    # the job resolved its run once (one read of the manifest, however many steps use it).
    done = [first[i] for i in trained]
    before = {r.name: (run / r.name / "fold.json").read_bytes() for r in done}
    reads, read_manifest = [], manifest.read_manifest
    monkeypatch.setattr(manifest, "read_manifest", lambda uri: reads.append(uri) or read_manifest(uri))
    assert main(["train", "--config", "runs/a/config.yaml", "--folds", ",".join(map(str, trained))]) == 0
    assert len(reads) == 1, reads
    assert capsys.readouterr().out.count("done in an earlier run") == len(trained)
    assert {r.name: (run / r.name / "fold.json").read_bytes() for r in done} == before
    assert (run / "config.yaml").read_bytes() == saved
