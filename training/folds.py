"""Which folds and tasks each model trains and validates on: the one place this is decided.

The method (Baugh et al. 2023, see docs/method.md, training): fold i belongs to task i, so there are as
many data folds as registered tasks (`lightwork.anomalies.registry.TASK_COUNT`, 5), and a split
"T/(TASK_COUNT - T)" trains on T tasks for each T from 1 to TASK_COUNT - 1. With T training tasks, the
models are `itertools.combinations(range(TASK_COUNT), T)` in lexicographic order. A model trains
on the folds of its training tasks with those tasks, and validates on the remaining folds with the
remaining tasks. When the validation image set would be larger than the training set, the two
image sets swap; the tasks never swap.

Names in storage are made here too: a split's tag (`"1/4"` <-> `split1-4`), a fold's name
(`split1-4_tasks0`) and a model's key (`split1-4/split1-4_tasks0`, or `split1-4/ensemble` for the
mean of a split's fold models), each with its parser.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from lightwork.anomalies.registry import TASK_COUNT

# Split name -> its number of training tasks: {"1/4": 1, "2/3": 2, "3/2": 3, "4/1": 4}.
SPLITS = {f"{count}/{TASK_COUNT - count}": count for count in range(1, TASK_COUNT)}
ENSEMBLE = "ensemble"  # the model name of a split's ensemble in a model key


def split_tag(split: str) -> str:
    """The filesystem-safe tag of a split: `"1/4"` -> `"split1-4"`."""
    return f"split{split.replace('/', '-')}"


def split_of_tag(tag: str) -> str:
    """The split of a tag made by `split_tag`: `"split1-4"` -> `"1/4"`."""
    return tag.removeprefix("split").replace("-", "/")


def model_key(split: str, name: str) -> str:
    """The storage key of one model of a split (a fold's name, or ENSEMBLE): `split1-4/split1-4_tasks0`."""
    return f"{split_tag(split)}/{name}"


def parse_model_key(key: str) -> tuple[str, str]:
    """`(split, name)` of a key made by `model_key`: `"split1-4/ensemble"` -> `("1/4", "ensemble")`."""
    tag, name = key.split("/", 1)
    return split_of_tag(tag), name


@dataclass(frozen=True)
class FoldPlan:
    """One model of a split.

    Attributes:
        split: "T/(TASK_COUNT-T)", e.g. "1/4".
        index: position of this model among its split's combinations (lexicographic order).
        train_tasks / val_tasks: task ids used to synthesise training / validation anomalies.
        train_folds / val_folds: data folds whose cases are the training / validation images.
    """

    split: str
    index: int
    train_tasks: tuple[int, ...]
    val_tasks: tuple[int, ...]
    train_folds: tuple[int, ...]
    val_folds: tuple[int, ...]

    @property
    def name(self) -> str:
        """A stable, filesystem-safe name, e.g. `split1-4_tasks0-2`."""
        return f"{split_tag(self.split)}_tasks{'-'.join(map(str, self.train_tasks))}"


def parse_splits(spec: str) -> list[str]:
    """`"1/4"`, `"1/4,2/3"` or `"all"` -> list of split names."""
    names = list(SPLITS) if spec.strip() == "all" else [part.strip() for part in spec.split(",")]
    unknown = [name for name in names if name not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}: choose from {list(SPLITS)} or 'all'")
    return names


def parse_folds(spec: str) -> list[int]:
    """`"0,2"` -> [0, 2]: positions of folds within a split (`FoldPlan.index`)."""
    try:
        folds = [int(part) for part in spec.split(",")]
    except ValueError:
        raise ValueError("expected fold positions as a comma list of integers, e.g. 0,2") from None
    if any(fold < 0 for fold in folds):
        raise ValueError("fold positions start at 0")
    return folds


def select_folds(plans: list[FoldPlan], folds: Sequence[int] | None) -> list[FoldPlan]:
    """The plans at positions `folds` of their split (all of them when `folds` is None); a position
    no split has raises ValueError naming the splits' sizes."""
    if folds is None:
        return list(plans)
    sizes = {plan.split: plan.index + 1 for plan in plans}
    missing = [fold for fold in folds if all(fold >= size for size in sizes.values())]
    if missing:
        have = ", ".join(f"{split}: 0-{size - 1}" for split, size in sizes.items())
        raise ValueError(f"no fold at position(s) {missing} ({have})")
    return [plan for plan in plans if plan.index in folds]


def plan_split(split: str, fold_sizes: dict[int, int] | None = None) -> list[FoldPlan]:
    """Every model of a split, in lexicographic order of training tasks.

    Args:
        split: one of SPLITS.
        fold_sizes: number of usable cases per fold; when given, image sets swap where the
            validation set would be larger than the training set.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose from {list(SPLITS)}")
    plans = []
    for index, train_tasks in enumerate(itertools.combinations(range(TASK_COUNT), SPLITS[split])):
        val_tasks = tuple(task for task in range(TASK_COUNT) if task not in train_tasks)
        train_folds, val_folds = train_tasks, val_tasks
        if fold_sizes is not None:
            size = lambda folds: sum(fold_sizes.get(fold, 0) for fold in folds)  # noqa: E731
            if size(val_folds) > size(train_folds):
                train_folds, val_folds = val_folds, train_folds
        plans.append(FoldPlan(split, index, train_tasks, val_tasks, train_folds, val_folds))
    return plans


def empty_folds(plans: Sequence[FoldPlan], fold_sizes: dict[int, int]) -> list[int]:
    """The folds that some plan trains or validates on and that hold no case (`fold_sizes`: cases
    per fold), sorted; empty when every plan has cases on both sides."""
    needed = {fold for plan in plans for fold in (*plan.train_folds, *plan.val_folds)}
    return sorted(fold for fold in needed if not fold_sizes.get(fold))


def steps_per_epoch(train_cases: int, batch_size: int, epoch_steps: int | None = None) -> int:
    """Optimizer steps in one epoch: `epoch_steps` where given (`train.epoch_steps`), else one pass
    over `train_cases` training samples in full batches (at least 1)."""
    return epoch_steps if epoch_steps is not None else max(1, train_cases // batch_size)
