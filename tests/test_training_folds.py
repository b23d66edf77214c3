"""Which folds a run trains: the splits and data folds the task registry gives, the split's plans
and the positions `--folds` picks from them."""

from __future__ import annotations

import math

import pytest

from lightwork.anomalies.registry import EXTERNAL, IMAGE_SET, TASK_COUNT, task_parameters, task_sources
from lightwork.data.manifest import NUM_FOLDS, contiguous_folds
from lightwork.training.folds import SPLITS, parse_folds, parse_splits, plan_split, select_folds


def test_splits_and_folds_follow_the_task_registry():
    """One data fold per registered task; split T/(TASK_COUNT - T) holds a model per T-subset of tasks."""
    assert TASK_COUNT == NUM_FOLDS == 5
    assert SPLITS == {"1/4": 1, "2/3": 2, "3/2": 3, "4/1": 4} and parse_splits("all") == list(SPLITS)
    assert [len(plan_split(split)) for split in SPLITS] == [math.comb(TASK_COUNT, count) for count in SPLITS.values()]
    for plan in (plan for split in SPLITS for plan in plan_split(split)):
        assert sorted(plan.train_tasks + plan.val_tasks) == sorted(plan.train_folds + plan.val_folds)
        assert sorted(plan.train_tasks + plan.val_tasks) == list(range(NUM_FOLDS))
    assert sorted(set(contiguous_folds([f"case{i:02d}" for i in range(12)]).values())) == list(range(NUM_FOLDS))
    # What the synthesiser asks of a task instead of its number: its blend sources and parameters.
    assert [task_sources(task) for task in range(TASK_COUNT)] == [IMAGE_SET, EXTERNAL, None, None, None]
    assert [("max_push" in task_parameters(task)) for task in range(TASK_COUNT)] == [False, False, True, True, False]


def test_fold_positions_select_the_same_positions_of_every_split():
    plans = plan_split("1/4") + plan_split("2/3")
    chosen = select_folds(plans, parse_folds("0,7"))
    assert [(plan.split, plan.index) for plan in chosen] == [("1/4", 0), ("2/3", 0), ("2/3", 7)]
    assert select_folds(plans, None) == plans
    with pytest.raises(ValueError, match=r"no fold at position\(s\) \[10\] \(1/4: 0-4, 2/3: 0-9\)"):
        select_folds(plans, [10])
    with pytest.raises(ValueError, match="start at 0"):
        parse_folds("-1")
    with pytest.raises(ValueError, match="comma list of integers"):
        parse_folds("1,x")
