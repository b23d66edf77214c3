"""lightwork.anomalies: the synthetic anomaly tasks (method.md sections 1-3).

    task = make_task("intensity")            # or an id 0-4, see TASK_NAMES
    anomalous, label = task(image, foreground, rng)
"""

from lightwork.anomalies.base import TASK_NAMES, SyntheticTask, make_task
from lightwork.anomalies.label import soft_label
from lightwork.anomalies.poisson import poisson_blend
from lightwork.anomalies.shapes import AnomalyShape

__all__ = ["TASK_NAMES", "AnomalyShape", "SyntheticTask", "make_task", "poisson_blend", "soft_label"]
