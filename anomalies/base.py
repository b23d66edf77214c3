"""The synthetic anomaly task interface and its registry (method.md sections 1 and 3).

Every task is one callable, `task(image, foreground, rng) -> (anomalous, label)`:

    image       [C, *S] float32, finite, every spatial axis >= 9 voxels
    foreground  [*S] bool with at least one voxel, or None
    rng         numpy.random.Generator: every random draw comes from it (no global state)
    anomalous   [C, *S] float32, a copy of the image with 1-4 anomalies of the task
    label       [*S] float32 in [0, 1], the soft label of the change (lightwork.anomalies.label)

The framework (`SyntheticTask`) owns the common recipe: draw a shape, place it (>= 50% on the
foreground), let the task draw its parameters and apply them inside the shape's box, then stop
with probability 0.5 (at most 4 anomalies), and label the final image against the input. A task
only implements the per-anomaly halves of `AnomalyTask`.

Tasks have fixed ids and names (folds refer to the ids): 0 intra_blend, 1 inter_blend, 2 sink,
3 source, 4 intensity. `make_task(name_or_id, **params)` builds one:
    intra_blend / inter_blend: sources=..., mix_gradients=True (lightwork.anomalies.blending)
    sink / source: max_push=5.0 (brain; 10 for chest X-rays) (lightwork.anomalies.deformation)
    intensity: no parameters (lightwork.anomalies.intensity)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from lightwork.anomalies.label import label_boxes
from lightwork.anomalies.shapes import AnomalyShape, check_image_shape, draw_shape, place_shape

MAX_ANOMALIES = 4
STOP_PROBABILITY = 0.5  # after each anomaly
TASK_NAMES = ("intra_blend", "inter_blend", "sink", "source", "intensity")


class AnomalyTask(Protocol):
    """The per-anomaly halves every task implements; the framework calls them in this order."""

    task_id: int
    name: str

    def draw(
        self,
        rng: np.random.Generator,
        image: np.ndarray,
        foreground: np.ndarray | None,
        shape: AnomalyShape,
        corner: tuple[int, ...],
        image_range: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Any:
        """Draw one anomaly's parameters. image: [C, *S] float32 (the sample so far, read only);
        foreground: [*S] bool or None; shape: placed with its box's first voxel at `corner`;
        image_range: per-channel (low [C], high [C]) float32 of the task's input image, which
        every anomaly of the sample is clipped to (None: the range of `image`)."""
        ...

    def apply(self, image: np.ndarray, shape: AnomalyShape, corner: tuple[int, ...], params: Any) -> np.ndarray:
        """Apply the drawn anomaly to `image` ([C, *S] float32) in place, changing only voxels
        inside the box at `corner`; returns the anomaly's voxels in its box, [*P] bool (every
        changed voxel among them)."""
        ...


def channel_range(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (min [C], max [C]) of a [C, *S] image."""
    flat = image.reshape(len(image), -1)
    return flat.min(axis=1), flat.max(axis=1)


def check_inputs(image: Any, foreground: Any, rng: Any) -> tuple[tuple[int, ...], tuple[np.ndarray, np.ndarray]]:
    """Validate a task call's arguments; returns the spatial shape S and the image's per-channel
    (low [C], high [C]) range (finite: a NaN or an infinity shows in the minimum or maximum).

    Raises:
        ValueError: naming the problem (type, dtype, rank, size, NaN/Inf, foreground shape or
            emptiness, generator).
    """
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a [C, *S] float32 numpy array, got {type(image).__name__}")
    if image.dtype != np.float32:
        raise ValueError(f"image must be float32, got {image.dtype}")
    if image.ndim < 2 or image.shape[0] < 1:
        raise ValueError(
            f"image must be [C, *S] (channels first, then the spatial axes: 2 for X-rays, 3 for volumes), "
            f"got shape {image.shape}"
        )
    spatial_shape = image.shape[1:]
    check_image_shape(spatial_shape)
    low, high = channel_range(image)
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ValueError("image has NaN or Inf values")
    if foreground is not None:
        if not isinstance(foreground, np.ndarray) or foreground.dtype != np.bool_:
            got = foreground.dtype if isinstance(foreground, np.ndarray) else type(foreground).__name__
            raise ValueError(f"foreground must be a bool numpy array or None, got {got}")
        if foreground.shape != spatial_shape:
            raise ValueError(f"foreground shape {foreground.shape} differs from the image's spatial shape {spatial_shape}")
        if not foreground.any():
            raise ValueError("foreground too small: the foreground mask is empty")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator (no global random state), got {type(rng).__name__}")
    return spatial_shape, (low, high)


