"""A fold's training and validation data: prepared cases -> synthetic anomalies, streamed by Ray Data.

    items      a lazy Datasource (READ_CPUS per read task, one at a time, each up to about
               ROWS_PER_READ_TASK rows of whole data epochs) of (case_id, array_uri, slice, epoch)
               rows, one per sample (a case, or with data.slice_axis one eligible slice of a case,
               `lightwork.data.slices.training_samples`): for training, data epoch e = 0, 1, ...
               lists the plan's training-fold samples in an order drawn from
               sample_generator(seed, e, ORDER_KEY, -1) (no Ray shuffle: the order is part of the
               run's reproducibility); for validation, every validation-fold sample at epochs
               VALIDATION_EPOCH + v, v < data.val_per_case
    synthesis  map_batches(synthesise_items, TaskPoolStrategy(size=n)): up to n Ray tasks at once,
               each one item block (`rows_per_task`, up to CALLS_PER_TASK calls of
               `rows_per_call` samples); Ray Data merges a task's outputs into blocks of up to
               128 MiB. Tasks run in the job's pooled Ray worker processes, which outlive a fold:
               each keeps the `lightwork.synthesis.samples.BatchSynthesiser` of the streams it served
               last (anomaly tasks, source pools, case cache), so a fold starts no synthesis
               process of its own (an actor pool started one per fold, ~4 s on 2 cores)
    rows       training: image [C,*S] float32 (anomalous; healthy for a method trained on healthy
               images, `Method.trains_on` HEALTHY, with an all-zero label), label [*S] float32,
               + healthy [C,*S] (the image before its anomaly) for a method that
               `Method.needs_healthy` only;
               validation: healthy [C,*S], image [C,*S], label [*S] (healthy's label is all zero),
               task int8 (the sample's task id: the loop's per-task validation figures)
               (`keys=True` adds sample_key, case_id, task, epoch, slice for inspection); S is the
               slice's shape when slicing

Every sample is a function of (seed, epoch, case, tasks, image set) only, so the rows are the same
whatever the number of tasks at once, and in the same order under `ingest_options` (preserve_order).
The training stream holds enough data epochs for the whole run (`training_epochs`); validation is
synthesised once per fold (materialised) and read again every epoch.

Resources (ray-notes: a Ray Data stage that asks for more CPUs than are left hangs silently): a
trial's data budget B CPUs (`TrialPlan.cpus_for_data`, see `lightwork.distributed.resources`) pays
for the read task (READ_CPUS) and the synthesis pool (`plan_synthesis`). On a GPU cluster, the pool
needed to keep a GPU fed is ceil(GPU samples/s / (efficiency x per-core synthesis samples/s)),
efficiency being what one synthesis task slot delivers of the bare single-core rate (0.6-0.8 for 80x112x80 and
256x256 samples on 2-core machines: writing a task's output into the object store costs ~0.3-0.4
ms per MB, ~2 ms per float32 brain sample against ~6 ms of synthesis; benchmarks/pipeline.py
measures all three, benchmarks/training.py the GPU's rate); declare it as
`resources.data_cpus_per_trial`.

Synthesis tasks read the cases with the object-storage credentials of their own environment (the shell
that ran `ray start`, a pod's `envFrom`, the AWS credential chain): nothing secret travels in a
runtime_env, which Ray shows in its dashboard and state API.

A case that cannot be read or synthesised (a corrupt file, too little foreground) is skipped,
counted and logged by the worker process that met it (`BatchSynthesiser`): one bad volume must not stop a run over
thousands.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray
from ray.data import Datasource, ExecutionOptions, ExecutionResources, ReadTask
from ray.data.block import BlockMetadata

from lightwork.anomalies.seeding import sample_generator
from lightwork.config import RunConfig, TrainSection
from lightwork.data import manifest
from lightwork.data.slices import SampleRef, TrainingSamples, slice_shape, training_samples
from lightwork.distributed.resources import READ_CPUS, SynthesisPool, cluster_shape, plan_synthesis, plan_trials
from lightwork.synthesis.samples import VALIDATION_EPOCH, BatchSynthesiser
from lightwork.training.folds import FoldPlan, steps_per_epoch

log = logging.getLogger(__name__)

MAX_READ_TASKS = 256
# Items per read task. Read tasks run one at a time and each costs ~20-150 ms of scheduling on a busy
# 2-core node: one per data epoch (16 items for a 16-case set) starved the synthesis.
ROWS_PER_READ_TASK = 4096
ORDER_KEY = "<stream order>"  # the generator key of a data epoch's case order
VOXELS_PER_CALL = 2**21  # samples per synthesis call: about this many voxels (80x112x80: 3, 256x256: 32)
MAX_ROWS_PER_CALL = 32
# Synthesis calls per Ray task. Every task costs ~10-30 ms of scheduling on a busy 2-core node; at
# one call per task (25 ms for 3 brain samples) that left the worker idle a third of the time.
CALLS_PER_TASK = 16
MIN_TASKS_PER_SLOT = 4  # synthesis tasks per task slot, at least, when the stream is short (validation sets)
KEPT_SYNTHESISERS = 4  # per worker process: the streams of two trials at once, train and validation
IN_PROCESS_VOXELS = 2**22  # validation sets up to this size (samples x voxels) are synthesised in the driver
# A validation stream's columns without `keys`: what the Train loop reads (tensors and task ids).
VALIDATION_COLUMNS = ("healthy", "image", "label", "task")
ITEM_SCHEMA = pa.schema(
    [("case_id", pa.string()), ("array_uri", pa.string()), ("slice", pa.int64()), ("epoch", pa.int64())]
)


def ingest_options(data_cpus: float) -> ExecutionOptions:
    """Ray Data options for a trial's datasets: its CPU budget, rows in item order."""
    return ExecutionOptions(resource_limits=ExecutionResources.for_limits(cpu=data_cpus), preserve_order=True)


