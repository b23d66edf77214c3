"""The synthetic anomaly tasks by id and name, and their parameters: the one place they are decided.

Tasks have fixed ids and names (folds refer to the ids: one data fold per task, and the splits
T/(TASK_COUNT - T), `lightwork.training.folds`): 0 intra_blend, 1 inter_blend, 2 sink, 3 source,
4 intensity. A task declares where its blend sources come from (`task_sources`: another case of the
image set, the external dataset, or none). `make_task(name_or_id, **params)` builds one (a
`SyntheticTask`, see `lightwork.anomalies.base`):
    intra_blend / inter_blend: sources=..., mix_gradients=True, match_gradient_scale=False / True
                  (the external set's patches get the target's gradient scale; lightwork.anomalies.blending)
    sink / source: max_push=5.0 (brain; 10 for chest X-rays) (lightwork.anomalies.deformation)
    intensity: no parameters (lightwork.anomalies.intensity)

Importing this module is light (numpy only): each task's module is imported when it is first built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lightwork.anomalies.parameters import DEFAULT_MAX_PUSH

if TYPE_CHECKING:
    from lightwork.anomalies.base import AnomalyTask, SyntheticTask

TASK_NAMES = ("intra_blend", "inter_blend", "sink", "source", "intensity")  # a task's id is its position
TASK_COUNT = len(TASK_NAMES)

# Where a blending task's sources come from (`task_sources`; a task without sources takes none).
IMAGE_SET = "image_set"  # another case of the image set the sample is drawn from
EXTERNAL = "external"  # the external dataset (data.external_manifest)

TaskFactory = Callable[..., "AnomalyTask"]


@dataclass(frozen=True)
class _Registered:
    name: str
    factory: TaskFactory
    sources: str | None


_REGISTRY: dict[int, _Registered] = {}


def register_task(task_id: int, name: str, factory: TaskFactory, sources: str | None = None) -> None:
    """Register `factory(**params) -> AnomalyTask` under a fixed id and name, with where its blend
    `sources` come from (IMAGE_SET, EXTERNAL; None: it takes none), replacing any previous
    registration of that id; a name may not move to another id."""
    if sources not in (None, IMAGE_SET, EXTERNAL):
        raise ValueError(f"task {name!r}: sources must be {IMAGE_SET!r}, {EXTERNAL!r} or None, got {sources!r}")
    for other_id, other in _REGISTRY.items():
        if other.name == name and other_id != task_id:
            raise ValueError(f"task name {name!r} is already registered with id {other_id}")
    _REGISTRY[int(task_id)] = _Registered(name, factory, sources)


def task_id_of(name_or_id: str | int) -> int:
    """The id of the task with this name or id (an int, or a string of digits).

    Raises:
        ValueError: an unknown task, naming the known ones.
    """
    if isinstance(name_or_id, str):
        found = [task_id for task_id, task in _REGISTRY.items() if task.name == name_or_id]
        if found:
            return found[0]
        if name_or_id.isdigit() and int(name_or_id) in _REGISTRY:
            return int(name_or_id)
    elif isinstance(name_or_id, (int, np.integer)) and int(name_or_id) in _REGISTRY:
        return int(name_or_id)
    known = ", ".join(f"{task_id} {task.name}" for task_id, task in sorted(_REGISTRY.items()))
    raise ValueError(f"unknown anomaly task {name_or_id!r}; known tasks: {known}")


def make_task(name_or_id: str | int, **params: Any) -> SyntheticTask:
    """The task with this id or name, built with `params` (see the module docstring).

    Raises:
        ValueError: an unknown task, or parameters the task does not take.
    """
    from lightwork.anomalies.base import SyntheticTask

    task = _REGISTRY[task_id_of(name_or_id)]
    try:
        inspect.signature(task.factory).bind(**params)
    except TypeError as error:
        raise ValueError(f"task {task.name!r} does not take the parameters {sorted(params)}: {error}") from None
    return SyntheticTask(task.factory(**params))


def task_sources(name_or_id: str | int) -> str | None:
    """Where the task's blend sources come from: IMAGE_SET, EXTERNAL, or None (it takes none)."""
    return _REGISTRY[task_id_of(name_or_id)].sources


def task_parameters(name_or_id: str | int) -> tuple[str, ...]:
    """The names of the parameters `make_task` takes for this task."""
    return tuple(inspect.signature(_REGISTRY[task_id_of(name_or_id)].factory).parameters)


# Built-in tasks; each factory imports its module on first use so importing the package stays light.
def _blend(task_id: int, gradient_scale: bool) -> TaskFactory:
    def factory(
        sources: Sequence | Callable | None = None,
        mix_gradients: bool = True,
        match_gradient_scale: bool = gradient_scale,
    ) -> AnomalyTask:
        from lightwork.anomalies.blending import PoissonBlendTask

        return PoissonBlendTask(task_id, sources, mix_gradients, match_gradient_scale)

    return factory


def _deformation(task_id: int) -> TaskFactory:
    def factory(max_push: float = DEFAULT_MAX_PUSH) -> AnomalyTask:
        from lightwork.anomalies.deformation import DeformationTask

        return DeformationTask(task_id, max_push)

    return factory


def _intensity() -> AnomalyTask:
    from lightwork.anomalies.intensity import IntensityTask

    return IntensityTask()


register_task(0, TASK_NAMES[0], _blend(0, gradient_scale=False), sources=IMAGE_SET)
register_task(1, TASK_NAMES[1], _blend(1, gradient_scale=True), sources=EXTERNAL)
register_task(2, TASK_NAMES[2], _deformation(2))
register_task(3, TASK_NAMES[3], _deformation(3))
register_task(4, TASK_NAMES[4], _intensity)


def warm_up() -> None:
    """Run every task once on a small generated image, so that the compiled kernels (numba: read
    from its on-disk cache, or compiled on a machine's first run) are loaded before the first real
    sample: a synthesis worker calls this while it starts, not during its first batch."""
    from lightwork.anomalies.intensity import ENVELOPE_REACH, bounded_squared_distance

    image = np.random.default_rng(0).random((1, 24, 24), dtype=np.float32)
    for task_id in range(TASK_COUNT):
        task = make_task(task_id, sources=[image]) if task_sources(task_id) else make_task(task_id)
        task(image, None, np.random.default_rng(task_id))
    bounded_squared_distance(np.ones((9, 9), bool), ENVELOPE_REACH + 1)  # the wide ramps' passes (X-rays)
