"""A run's fold records on disk: the run's index (`folds.json`) and each fold's own record."""

from __future__ import annotations

import json

import pytest

from lightwork.errors import UserError
from lightwork.training import runs
from lightwork.training.folds import plan_split


def _done(plan, loss: float) -> runs.FoldRecord:
    record = runs.FoldRecord.from_plan(plan)
    record.status, record.best_checkpoint, record.best_val_loss = "done", f"ckpt-{plan.name}", loss
    return record


def test_separate_calls_for_other_splits_add_up_in_the_index(tmp_path):
    run = str(tmp_path / "run")
    first, second = plan_split("1/4"), plan_split("2/3")
    runs.write_folds(run, [runs.FoldRecord.from_plan(plan) for plan in first])
    runs.write_folds(run, [runs.FoldRecord.from_plan(plan) for plan in second])
    assert [(r.split, r.index) for r in runs.read_folds(run)] == [("1/4", i) for i in range(5)] + [
        ("2/3", i) for i in range(10)
    ]
    runs.write_folds(run, [_done(first[2], 0.5)])  # a later call's version replaces the indexed one in place
    records = runs.read_folds(run)
    assert len(records) == 15 and records[2].status == "done" and records[2].best_val_loss == 0.5


def test_a_folds_own_record_is_newer_than_a_stale_index(tmp_path):
    # Two jobs training folds 0 and 3 of one run at once: the job that wrote the index last read its
    # records before the other fold had finished. Readers still see both folds done.
    run = str(tmp_path / "run")
    plans = plan_split("1/4")
    runs.write_folds(run, [runs.FoldRecord.from_plan(plan) for plan in plans])
    for plan, loss in ((plans[0], 0.25), (plans[3], 0.125)):
        runs.write_record(run, _done(plan, loss))
    indexed = json.loads((tmp_path / "run" / runs.FOLDS_FILE).read_text())
    assert [record["status"] for record in indexed] == ["pending"] * 5
    assert [(r.index, r.best_val_loss) for r in runs.read_trained_folds(run)] == [(0, 0.25), (3, 0.125)]
    assert runs.read_record(run, plans[1]) == runs.FoldRecord.from_plan(plans[1])


def test_a_damaged_fold_record_names_its_file(tmp_path):
    run = str(tmp_path / "run")
    plans = plan_split("1/4")
    runs.write_folds(run, [runs.FoldRecord.from_plan(plan) for plan in plans])
    (tmp_path / "run" / plans[1].name).mkdir()
    (tmp_path / "run" / plans[1].name / runs.RECORD_FILE).write_text('{"split": "1/4"')
    with pytest.raises(UserError, match=f"^{tmp_path}/run/{plans[1].name}/fold.json: not a lightwork fold record"):
        runs.read_folds(run)