def training_epochs(train_cases: int, settings: TrainSection) -> int:
    """Data epochs the training stream holds: every step the run can take, plus one epoch of margin.

    The run stops at `max_epochs` epochs of `steps_per_epoch` or at `max_steps`, whichever comes first.
    """
    steps = settings.max_epochs * steps_per_epoch(train_cases, settings.batch_size, settings.epoch_steps)
    if settings.max_steps is not None:
        steps = min(steps, settings.max_steps)
    return math.ceil(steps * settings.batch_size / max(train_cases, 1)) + 1


def rows_per_call(shape: Sequence[int]) -> int:
    """Samples one synthesis call makes for cases of spatial `shape` (1-MAX_ROWS_PER_CALL)."""
    return int(np.clip(round(VOXELS_PER_CALL / max(1, math.prod(shape))), 1, MAX_ROWS_PER_CALL))


def rows_per_task(shape: Sequence[int], rows: int, tasks: int) -> int:
    """Items per synthesis task (one input block): CALLS_PER_TASK calls, fewer when a stream of
    `rows` items would otherwise give some of the `tasks` slots fewer than MIN_TASKS_PER_SLOT tasks."""
    per_call = rows_per_call(shape)
    return int(np.clip(rows // (MIN_TASKS_PER_SLOT * tasks), per_call, CALLS_PER_TASK * per_call))


def read_task_count(epochs: int, cases: int) -> int:
    """Item read tasks of about ROWS_PER_READ_TASK rows each (whole epochs, at most MAX_READ_TASKS)."""
    return min(epochs, MAX_READ_TASKS, max(1, math.ceil(epochs * cases / ROWS_PER_READ_TASK)))


def item_block_count(epochs: int, cases: int, block_rows: int) -> int:
    """Item blocks (synthesis tasks) of about `block_rows` rows over all read tasks."""
    tasks = read_task_count(epochs, cases)
    return tasks * max(1, round(epochs * cases / tasks / block_rows))


class _Items(Datasource):
    """(case_id, array_uri, slice, epoch) rows: for each epoch in `epochs`, every sample once, in
    the order drawn for that epoch (`shuffle`) or as given.

    A read task yields its rows as one table (Ray Data would merge smaller ones up to its target
    block size, 128 MiB); `item_block_count` is passed to `read_datasource` as
    `override_num_blocks`, so that Ray Data splits that table into blocks of about `block_rows` rows,
    one synthesis task each.
    """

    def __init__(
        self, cases: Sequence[tuple], epochs: Sequence[int], seed: int, shuffle: bool, block_rows: int
    ) -> None:
        super().__init__()
        self.cases, self.epochs, self.seed = [SampleRef(*case) for case in cases], list(epochs), seed
        self.shuffle, self.block_rows = shuffle, block_rows

    def estimate_inmemory_data_size(self) -> int:
        return 128 * len(self.cases) * len(self.epochs)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.cases))
        return sample_generator(self.seed, epoch, ORDER_KEY, -1).permutation(len(self.cases))

    def _table(self, epochs: list[int]) -> list[pa.Table]:
        """The rows of `epochs` as a one-table list (a read task's blocks)."""
        rows = [(self.cases[index], epoch) for epoch in epochs for index in self._order(epoch)]
        return [
            pa.table(
                {
                    "case_id": [case.case_id for case, _ in rows],
                    "array_uri": [case.array_uri for case, _ in rows],
                    "slice": [case.slice for case, _ in rows],
                    "epoch": [epoch for _, epoch in rows],
                },
                schema=ITEM_SCHEMA,
            )
        ]

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context=None
    ) -> list[ReadTask]:
        groups = [
            part
            for part in np.array_split(
                np.asarray(self.epochs, dtype=np.int64), read_task_count(len(self.epochs), len(self.cases))
            )
            if len(part)
        ]
        return [
            ReadTask(
                lambda group=[int(e) for e in group]: self._table(group),
                BlockMetadata(
                    num_rows=len(group) * len(self.cases),
                    size_bytes=128 * len(group) * len(self.cases),
                    input_files=None,
                    exec_stats=None,
                ),
                schema=ITEM_SCHEMA,
                per_task_row_limit=per_task_row_limit,
            )
            for group in groups
        ]


