"""lightwork.anomalies: the synthetic anomaly tasks (docs/method.md sections 1-3).

    task = make_task("intensity")            # or an id 0-4, see TASK_NAMES
    anomalous, label = task(image, foreground, rng)

The registry (names, count, parameters) imports numpy only; the other names load on first use,
so that what only needs the task names or the seeding stays light to import.
"""

from importlib import import_module

from lightwork.anomalies.registry import TASK_COUNT, TASK_NAMES, make_task

_LAZY = {"SyntheticTask": "base", "AnomalyShape": "shapes", "poisson_blend": "poisson", "soft_label": "label"}

__all__ = ["TASK_COUNT", "TASK_NAMES", "AnomalyShape", "SyntheticTask", "make_task", "poisson_blend", "soft_label"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"lightwork.anomalies.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
