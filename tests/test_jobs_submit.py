"""The main job as users submit it: a real `ray start --head`, then `ray job submit --working-dir`.

Auth: Ray 2.60 turns token auth on by default, so the head and the client both run with
RAY_AUTH_MODE=disabled (local development only; see shared ray-notes). The cluster is this test's
own: its own ports and temporary folder, started in a new session, and stopped by killing exactly
the processes of that session (tests/conftest.py's `submitted_pipeline`, which starts the job
earlier in the session, beside other tests).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightwork.training import runs


def printed(log: str, label: str) -> Path:
    """The path the job printed after `label: ` (its last such line; a progress bar's control codes
    may precede it on the same line)."""
    lines = [line.rsplit(f"{label}: ", 1)[1] for line in log.splitlines() if f"{label}: " in line]
    assert lines, f"the job printed no `{label}:` line:\n{log[-3000:]}"
    return Path(lines[-1].strip())


@pytest.mark.slow
def test_submitted_pipeline_runs_end_to_end_on_the_demo_config(submitted_pipeline, check_fold_records):
    """The README's cluster commands: the demo pipeline (2D slices of the 3D cohort, 1/4 split;
    to keep the suite short, two of its five folds, one wave of two trials on this head, 3 epochs
    of 4 steps each) submitted to a head node: each fold through the synthesis stream, Train and
    Tune, the last checkpoint kept, then the report of their ensemble with the volumes reassembled.
    The job runs in the background from earlier in the session (`submitted_pipeline`)."""
    log, temp_dir, storage = submitted_pipeline.log, submitted_pipeline.temp_dir, submitted_pipeline.storage
    assert submitted_pipeline.returncode == 0 and "succeeded" in log, log[-4000:]
    folds = list(submitted_pipeline.folds)
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
    assert [record.status for record in index] == ["done" if i in folds else "pending" for i in range(5)]
    records = [index[i] for i in folds]
    check_fold_records(records, epochs=3, folds=len(folds), keep="last")
    assert [record.steps for record in records] == [12] * len(folds)
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
    assert f"each of the {len(folds)} fold models took 12-12 optimizer steps of 16 samples" in text
    assert "15 GPU-hours" in text