def item_dataset(
    cases: Sequence[tuple], epochs: Sequence[int], seed: int, shuffle: bool, block_rows: int
) -> ray.data.Dataset:
    """The (case_id, array_uri, slice, epoch) rows of `cases` (SampleRefs, or (case_id, array_uri)
    pairs) at `epochs` (order: `_Items`), in blocks of about `block_rows` rows: one synthesis
    task each."""
    source = _Items(cases, epochs, seed, shuffle, block_rows)
    return ray.data.read_datasource(
        source,
        num_cpus=READ_CPUS,
        concurrency=1,
        override_num_blocks=item_block_count(len(epochs), len(cases), block_rows),
    )


def _external(config: RunConfig) -> list[str]:
    if not config.data.external_manifest:
        return []
    rows = manifest.usable(manifest.read_manifest(config.data.external_manifest))
    if not rows:
        raise ValueError(f"{config.data.external_manifest}: the external dataset has no usable cases")
    return [row["array_uri"] for row in rows]


def synthesis_dataset(
    cases: Sequence[tuple],
    tasks: Sequence[int],
    config: RunConfig,
    seed: int,
    epochs: Sequence[int],
    *,
    validation: bool,
    pool: SynthesisPool,
    shape: Sequence[int],
    external: Sequence[str] = (),
    keys: bool = False,
    healthy_only: bool = False,
    with_healthy: bool = False,
) -> ray.data.Dataset:
    """The synthetic samples of `cases` (SampleRefs or (case_id, array_uri) pairs: their own
    image set) with `tasks` at `epochs`; with `healthy_only`, the cases as prepared instead
    (`Synthesiser.healthy_sample`: training samples of a method trained on healthy images); with
    `with_healthy`, training rows keep the image each sample was made from (`healthy`).

    Training order (validation=False): per epoch, the samples in a seed-drawn order; validation:
    as given, with `healthy`. `shape` is the samples' spatial shape (sets the samples per call);
    slices are cut along `config.data.slice_axis`.
    """
    if not cases:
        raise ValueError("no cases to synthesise from: the plan's folds hold no usable case")
    columns = validation_columns(keys) if validation else None
    block_rows = rows_per_task(shape, len(cases) * len(epochs), pool.tasks)
    items = item_dataset(cases, epochs, seed, shuffle=not validation, block_rows=block_rows)
    usable = item_block_count(len(epochs), len(cases), block_rows)  # more slots than blocks would idle
    return items.map_batches(
        synthesise_items,
        batch_size=rows_per_call(shape),
        batch_format="numpy",
        fn_kwargs={
            "stream": uuid.uuid4().hex,
            "seed": seed,
            "tasks": tuple(tasks),
            "image_set": list(cases),
            "external": list(external),
            "max_push": config.task_max_push,
            "validation": validation,
            "keys": keys or validation,
            "slice_axis": config.data.slice_axis,
            "healthy_only": healthy_only,
            "with_healthy": with_healthy,
            "columns": columns,
        },
        compute=ray.data.TaskPoolStrategy(size=min(pool.tasks, usable)),
        num_cpus=pool.cpus_per_task,
    )


