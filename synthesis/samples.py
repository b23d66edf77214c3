"""Synthetic samples from prepared cases: the pure (Ray-free) half of the training stream.

One sample is one prepared case, one anomaly task and one (epoch) index, all reproducible:

    task          = tasks[sample_generator(seed, epoch, case_id, -1).integers(len(tasks))]
    image, label  = make_task(task, ...)(healthy, foreground, sample_generator(seed, epoch, case_id, task))

so a sample depends only on (run seed, epoch, case id, allowed tasks, the image set), never on the
process, actor or order that draws it. A method trained on healthy images (`lightwork.methods.HEALTHY`)
gets `healthy_sample`s: the prepared image (or slice) as it is, label all zero, task NO_TASK.
Validation version v of a case uses the epoch index
`VALIDATION_EPOCH + v`: the same validation set every epoch, drawn apart from every training epoch.

With a slice axis (`data.slice_axis`, `lightwork.data.slices`) a sample is one slice of a case and
its id is the slice's (`slice_sample_id`, in place of case_id above); its blend sources are 2D
too: a slice of another case of the image set, and of a 3D external case a slice drawn uniformly
with the sample's generator. A 3D external case blended into 2D cases without a slice axis (brain
volumes as the external set of chest X-rays) gives a slice along its axial axis (AXIAL_AXIS).

Sources of the blending tasks, by what each declares (`lightwork.anomalies.registry.task_sources`;
docs/method.md section 2):
    IMAGE_SET (0 intra_blend)  another case of the same image set (the training folds' cases for training
                   samples, the validation folds' for validation), chosen with the sample's generator.
    EXTERNAL (1 inter_blend)  a case of the external dataset (`data.external_manifest`: any prepared folder,
                   e.g. chest X-rays for brains, brain volumes for X-rays) when one is given.
                   Without one, a stand-in external pool: STANDIN_COUNT procedurally textured images of
                   the image set's shape and rank (smooth noise at three scales plus sharp-edged
                   ellipsoids of random intensity, one channel), a function of the run seed only. A
                   log line says when the stand-in is used. Either way each source patch is given the
                   target's gradient scale (`lightwork.anomalies.blending`), so that task 1 is as
                   visible as task 0 whatever the external set's intensity scale and resolution.
The other tasks take no sources; the run's `max_push` goes to those that take one (the deformations).
Cases are read through a bounded least-recently-used cache (one per process).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lightwork.anomalies.parameters import DEFAULT_MAX_PUSH
from lightwork.anomalies.registry import (
    EXTERNAL,
    IMAGE_SET,
    TASK_COUNT,
    TASK_NAMES,
    make_task,
    task_parameters,
    task_sources,
    warm_up,
)
from lightwork.anomalies.seeding import sample_generator, stable_id
from lightwork.data.cases import PreparedCase, load_case
from lightwork.data.slices import AXIAL_AXIS, WHOLE, SampleRef, slice_sample_id, take_slice
from lightwork.demo.fields import smooth_noise

log = logging.getLogger(__name__)

NO_TASK = -1  # the task of a healthy sample (no anomaly)
VALIDATION_EPOCH = 2**40  # epoch index of validation version 0; training epochs stay far below
CACHE_CASES = 32  # prepared cases a process keeps in memory (80x112x80: ~3 MB each)
SOURCE_TRIES = 8  # draws of a readable blend source before a sample fails
MAX_SKIPPED_FRACTION = 0.25  # of the samples a synthesiser has seen: more failing is no longer "one bad volume"
MIN_SKIPPED_TO_FAIL = 3
STANDIN_COUNT = 8  # stand-in external images
STANDIN_SCALES = ((0.02, 0.3), (0.06, 0.5), (0.15, 0.8))  # (noise sigma / min(shape), weight)


@dataclass(frozen=True)
class Sample:
    """One synthetic sample.

    key: "{sample id}@{epoch}" (unique per sample of a run; the sample id is the case id, or the
    slice's `slice_sample_id`); image: anomalous [C, *S] float32; label: [*S] float32 in [0, 1];
    healthy: the case's (slice's) image [C, *S] float32; slice: its index along the slice axis
    (WHOLE for a whole case).
    """

    key: str
    case_id: str
    epoch: int
    task: int
    image: np.ndarray
    label: np.ndarray
    healthy: np.ndarray
    slice: int = WHOLE


class CaseCache:
    """Prepared cases by URI, the `capacity` most recently used kept in memory."""

    def __init__(self, capacity: int = CACHE_CASES) -> None:
        self.capacity = capacity
        self._cases: OrderedDict[str, PreparedCase] = OrderedDict()

    def __contains__(self, uri: str) -> bool:
        return uri in self._cases

    def get(self, uri: str) -> PreparedCase:
        """The case at `uri`; ValueError naming the file when it is not a readable prepared case."""
        case = self._cases.pop(uri, None)
        if case is None:
            case = load_case(uri)
        self._cases[uri] = case
        while len(self._cases) > self.capacity:
            self._cases.popitem(last=False)
        return case


@dataclass(frozen=True)
class StandinParams:
    """The random choices of one stand-in external image."""

    noise: tuple[np.ndarray, ...]  # one smoothed noise field [*S] per scale
    centres: np.ndarray  # [K, D] ellipsoid centres, voxels
    radii: np.ndarray  # [K, D] semi-axes, voxels
    values: np.ndarray  # [K] intensity added inside each ellipsoid


def draw_standin(rng: np.random.Generator, shape: Sequence[int]) -> StandinParams:
    """Noise fields and 3-6 ellipsoids for a stand-in image of spatial `shape`."""
    shape = tuple(int(n) for n in shape)
    noise = tuple(smooth_noise(rng, shape, max(1.0, fraction * min(shape))) for fraction, _ in STANDIN_SCALES)
    count = int(rng.integers(3, 7))
    extent = np.array(shape, dtype=float)
    centres = rng.uniform(0.15, 0.85, size=(count, len(shape))) * extent
    radii = rng.uniform(0.05, 0.3, size=(count, len(shape))) * extent
    return StandinParams(noise, centres, radii, rng.uniform(-1.5, 1.5, size=count))


def render_standin(params: StandinParams) -> np.ndarray:
    """The stand-in image, [1, *S] float32 rescaled to [0, 1] (its scale does not matter: the blend
    gives its patches the target's gradient scale)."""
    image = sum(weight * field for (_, weight), field in zip(STANDIN_SCALES, params.noise))
    grid = np.indices(image.shape, dtype=np.float32)
    for centre, radii, value in zip(params.centres, params.radii, params.values):
        inside = sum(((grid[d] - centre[d]) / radii[d]) ** 2 for d in range(image.ndim)) <= 1.0
        image[inside] += value
    image -= image.min()
    image /= max(float(image.max()), 1e-8)
    return image[None].astype(np.float32)


def standin_sources(seed: int, shape: Sequence[int], count: int = STANDIN_COUNT) -> list[np.ndarray]:
    """The stand-in external pool: `count` [1, *S] float32 images, a function of (seed, shape) only."""
    key = stable_id("standin-external:" + "x".join(str(int(n)) for n in shape))
    return [
        render_standin(draw_standin(np.random.default_rng(np.random.SeedSequence([int(seed), key, index])), shape))
        for index in range(count)
    ]


class Synthesiser:
    """Draws samples of one image set with a set of tasks.

    Args:
        seed: the run seed.
        tasks: allowed task ids (0-4), e.g. a fold plan's train_tasks or val_tasks.
        image_set: (case_id, array_uri) or (case_id, array_uri, slice) (`SampleRef`) of every
            sample of the image set (intra_blend's sources).
        external: array URIs of the external dataset's prepared cases (inter_blend's sources);
            empty: the stand-in pool (see the module docstring).
        max_push: the deformation tasks' largest push, voxels (5 brain, 10 CXR).
        cache_cases: prepared cases kept in memory.
        slice_axis: the spatial axis samples are sliced along (None: whole cases).
    """

    def __init__(
        self,
        seed: int,
        tasks: Sequence[int],
        image_set: Sequence[tuple[str, str]],
        external: Sequence[str] = (),
        max_push: float = DEFAULT_MAX_PUSH,
        cache_cases: int = CACHE_CASES,
        slice_axis: int | None = None,
    ) -> None:
        self.tasks = tuple(int(task) for task in tasks)
        if not self.tasks or any(task not in range(TASK_COUNT) for task in self.tasks):
            raise ValueError(f"tasks must be a non-empty subset of 0-{TASK_COUNT - 1}, got {tasks}")
        if not image_set:
            raise ValueError("the image set is empty: no case to synthesise from")
        self.seed = int(seed)
        self.image_set = [SampleRef(str(entry[0]), str(entry[1]), *map(int, entry[2:])) for entry in image_set]
        self.external = [SampleRef("", str(uri)) for uri in external]
        self.slice_axis = slice_axis
        self._sample_dims = 0  # spatial dims of the samples, known from the first one drawn
        self.cache = CaseCache(cache_cases)
        self._make_task = make_task
        self._sources = {task: task_sources(task) for task in self.tasks}
        self._tasks = {}
        for task, sources in self._sources.items():
            if sources is None:
                parameters = {"max_push": max_push} if "max_push" in task_parameters(task) else {}
                self._tasks[task] = make_task(task, **parameters)
            elif sources == EXTERNAL and self.external:
                self._tasks[task] = make_task(task, sources=self._external_source)
        self._standin_tasks: dict[tuple[int, tuple[int, ...]], object] = {}

    def _source(self, rng: np.random.Generator, refs: Sequence[SampleRef]) -> tuple[np.ndarray, np.ndarray | None]:
        """A source drawn from `refs`; an unreadable one is logged and drawn again (SOURCE_TRIES
        times: the draws depend on the files only, never on what this process has seen). A 3D
        source of 2D samples is cut at its ref's slice, or, for a whole case, at a drawn one (along
        the slice axis, or the axial axis for 2D cases)."""
        problem = ""
        for _ in range(SOURCE_TRIES):
            ref = refs[int(rng.integers(len(refs)))]
            try:
                case = self.cache.get(ref.array_uri)
            except ValueError as error:
                problem = str(error)
                log.warning("blend source skipped: %s", problem)
                continue
            image, foreground = case.image, case.foreground
            if image.ndim == 4 and self._sample_dims == 2:
                axis = AXIAL_AXIS if self.slice_axis is None else self.slice_axis
                index = ref.slice if ref.slice != WHOLE else int(rng.integers(image.shape[1 + axis]))
                image, foreground = take_slice(image, foreground, axis, index)
            return image, (foreground if foreground.any() else None)
        raise ValueError(f"no readable blend source in {SOURCE_TRIES} draws: {problem}")

    def _external_source(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        return self._source(rng, self.external)

    def _task(self, task: int, case_id: str, shape: tuple[int, ...]):
        if self._sources[task] == IMAGE_SET:
            others = [ref for ref in self.image_set if ref.case_id != case_id] or self.image_set
            return self._make_task(task, sources=lambda rng: self._source(rng, others))
        if self._sources[task] == EXTERNAL and not self.external:
            if (task, shape) not in self._standin_tasks:
                log.warning(
                    "%s: no external dataset given (data.external_manifest); using %d procedurally "
                    "textured stand-in images of shape %s from the run seed",
                    TASK_NAMES[task],
                    STANDIN_COUNT,
                    shape,
                )
                self._standin_tasks[task, shape] = self._make_task(task, sources=standin_sources(self.seed, shape))
            return self._standin_tasks[task, shape]
        return self._tasks[task]

    def pick_task(self, sample_id: str, epoch: int) -> int:
        """The task of the sample (sample id, epoch): uniform over the allowed tasks."""
        return self.tasks[int(sample_generator(self.seed, epoch, sample_id, -1).integers(len(self.tasks)))]

    def _healthy(self, case_id: str, uri: str, slice_index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """(image [C, *S], foreground [*S], sample id) of a case, or of its slice `slice_index`."""
        case = self.cache.get(uri)
        if slice_index == WHOLE:
            return case.image, case.foreground, case_id
        if self.slice_axis is None:
            raise ValueError(f"case {case_id}: slice {slice_index} asked of a synthesiser without a slice axis")
        try:
            healthy, foreground = take_slice(case.image, case.foreground, self.slice_axis, slice_index)
        except ValueError as error:
            raise ValueError(f"case {case_id} ({uri}): {error}") from error
        return healthy, foreground, slice_sample_id(case_id, self.slice_axis, slice_index)

    def healthy_sample(self, case_id: str, uri: str, epoch: int, slice_index: int = WHOLE) -> Sample:
        """The case (or slice) as prepared, label all zero, task NO_TASK: nothing is drawn."""
        healthy, _, sample_id = self._healthy(case_id, uri, slice_index)
        label = np.zeros(healthy.shape[1:], np.float32)
        return Sample(f"{sample_id}@{epoch}", case_id, epoch, NO_TASK, healthy, label, healthy, slice_index)

    def sample(self, case_id: str, uri: str, epoch: int, slice_index: int = WHOLE) -> Sample:
        """The sample of case `case_id` (stored at `uri`), or of its slice `slice_index` along the
        slice axis, at `epoch`.

        Raises:
            ValueError: the case cannot be read, or the task cannot place an anomaly on it (the
                message names the case, its file, the slice and the task).
        """
        healthy, foreground, sample_id = self._healthy(case_id, uri, slice_index)
        self._sample_dims = healthy.ndim - 1
        task = self.pick_task(sample_id, epoch)
        rng = sample_generator(self.seed, epoch, sample_id, task)
        try:
            image, label = self._task(task, case_id, healthy.shape[1:])(healthy, foreground, rng)
        except ValueError as error:
            raise ValueError(f"case {sample_id} ({uri}), task {task}, epoch {epoch}: {error}") from error
        return Sample(f"{sample_id}@{epoch}", case_id, epoch, task, image, label, healthy, slice_index)

    def validation_sample(self, case_id: str, uri: str, version: int, slice_index: int = WHOLE) -> Sample:
        """Validation version `version` of a case or slice (the same in every epoch of training)."""
        return self.sample(case_id, uri, VALIDATION_EPOCH + version, slice_index)


class BatchSynthesiser:
    """Item batches -> sample batches (what a synthesis task of `lightwork.distributed.stream` runs,
    importing nothing heavier than numpy so that the worker processes start fast).

    Input columns: case_id, array_uri (str), epoch (int), optionally slice (int; WHOLE or absent:
    the whole case). Output: image [B, C, *S] float32, label [B, *S] float32, + healthy [B, C, *S]
    (the image each sample was made from; with `validation` or `with_healthy`), + sample_key,
    case_id, task (int8), epoch, slice (`keys`). With `healthy_only` the samples are
    `Synthesiser.healthy_sample`s (a method trained on healthy images). An item that raises
    ValueError (an unreadable case, one a task cannot use) is skipped, counted (`skipped`) and
    logged; a batch whose items all fail is empty. When more than MAX_SKIPPED_FRACTION of the
    items seen fail (and at least MIN_SKIPPED_TO_FAIL), the data or the code is broken, not one
    volume: the last error is raised.
    """

    def __init__(
        self,
        seed: int,
        tasks: Sequence[int],
        image_set: Sequence[tuple[str, str]],
        external: Sequence[str],
        max_push: float,
        validation: bool,
        keys: bool,
        slice_axis: int | None = None,
        healthy_only: bool = False,
        with_healthy: bool = False,
    ) -> None:
        self.synthesiser = Synthesiser(seed, tasks, image_set, external, max_push, slice_axis=slice_axis)
        self.validation, self.keys, self.with_healthy = validation, keys, with_healthy
        self.draw = self.synthesiser.healthy_sample if healthy_only else self.synthesiser.sample
        self.seen = self.skipped = 0
        warm_up()  # the compiled kernels load once, before the first sample

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        samples = []
        slices = batch.get("slice", np.full(len(batch["case_id"]), WHOLE))
        for case_id, uri, epoch, index in zip(batch["case_id"], batch["array_uri"], batch["epoch"], slices):
            self.seen += 1
            try:
                samples.append(self.draw(str(case_id), str(uri), int(epoch), int(index)))
            except ValueError as error:
                self.skipped += 1
                if self.skipped >= MIN_SKIPPED_TO_FAIL and self.skipped > MAX_SKIPPED_FRACTION * self.seen:
                    raise ValueError(f"{self.skipped} of {self.seen} samples failed; the last: {error}") from error
                log.warning(
                    "skipped a sample (%d of %d skipped by this process so far): %s", self.skipped, self.seen, error
                )
        if not samples:
            return {}
        out = {"image": np.stack([s.image for s in samples]), "label": np.stack([s.label for s in samples])}
        if self.validation or self.with_healthy:
            out["healthy"] = np.stack([s.healthy for s in samples])
        if self.keys:
            out.update(
                sample_key=np.array([s.key for s in samples]),
                case_id=np.array([s.case_id for s in samples]),
                task=np.array([s.task for s in samples], np.int8),
                epoch=np.array([s.epoch for s in samples], np.int64),
                slice=np.array([s.slice for s in samples], np.int64),
            )
        return out