class SyntheticTask:
    """A synthetic anomaly task: `task(image, foreground, rng) -> (anomalous, label)` (see the
    module docstring for shapes and dtypes).

    Draw order per anomaly: shape, corner, the task's parameters, then (before the 4th) the stop
    coin; so the same image, foreground and generator state give bit-identical results. Every
    anomaly of a sample is clipped to the input image's per-channel range (computed once per call,
    also the finiteness check), not to the range of the sample changed so far.
    """

    def __init__(self, task: AnomalyTask):
        self.task = task
        self.task_id = task.task_id
        self.name = task.name

    def __repr__(self) -> str:
        return f"SyntheticTask({self.task_id}, {self.name!r})"

    def __call__(
        self, image: np.ndarray, foreground: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        spatial_shape, image_range = check_inputs(image, foreground, rng)
        anomalous = image.copy()
        boxes = []
        for count in range(1, MAX_ANOMALIES + 1):
            shape = draw_shape(rng, spatial_shape)
            corner = place_shape(rng, shape, foreground, spatial_shape)
            params = self.task.draw(rng, anomalous, foreground, shape, corner, image_range)
            boxes.append((corner, self.task.apply(anomalous, shape, corner, params)))
            if count == MAX_ANOMALIES or rng.random() < STOP_PROBABILITY:
                break
        return anomalous, label_boxes(anomalous, image, boxes)


TaskFactory = Callable[..., AnomalyTask]
_REGISTRY: dict[int, tuple[str, TaskFactory]] = {}


def register_task(task_id: int, name: str, factory: TaskFactory) -> None:
    """Register `factory(**params) -> AnomalyTask` under a fixed id and name (replacing any
    previous registration of that id; a name may not move to another id)."""
    for other_id, (other_name, _) in _REGISTRY.items():
        if other_name == name and other_id != task_id:
            raise ValueError(f"task name {name!r} is already registered with id {other_id}")
    _REGISTRY[int(task_id)] = (name, factory)


def make_task(name_or_id: str | int, **params: Any) -> SyntheticTask:
    """The task with this id or name, built with `params` (see the module docstring).

    Raises:
        ValueError: an unknown task, or parameters the task does not take.
    """
    known = ", ".join(f"{task_id} {name}" for task_id, (name, _) in sorted(_REGISTRY.items()))
    if isinstance(name_or_id, str):
        found = [task_id for task_id, (name, _) in _REGISTRY.items() if name == name_or_id]
        if not found:
            raise ValueError(f"unknown anomaly task {name_or_id!r}; known tasks: {known}")
        task_id = found[0]
    elif isinstance(name_or_id, (int, np.integer)) and int(name_or_id) in _REGISTRY:
        task_id = int(name_or_id)
    else:
        raise ValueError(f"unknown anomaly task {name_or_id!r}; known tasks: {known}")
    name, factory = _REGISTRY[task_id]
    try:
        inspect.signature(factory).bind(**params)
    except TypeError as error:
        raise ValueError(f"task {name!r} does not take the parameters {sorted(params)}: {error}") from None
    return SyntheticTask(factory(**params))


# Built-in tasks; each factory imports its module on first use so importing the package stays light.
def _blend(task_id: int) -> TaskFactory:
    def factory(sources: Sequence | Callable | None = None, mix_gradients: bool = True) -> AnomalyTask:
        from lightwork.anomalies.blending import PoissonBlendTask

        return PoissonBlendTask(task_id, sources, mix_gradients)

    return factory


def _deformation(task_id: int) -> TaskFactory:
    def factory(max_push: float = 5.0) -> AnomalyTask:
        from lightwork.anomalies.deformation import DeformationTask

        return DeformationTask(task_id, max_push)

    return factory


def _intensity() -> AnomalyTask:
    from lightwork.anomalies.intensity import IntensityTask

    return IntensityTask()


register_task(0, TASK_NAMES[0], _blend(0))
register_task(1, TASK_NAMES[1], _blend(1))
register_task(2, TASK_NAMES[2], _deformation(2))
register_task(3, TASK_NAMES[3], _deformation(3))
register_task(4, TASK_NAMES[4], _intensity)


def warm_up() -> None:
    """Run every task once on a small generated image, so that the compiled kernels (numba: read
    from its on-disk cache, or compiled on a machine's first run) are loaded before the first real
    sample: a synthesis worker calls this while it starts, not during its first batch."""
    image = np.random.default_rng(0).random((1, 24, 24), dtype=np.float32)
    for task_id in range(len(TASK_NAMES)):
        task = make_task(task_id, sources=[image]) if task_id in (0, 1) else make_task(task_id)
        task(image, None, np.random.default_rng(task_id))