# This worker process's synthesisers, by stream, the KEPT_SYNTHESISERS most recently used.
_SYNTHESISERS: OrderedDict[str, BatchSynthesiser] = OrderedDict()


def validation_columns(keys: bool) -> tuple[str, ...] | None:
    """The columns a validation stream keeps of `BatchSynthesiser(keys=True)`'s: all with `keys`
    (None), else VALIDATION_COLUMNS (the string keys would not convert to torch batches)."""
    return None if keys else VALIDATION_COLUMNS


def _kept(batch: dict[str, np.ndarray], columns: Sequence[str] | None) -> dict[str, np.ndarray]:
    return batch if columns is None else {name: batch[name] for name in columns if name in batch}


def synthesise_items(
    batch: dict[str, np.ndarray], stream: str, columns: Sequence[str] | None = None, **settings
) -> dict[str, np.ndarray]:
    """The synthesis task's batch function: item batch -> sample batch (`BatchSynthesiser`'s
    columns, only `columns` of them unless None). `stream` names the dataset (a fresh id per
    `synthesis_dataset`); its synthesiser, built from `settings` (BatchSynthesiser's arguments) on
    the stream's first batch in this process, serves its later ones: the case cache, source pools
    and skip counts carry over."""
    synthesiser = _SYNTHESISERS.pop(stream, None) or BatchSynthesiser(**settings)
    _SYNTHESISERS[stream] = synthesiser
    while len(_SYNTHESISERS) > KEPT_SYNTHESISERS:
        _SYNTHESISERS.popitem(last=False)
    return _kept(synthesiser(batch), columns)


@dataclass(frozen=True)
class _Part:
    """What one part ("train" or "val") of a fold synthesises."""

    cases: list[SampleRef]
    tasks: tuple[int, ...]
    epochs: list[int]
    shape: tuple[int, ...]
    external: list[str]


def run_samples(config: RunConfig, rows: list[dict] | None = None) -> TrainingSamples:
    """The samples of the run's training data by fold (`lightwork.data.slices.training_samples`:
    its healthy cases, or their eligible slices along data.slice_axis); `rows`: the usable rows of
    data.manifest when already read."""
    data = config.data
    if rows is None:
        rows = manifest.usable(manifest.read_manifest(data.manifest))
    return training_samples(rows, data.slice_axis, data.min_slice_foreground, data.lesion_free_slices)


def _parts(
    plan: FoldPlan, config: RunConfig, rows: list[dict] | None, samples: TrainingSamples | None = None
) -> dict[str, _Part]:
    """The "train" and "val" parts of a fold, from the usable `rows` of data.manifest (read here when
    None) and their `samples` (`run_samples`, drawn here when None)."""
    if rows is None:
        rows = manifest.usable(manifest.read_manifest(config.data.manifest))
    shape = tuple(rows[0]["shape"]) if rows else ()
    if config.data.slice_axis is not None and shape:
        shape = slice_shape(shape, config.data.slice_axis)
    samples = run_samples(config, rows) if samples is None else samples
    external = _external(config)
    train_cases = samples.refs(plan.train_folds)
    return {
        "train": _Part(
            train_cases, plan.train_tasks, list(range(training_epochs(len(train_cases), config.train))), shape, external
        ),
        "val": _Part(
            samples.refs(plan.val_folds),
            plan.val_tasks,
            [VALIDATION_EPOCH + version for version in range(config.data.val_per_case)],
            shape,
            external,
        ),
    }


def fold_dataset(
    plan: FoldPlan,
    config: RunConfig,
    seed: int,
    part: str,
    data_cpus: float | None = None,
    tasks: int | None = None,
    keys: bool = False,
) -> ray.data.Dataset:
    """The lazy "train" or "val" dataset of one fold model (rows: module docstring).

    Args:
        plan: the fold (its folds and tasks).
        config: the run (data.manifest, data.external_manifest, data.val_per_case, data.max_push, train).
        seed: the run seed.
        part: "train" (the plan's training folds and tasks, `training_epochs` data epochs) or "val"
            (its validation folds and tasks, data.val_per_case versions per case).
        data_cpus: the CPU budget of the dataset's stream; None: what one trial leaves on the cluster.
        tasks: a fixed number of synthesis tasks at once (default: planned from the budget).
        keys: add sample_key, case_id, task, epoch columns (a validation dataset has task always).
    """
    if part not in ("train", "val"):
        raise ValueError(f"part must be 'train' or 'val', got {part!r}")
    return _part_dataset(plan, config, seed, part, _parts(plan, config, None)[part], data_cpus, tasks, keys)


