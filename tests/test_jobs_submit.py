"""The main job as users submit it: a real `ray start --head`, then `ray job submit --working-dir`.

Auth: Ray 2.60 turns token auth on by default, so the head and the client both run with
RAY_AUTH_MODE=disabled (local development only; see shared ray-notes). The cluster is this test's
own: its own ports and temporary folder, started in a new session, and stopped by killing exactly
the processes of that session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lightwork.distributed.cluster import LOCAL_TRAIN_ENV
from lightwork.testing.clusters import free_port, stop_session
from lightwork.training import runs

REPO = Path(__file__).resolve().parents[1]
# The Ray CLI through this interpreter: a copied virtualenv's `ray` script may name another Python.
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
FOLDS = [0, 1]  # the positions in split 1/4 of the fold models the submitted pipeline trains


@pytest.fixture
def ray_head():
    """A local head node on free ports; yields (environment for the job CLI, temp dir)."""
    # Short path: Ray's unix sockets live under the temp dir and their paths are length-limited.
    temp_dir = tempfile.mkdtemp(prefix="lwj", dir="/tmp")
    # The job's `python` must be this environment's (as for a user with the venv activated): the
    # suite may run as `.venv/bin/python -m pytest` without the venv's bin folder on PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PATH=path, **LOCAL_TRAIN_ENV)
    env.pop("RAY_ADDRESS", None)
    dashboard_port = free_port()
    command = [
        *RAY,
        "start",
        "--head",
        f"--port={free_port()}",
        f"--temp-dir={temp_dir}",
        "--num-cpus=4",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        "--disable-usage-stats",
    ]
    starter = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = starter.communicate(timeout=180)  # a loaded 2-core machine needs more than 60 s
        assert starter.returncode == 0, f"ray start failed:\n{output}"
        client_env = dict(env, RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{dashboard_port}")
        yield client_env, Path(temp_dir)
    finally:
        if starter.poll() is None:
            starter.kill()
        stop_session(starter.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(env: dict, entrypoint: list[str], timeout_s: float) -> str:
    """`ray job submit --working-dir REPO -- ENTRYPOINT`; returns its log, asserting success."""
    result = subprocess.run(
        [*RAY, "job", "submit", "--working-dir", str(REPO), "--", *entrypoint],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "succeeded" in log, log[-4000:]
    return log


def printed(log: str, label: str) -> Path:
    """The path the job printed after `label: ` (its last such line; a progress bar's control codes
    may precede it on the same line)."""
    lines = [line.rsplit(f"{label}: ", 1)[1] for line in log.splitlines() if f"{label}: " in line]
    assert lines, f"the job printed no `{label}:` line:\n{log[-3000:]}"
    return Path(lines[-1].strip())


@pytest.mark.slow
def test_submitted_pipeline_runs_end_to_end_on_the_demo_config(ray_head, tmp_path, check_fold_records):
    """The README's cluster commands: the demo pipeline (2D slices of the 3D cohort, 1/4 split;
    to keep the suite short, two of its five folds, one wave of two trials on this head, 3 epochs
    of 4 steps each) submitted to a head node: each fold through the synthesis stream, Train and
    Tune, the last checkpoint kept, then the report of their ensemble with the volumes reassembled."""
    env, temp_dir = ray_head
    storage = tmp_path / "runs"
    log = submit(
        env,
        [
            "python",
            "jobs/pipeline.py",
            "--config",
            "demo",
            "--set",
            "train.max_epochs=3",
            "--set",
            "train.epoch_steps=4",
            "--folds",
            ",".join(map(str, FOLDS)),
            "--storage",
            str(storage),
            "--name",
            "e2e",
            "--seed",
            "3",
        ],
        timeout_s=600,
    )
    # The job attached to this head node instead of starting its own Ray: only one session exists.
    assert "Connecting to existing Ray cluster" in log
    # A quiet console: Ray Data's execution lines, progress log and resource advice stay in Ray's log files.
    for noise in ("Execution plan of Dataset", "logging_progress", "issue_detector", "may be a performance bottleneck"):
        assert noise not in log
    assert "predicting: 6 of 6 cases" in log
    assert len(list(temp_dir.glob("session_2*"))) == 1
    cohort = storage / "e2e" / "demo-data"
    healthy = sorted(p.name for p in (cohort / "healthy").iterdir())
    test = sorted(p.name for p in (cohort / "test").iterdir())
    assert len(healthy) == 20 and len(test) == 6
    assert all((cohort / "test" / case / "lesion.nii.gz").exists() for case in test)

    index = runs.read_folds(str(storage / "e2e" / "train"))  # the whole split, the others pending
    assert [record.status for record in index] == ["done" if i in FOLDS else "pending" for i in range(5)]
    records = [index[i] for i in FOLDS]
    check_fold_records(records, epochs=3, folds=len(FOLDS), keep="last")
    assert [record.steps for record in records] == [12] * len(FOLDS)
    # the first fold's model trained on folds 1-4 (image sets swap: its validation fold is smaller)
    assert records[0].train_folds == [1, 2, 3, 4] and records[0].val_folds == [0] and records[0].train_tasks == [0]

    report = printed(log, "report")
    assert report == storage / "e2e" / "report" / "report.md" and report.exists()
    metrics = json.loads((report.parent / "metrics.json").read_text())
    split = metrics["splits"]["1/4"]
    assert sorted(split["folds"]) == sorted(record.name for record in records)
    assert split["ensemble"]["cases"] == 6 and split["ensemble"]["cases_with_mask"] == 6
    assert 0 < split["ensemble"]["pixel_ap"] <= 1 and 0.5 < split["ensemble"]["pixel_auroc"] <= 1
    assert set(metrics["baselines"]) >= {"random", "intensity"}
    text = report.read_text()
    assert "2D models trained on slices along axis 2 of the 3D volumes" in text
    assert f"each of the {len(FOLDS)} fold models took 12-12 optimizer steps of 16 samples" in text
    assert "15 GPU-hours" in text
