"""The synthetic anomaly task interface (docs/method.md sections 1 and 3); the tasks' ids, names and
parameters are `lightwork.anomalies.registry`'s.

Every task is one callable, `task(image, foreground, rng) -> (anomalous, label)`:

    image       [C, *S] float32, finite, every spatial axis >= 9 voxels
    foreground  [*S] bool with at least one voxel, or None
    rng         numpy.random.Generator: every random draw comes from it (no global state)
    anomalous   [C, *S] float32, a copy of the image with 1-4 anomalies of the task
    label       [*S] float32 in [0, 1], the soft label of the change (lightwork.anomalies.label)

The framework (`SyntheticTask`) owns the common recipe: draw a shape, place it (>= 50% on the
foreground), let the task draw its parameters and apply them inside the shape's box, then stop
with probability 0.5 (at most 4 anomalies), and label the final image against the input. A task
only implements the per-anomaly halves of `AnomalyTask`; this module imports no task.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from lightwork.anomalies.label import label_boxes
from lightwork.anomalies.shapes import AnomalyShape, check_image_shape, draw_shape, place_shape

MAX_ANOMALIES = 4
STOP_PROBABILITY = 0.5  # after each anomaly


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
            raise ValueError(
                f"foreground shape {foreground.shape} differs from the image's spatial shape {spatial_shape}"
            )
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