def _part_dataset(
    plan: FoldPlan,
    config: RunConfig,
    seed: int,
    part: str,
    what: _Part,
    data_cpus: float | None,
    tasks: int | None,
    keys: bool,
) -> ray.data.Dataset:
    if data_cpus is None:
        data_cpus = plan_trials(1, config.resources, cluster_shape()).cpus_for_data
    pool = plan_synthesis(data_cpus, tasks)
    log.info(
        "%s %s: %d cases x %d epochs, up to %d synthesis tasks at once x %.2f CPUs",
        plan.name,
        part,
        len(what.cases),
        len(what.epochs),
        pool.tasks,
        pool.cpus_per_task,
    )
    dataset = synthesis_dataset(
        what.cases,
        what.tasks,
        config,
        seed,
        what.epochs,
        validation=part == "val",
        pool=pool,
        shape=what.shape,
        external=what.external,
        keys=keys,
        **(_training_stream(config) if part == "train" else {}),
    )
    quiet(dataset)
    dataset.context.execution_options = ingest_options(data_cpus)
    return dataset


def _training_stream(config: RunConfig) -> dict[str, bool]:
    """`synthesis_dataset`'s options for the run's method's training stream: `healthy_only` when it
    trains on healthy images (`lightwork.methods.HEALTHY`: the stream synthesises no anomaly),
    `with_healthy` when its loss takes the clean images (`Method.needs_healthy`). Imported here,
    not at the top: the synthesis tasks' processes import this module and need no torch."""
    from lightwork.methods import HEALTHY, get_method

    method = get_method(config.method)
    return {"healthy_only": method.trains_on == HEALTHY, "with_healthy": method.needs_healthy}


def fold_datasets(
    plan: FoldPlan,
    config: RunConfig,
    seed: int,
    data_cpus: float | None = None,
    keys: bool = False,
    rows: list[dict] | None = None,
    samples: TrainingSamples | None = None,
) -> dict[str, ray.data.Dataset]:
    """{"train": Dataset, "val": materialised Dataset} of one fold model (see `fold_dataset`);
    `rows` and `samples`: the usable rows of data.manifest and their `run_samples` when the run has
    them already (`ResolvedRun.usable`; for slices, the masks of every case are read once).

    The validation set is synthesised once here and read again every epoch: by synthesis tasks,
    or, when it holds at most IN_PROCESS_VOXELS voxels, in this process (no task to wait for; the
    same rows).
    """
    parts = _parts(plan, config, rows, samples)
    train = _part_dataset(plan, config, seed, "train", parts["train"], data_cpus, None, keys)
    what = parts["val"]
    if len(what.cases) * len(what.epochs) * math.prod(what.shape) > IN_PROCESS_VOXELS:
        return {
            "train": train,
            "val": _part_dataset(plan, config, seed, "val", what, data_cpus, None, keys).materialize(),
        }
    if not what.cases:
        raise ValueError("no cases to synthesise from: the plan's folds hold no usable case")
    items = {
        "case_id": np.array([case.case_id for _ in what.epochs for case in what.cases]),
        "array_uri": np.array([case.array_uri for _ in what.epochs for case in what.cases]),
        "slice": np.array([case.slice for _ in what.epochs for case in what.cases], np.int64),
        "epoch": np.array([epoch for epoch in what.epochs for _ in what.cases], np.int64),
    }
    batch = BatchSynthesiser(
        seed,
        what.tasks,
        what.cases,
        what.external,
        config.task_max_push,
        validation=True,
        keys=True,
        slice_axis=config.data.slice_axis,
    )(items)
    batch = _kept(batch, validation_columns(keys))
    count = len(next(iter(batch.values()), ()))
    val = ray.data.from_items([{name: column[index] for name, column in batch.items()} for index in range(count)])
    return {"train": train, "val": quiet(val)}


def quiet(dataset: ray.data.Dataset) -> ray.data.Dataset:
    """No progress bars for a training stream (it is read every epoch in the Train worker: the
    bars would fill the job's log; Tune's table and TensorBoard show the progress)."""
    dataset.context.enable_progress_bars = False
    return dataset
