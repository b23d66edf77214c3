"""Which folds a run trains: the split's plans and the positions `--folds` picks from them."""

from __future__ import annotations

import pytest

from lightwork.training.folds import parse_folds, plan_split, select_folds


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
