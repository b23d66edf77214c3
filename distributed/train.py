"""Every fold model of the requested splits as concurrent Ray Tune trials, each a Ray Train run.

    Tuner(driver)  one trial per fold (task combination), `max_concurrent_trials` from the plan
      driver(fold) builds the fold's Ray Datasets and fits a TorchTrainer (DDP when
                   num_workers > 1; elastic when resources.min_workers < num_workers), with
                   TuneReportCallback so Tune's trial table shows the epochs
        train_loop_per_worker  `FoldTrainer` over `get_dataset_shard("train"/"val")`, restoring
                   from `ray.train.get_checkpoint()` after a worker failure (FailureConfig)

Resources: declared per trial in `RunConfig.resources`, planned against the cluster's shape by
`lightwork.distributed.resources` (on an autoscaling cluster, trials wait as PENDING while the
autoscaler adds the nodes they ask for).

Faults and resumption: Train restarts a fold's worker group (resources.max_failures); Tune runs a
trial again when its driver or node is lost (resources.trial_max_failures). Each fold's Train run
is named after the fold inside the run folder, so a retried trial, or the same command run again,
resumes an interrupted fold from its latest checkpoint; folds whose record says "done" are not
trained again. Tune's own experiment is not restored (its name carries the start time): the fold
records and Train's same-name restore are what resume.

Each reported checkpoint is a folder with `model.pt` + `model.json` (loadable by
`lightwork.models.load_model`), `trainer.pt` (optimizer, scheduler, counters) and `history.json`;
Train keeps the best one by train.select_by (`kept_checkpoint_score`) and the latest.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

import ray
import torch
from ray import train, tune

from lightwork.config import SELECT_BY, TrainSection, config_from_dict
from lightwork.data import storage
from lightwork.data.slices import TrainingSamples
from lightwork.distributed import stream
from lightwork.distributed.resources import TRIAL_DRIVER_CPUS, TrialPlan, autoscaler_can_add, cluster_shape, plan_trials
from lightwork.methods import get_method
from lightwork.models import build_model, save_model
from lightwork.training import runs
from lightwork.training.folds import FoldPlan, select_folds, steps_per_epoch
from lightwork.training.loop import EpochResult, FoldTrainer
from lightwork.training.resolve import ResolvedRun

TRAINER_STATE_FILE = "trainer.pt"
HISTORY_FILE = "history.json"


def _all_reduce_sum(sums: torch.Tensor) -> torch.Tensor:
    """Validation sums of every data-parallel worker, added up."""
    torch.distributed.all_reduce(sums)
    return sums


class _Events:
    """Per-epoch scalars as TensorBoard event files under `{fold dir}/tensorboard` (and MLflow when
    `MLFLOW_TRACKING_URI` is set and mlflow is installed)."""

    def __init__(self, fold_uri: str, fold_name: str) -> None:
        from tensorboardX import SummaryWriter

        self.local = tempfile.mkdtemp(prefix="lightwork-tb-")
        self.remote = storage.join(fold_uri, "tensorboard")
        self.writer = SummaryWriter(self.local)
        self.mlflow = None
        if os.environ.get("MLFLOW_TRACKING_URI"):
            try:
                import mlflow
            except ImportError:
                mlflow = None
            if mlflow is not None:
                mlflow.set_experiment("lightwork")
                mlflow.start_run(run_name=fold_name)
                self.mlflow = mlflow

    def log(self, result: EpochResult) -> None:
        scalars = {
            "loss/train": result.train_loss,
            "loss/val": result.val_loss,
            "loss/val_healthy": result.val_loss_healthy,
            "loss/val_anomalous": result.val_loss_anomalous,
            "ap/val_pixel": result.val_pixel_ap,
            "dice/val": result.val_dice,
            "dice/val_threshold": result.val_dice_threshold,
            "lr": result.lr,
            "data_wait_share": result.data_wait_share,
            "best_val_loss": result.best_val_loss,
            **{f"tasks/{key}": value for key, value in result.val_by_task.items()},
        }
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, result.step)
        self.writer.flush()
        for name in os.listdir(self.local):
            with open(os.path.join(self.local, name), "rb") as handle:
                storage.write_bytes(storage.join(self.remote, name), handle.read())
        if self.mlflow is not None:
            self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in scalars.items()}, step=result.step)

    def close(self) -> None:
        self.writer.close()
        if self.mlflow is not None:
            self.mlflow.end_run()


def train_loop_per_worker(loop_config: dict) -> None:
    """Ray Train worker: trains the fold model on this worker's dataset shards.

    loop_config: {"run": RunConfig as dict, "fold_uri": str, "fold_name": str, "steps_per_epoch": int}.
    """
    config = config_from_dict(loop_config["run"])
    settings = config.train
    context = train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(config.seed)
    model = build_model(config.model)
    # A GPU Ray granted is used only where torch can drive it (a fake or unsupported GPU trains on CPU).
    device = train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")
    trainer = FoldTrainer(
        model,
        settings,
        device,
        seed=config.seed,
        flip_axis=config.data.left_right_axis,
        method=get_method(config.method),
    )
    if world > 1:
        trainer.sum_over_workers = _all_reduce_sum
    saved = train.get_checkpoint()
    if saved is not None:
        with saved.as_directory() as folder:
            trainer.load_state_dict(
                torch.load(os.path.join(folder, TRAINER_STATE_FILE), map_location=device, weights_only=True)
            )
    if world > 1:
        trainer.model = train.torch.prepare_model(trainer.model)
    train_shard = train.get_dataset_shard("train")
    val_shard = train.get_dataset_shard("val")
    steps = max(1, loop_config["steps_per_epoch"] // world)
    batch_iterator = iter(())

    def train_batches(epoch: int):
        """`steps` batches from one persistent stream, restarted when it ends."""
        nonlocal batch_iterator
        for _ in range(steps):
            batch = next(batch_iterator, None)
            if batch is None:
                batch_iterator = iter(
                    train_shard.iter_torch_batches(batch_size=settings.batch_size, drop_last=True, device=device)
                )
                batch = next(batch_iterator, None)
                if batch is None:
                    raise ValueError(
                        f"{loop_config['fold_name']}: the training stream yields no full batch of {settings.batch_size}"
                    )
            yield batch

    def val_batches(epoch: int):
        return val_shard.iter_torch_batches(batch_size=settings.val_batch_size, device=device)

    events = _Events(loop_config["fold_uri"], loop_config["fold_name"]) if rank == 0 else None

    def report(result: EpochResult) -> None:
        metrics = result.metrics()
        if rank != 0:
            train.report(metrics)
            return
        events.log(result)
        with tempfile.TemporaryDirectory() as folder:
            save_model(trainer.model, folder)
            torch.save(trainer.state_dict(), os.path.join(folder, TRAINER_STATE_FILE))
            with open(os.path.join(folder, HISTORY_FILE), "w") as handle:
                json.dump(trainer.state.history, handle)
            train.report(metrics, checkpoint=train.Checkpoint.from_directory(folder))

    if trainer.state.epoch and trainer.state.history and trainer.state.history[-1]["stop"]:
        return  # restored after the final epoch: nothing left to do
    trainer.fit(train_batches, val_batches, report)
    if events is not None:
        events.close()


def _ray_storage(uri: str):
    """(storage_path, storage_filesystem) for Ray's RunConfigs: a remote URI becomes a pyarrow
    filesystem carrying endpoint and credentials (Train's controller actor lacks the variables)."""
    if not storage.is_remote(uri):
        return uri, None
    filesystem, path = storage.pyarrow_filesystem(uri)
    return path, filesystem


def _fold_uri(run: str, plan: FoldPlan) -> str:
    return storage.join(run, plan.name)


@ray.remote
def _nccl_usable() -> bool:
    """Whether torch on this worker can run NCCL (a CUDA device and an NCCL build)."""
    return torch.cuda.is_available() and torch.distributed.is_nccl_available()


def torch_backend(plan: TrialPlan) -> str:
    """The DDP backend the fold's workers can really use: NCCL where torch on a node with the
    worker's bundle has CUDA and NCCL, else gloo (CPU clusters, and GPUs torch cannot drive)."""
    if plan.gpus_per_worker <= 0:
        return "gloo"
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    # Out of the Tune trial's placement group (which holds only the driver's CPUs), onto a worker's node.
    probe = _nccl_usable.options(
        num_cpus=plan.cpus_per_worker,
        num_gpus=plan.gpus_per_worker,
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None),
    )
    return "nccl" if ray.get(probe.remote()) else "gloo"


@dataclass(frozen=True)
class _RunTrials:
    """The folds of one run to train as trials of an experiment, and what they share through the
    object store: `run` (the run folder's URI), `resolved` (its config, usable manifest rows and
    fold plans), `samples` (what an epoch goes over: its cases, or their slices), `todo` (the
    folds to train) and `prefix`, which makes a fold's trial key (and its name on the console)
    unique among the experiment's runs: "" for a run trained alone, "{run name}/" beside others."""

    run: str
    resolved: ResolvedRun
    samples: TrainingSamples
    todo: tuple[FoldPlan, ...]
    prefix: str = ""

    def key(self, plan: FoldPlan) -> str:
        """The trial key of fold `plan`, e.g. "split1-4_tasks0" or "demo-autoencoder/split1-4_tasks0"."""
        return self.prefix + plan.name

    def steps_per_epoch(self, plan: FoldPlan) -> int:
        """Optimizer steps of one epoch of fold `plan` (over its training folds' samples)."""
        sizes, settings = self.samples.fold_counts(), self.resolved.config.train
        return steps_per_epoch(
            sum(sizes.get(fold, 0) for fold in plan.train_folds), settings.batch_size, settings.epoch_steps
        )

    def total_steps(self, plan: FoldPlan) -> int:
        """The most optimizer steps fold `plan` trains: train.max_epochs epochs, at most train.max_steps."""
        settings, count = self.resolved.config.train, self.steps_per_epoch(plan)
        total = count * settings.max_epochs
        return total if settings.max_steps is None else min(settings.max_steps, total)


def _driver(trial_config: dict, *, trials: dict[str, tuple[_RunTrials, FoldPlan]], resources: TrialPlan) -> None:
    """One Tune trial: fit the TorchTrainer of the fold whose key (`_RunTrials.key`) is
    `trial_config["fold"]`, then write its fold record in its run's folder.

    A mistake in the run's data or settings (ValueError) fails the fold for good; anything else
    (a lost node, a dead driver or controller) is raised for Tune to run the trial again.
    """
    trial, plan = trials[trial_config["fold"]]
    record = runs.FoldRecord.from_plan(plan)
    record.status = "running"
    runs.write_record(trial.run, record)
    try:
        _fit_fold(plan, record, trial, resources)
    except Exception as error:
        record.status, record.error = "failed", f"{type(error).__name__}: {error}"
        runs.write_record(trial.run, record)
        if not isinstance(error, ValueError):
            raise


def kept_checkpoint_score(settings: TrainSection) -> tuple[str, str]:
    """The reported metric and order by which Train keeps a fold's checkpoint: train.select_by's
    figure in its `SELECT_BY` order for train.keep_checkpoint "best", the step for "last"."""
    if settings.keep_checkpoint == "last":
        return "step", "max"
    return settings.select_by, SELECT_BY[settings.select_by]


def _fit_fold(plan: FoldPlan, record: runs.FoldRecord, trial: _RunTrials, resources: TrialPlan) -> None:
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    config, run = trial.resolved.config, trial.run
    kept_by, order = kept_checkpoint_score(config.train)
    storage_path, filesystem = _ray_storage(run)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "run": config.to_dict(),
            "fold_uri": _fold_uri(run, plan),
            "fold_name": plan.name,
            "steps_per_epoch": trial.steps_per_epoch(plan),
        },
        torch_config=TorchConfig(backend=torch_backend(resources)),
        scaling_config=train.ScalingConfig(
            num_workers=resources.num_workers,
            use_gpu=resources.gpus_per_worker > 0,
            resources_per_worker=resources.worker_bundle,
        ),
        datasets=stream.fold_datasets(
            plan,
            config,
            config.seed,
            data_cpus=resources.cpus_for_data,
            rows=trial.resolved.usable,
            samples=trial.samples,
        ),
        # One worker needs no shards; skipping the split saves a coordinator actor per dataset.
        # The ingest options keep the stream within the trial's CPU budget and in item order.
        dataset_config=train.DataConfig(
            datasets_to_split=[] if resources.num_workers == 1 else "all",
            execution_options=stream.ingest_options(resources.cpus_for_data),
        ),
        run_config=train.RunConfig(
            name=plan.name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=train.FailureConfig(max_failures=config.resources.max_failures),
            checkpoint_config=train.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=kept_by, checkpoint_score_order=order
            ),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    pick = min if order == "min" else max
    best_checkpoint, best_metrics = pick(result.best_checkpoints, key=lambda pair: pair[1][kept_by])
    with result.checkpoint.as_directory() as folder:
        with open(os.path.join(folder, HISTORY_FILE)) as handle:
            record.history = json.load(handle)
    record.best_checkpoint = best_checkpoint.path if not storage.is_remote(run) else _as_uri(run, best_checkpoint.path)
    record.best_val_loss, record.best_step = best_metrics["val_loss"], best_metrics["step"]
    record.val_dice_threshold, record.val_dice = best_metrics["val_dice_threshold"], best_metrics["val_dice"]
    record.epochs, record.steps = record.history[-1]["epoch"], record.history[-1]["step"]
    record.status = "done"
    runs.write_record(run, record)


def _as_uri(run: str, path: str) -> str:
    """Train reports remote checkpoint paths without their scheme; give them the run's scheme back."""
    scheme = run.split("://", 1)[0]
    return path if "://" in path else f"{scheme}://{path}"


def describe_folds(plans: list[FoldPlan], fold_sizes: dict[int, int]) -> list[str]:
    """What `--dry-run` prints about the folds: one line per model, its position in its split
    (what `--folds` selects), tasks and cases."""

    def cases(folds) -> int:
        return sum(fold_sizes.get(fold, 0) for fold in folds)

    return [
        f"{plan.index:>2}  {plan.name:<28} train tasks {','.join(map(str, plan.train_tasks)):<8} folds "
        f"{','.join(map(str, plan.train_folds)):<8} ({cases(plan.train_folds)} cases)   val tasks "
        f"{','.join(map(str, plan.val_tasks)):<8} folds {','.join(map(str, plan.val_folds)):<8} "
        f"({cases(plan.val_folds)} cases)"
        for plan in plans
    ]


class _FoldLines(tune.Callback):
    """The console's view of training, printed by the driver in place of Tune's tables: a line per
    fold epoch (its step of the fold's total, validation loss and pixel AP, time so far) and one
    per finished fold (its record says how it went), each naming the fold by its trial key.
    `folds`: trial key -> (its run folder's URI, its plan, its most optimizer steps)."""

    def __init__(self, folds: dict[str, tuple[str, FoldPlan, int]]) -> None:
        self.folds = folds

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        key = trial.config["fold"]
        print(
            f"fold {key}: step {result['step']} of {self.folds[key][2]}, val loss {result['val_loss']:.5f}, "
            f"val pixel AP {result['val_pixel_ap']:.3f} ({result['time_total_s']:.0f} s)",
            flush=True,
        )

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        key = trial.config["fold"]
        run, plan, _ = self.folds[key]
        record = runs.read_record(run, plan)
        best = "-" if record.best_val_loss is None else f"{record.best_val_loss:.5f}"
        error = f" ({record.error})" if record.error else ""
        print(f"fold {key}: {record.status}, {record.epochs} epochs, best val loss {best}{error}", flush=True)

    on_trial_error = on_trial_complete


def train_splits(
    resolved: ResolvedRun, dry_run: bool = False, folds: Sequence[int] | None = None
) -> list[runs.FoldRecord]:
    """Train every unfinished fold of the resolved run's splits (`resolve_run`: "1/4", "1/4,2/3" or
    "all") on the connected Ray cluster, or only the folds of each split at the positions `folds`
    (`FoldPlan.index`, as `--dry-run` lists them); write `config.yaml` and add every fold of the
    splits to the run's `folds.json` (so folds and splits trained by separate calls add up) under
    `{storage_path}/{name}`; return the records of the folds asked for.

    The trials' resources are planned (and checked) before anything is written. `dry_run` prints
    the fold plan and the resource plan and returns the records as they stand, training nothing.
    Each fold's data comes from `lightwork.distributed.stream.fold_datasets`.
    """
    return train_runs([resolved], dry_run, folds)[0]


def train_runs(
    resolved_runs: Sequence[ResolvedRun], dry_run: bool = False, folds: Sequence[int] | None = None
) -> list[list[runs.FoldRecord]]:
    """`train_splits` of several runs at once (an ablation across methods: a run per method, on
    the same data): the unfinished folds of every run are the trials of one Tune experiment, planned
    as one resource plan and scheduled together, each fold written in its own run's folder. Beside
    other runs, a fold's console lines name it `{run name}/{fold name}`, and each run's summary
    follows a line naming its folder. Returns each run's records of the folds asked for, in order.

    Raises ValueError unless the runs have distinct names, one storage_path (the experiment's
    folder: the run's own for a single run) and one resources section (the plan's).
    """
    first = resolved_runs[0].config
    if len({resolved.config.name for resolved in resolved_runs}) < len(resolved_runs) or any(
        (resolved.config.storage_path, resolved.config.resources) != (first.storage_path, first.resources)
        for resolved in resolved_runs
    ):
        raise ValueError("the runs of one experiment need distinct names, one storage_path and one resources section")
    several = len(resolved_runs) > 1
    notes: dict[str, None] = {}  # what the runs say about their data, in order, each line once
    trials, asked, records = [], [], []
    by_data: dict[tuple, TrainingSamples] = {}  # runs on the same data and slicing share their samples
    for resolved in resolved_runs:
        config, usable, rows, plans = resolved.config, resolved.usable, resolved.rows, resolved.plans
        run = runs.run_uri(config.storage_path, config.name)
        if len(rows) < len(usable):
            notes[
                f"{config.data.manifest}: {len(usable) - len(rows)} cases with a lesion mask or labelled anomalous "
                f"are left out of training; {len(rows)} healthy cases remain"
            ] = None
        data = config.data
        key = (data.manifest, data.slice_axis, data.min_slice_foreground, data.lesion_free_slices)
        if key not in by_data:  # the cases, or their slices (each case's masks read): what an epoch goes over
            by_data[key] = stream.run_samples(config, usable)
        samples = by_data[key]
        if config.data.slice_axis is not None:
            notes[samples.describe(config.data.min_slice_foreground)] = None
        asked.append(select_folds(plans, folds))
        records.append({plan.name: runs.read_record(run, plan) for plan in plans})
        todo = tuple(plan for plan in asked[-1] if records[-1][plan.name].status != "done")
        trials.append(_RunTrials(run, resolved, samples, todo, f"{config.name}/" if several else ""))
    for note in notes:
        print(note)
    count = sum(len(trial.todo) for trial in trials)
    resources = plan_trials(count, first.resources, cluster_shape(), autoscaler_can_add) if count else None
    if resources is not None and resources.unchecked:
        print(resources.unchecked)
    if dry_run:
        for trial, run_records in zip(trials, records):
            plans = trial.resolved.plans
            print(
                f"run {trial.run}: {len(plans)} fold models, {len(trial.todo)} to train, "
                f"{len(trial.resolved.rows)} healthy cases"
            )
            print("\n".join(describe_folds(plans, trial.resolved.fold_sizes)))
        if resources is not None:
            print("\n".join(resources.lines()))
        return [[run_records[plan.name] for plan in plans] for run_records, plans in zip(records, asked)]
    for trial, run_records, plans in zip(trials, records, asked):
        runs.save_config(trial.resolved.config, storage.join(trial.run, runs.CONFIG_FILE))
        for plan in plans:
            if run_records[plan.name].status == "done":
                print(
                    f"{trial.key(plan)}: done in an earlier run (best val loss "
                    f"{run_records[plan.name].best_val_loss:.5f}), skipped"
                )
        runs.write_folds(trial.run, list(run_records.values()))
    if resources is not None:
        _fit_trials(trials, resources, first.storage_path if several else trials[0].run)
        records = [{plan.name: runs.read_record(trial.run, plan) for plan in trial.resolved.plans} for trial in trials]
        for trial, run_records in zip(trials, records):
            runs.write_folds(trial.run, list(run_records.values()))
    final = [[run_records[plan.name] for plan in plans] for run_records, plans in zip(records, asked)]
    for trial, run_final in zip(trials, final):
        if several:
            print(f"run {trial.run}:")
        print_summary(run_final)
    return final


# Ray Tune copies these variables of the driver's environment into every trial actor's
# runtime_env (`ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE`), where the dashboard, the
# state API and the runtime-env agent's log show them in clear. lightwork's trial drivers read
# credentials from their own environment, as every other Ray process of the cluster does.
TUNE_PROPAGATED_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


def _keep_credentials_out_of_tune() -> None:
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE.difference_update(TUNE_PROPAGATED_CREDENTIALS)


def _start_ray_data_actors() -> None:
    """Ray Data's cluster-wide detached actors (its stats actor, its actor-location tracker and its
    autoscaling coordinator), started from this driver, on its node and outside any placement group.
    Ray Data creates each where a stream first runs, pinned to that node: in a fold's Train worker.
    There they shared the fate of the worker group's placement group (started again for every fold,
    one more Python process each), and the coordinator, which lives on, kept an autoscaled GPU node
    busy for good, so that it was never scaled down (ray-project/ray#62260 pins them to the head)."""
    from ray.data._internal.cluster_autoscaler import get_or_create_autoscaling_coordinator
    from ray.data._internal.execution.node_trackers.actor_location import get_or_create_actor_location_tracker
    from ray.data._internal.stats import get_or_create_stats_actor

    ray.get(
        [
            get_or_create_stats_actor().__ray_ready__.remote(),
            get_or_create_actor_location_tracker().__ray_ready__.remote(),
            get_or_create_autoscaling_coordinator().__ray_ready__.remote(),
        ]
    )


def _fit_trials(trials: list[_RunTrials], resources: TrialPlan, home: str) -> None:
    """One Tune experiment under folder URI `home`, a trial per fold of every run's `todo`, each
    given its run's resolved config, usable manifest rows and `samples` through the object store;
    on an autoscaling cluster the first wave's bundles are requested at once (and the request
    withdrawn at the end, so that idle nodes can go)."""
    from ray.autoscaler.sdk import request_resources

    by_key = {trial.key(plan): (trial, plan) for trial in trials for plan in trial.todo}
    driver = tune.with_parameters(_driver, trials=by_key, resources=resources)
    storage_path, filesystem = _ray_storage(home)
    _keep_credentials_out_of_tune()
    _start_ray_data_actors()
    tuner = tune.Tuner(
        tune.with_resources(driver, {"cpu": TRIAL_DRIVER_CPUS}),
        param_space={"fold": tune.grid_search(list(by_key))},
        # Reused trial actors: every fold after the first skips a process start and the imports of
        # this module (measured: -6 s a fold on 2 cores; all trials ask for the same resources).
        tune_config=tune.TuneConfig(max_concurrent_trials=resources.max_concurrent_trials, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=storage_path,
            storage_filesystem=filesystem,
            callbacks=[
                _FoldLines({key: (trial.run, plan, trial.total_steps(plan)) for key, (trial, plan) in by_key.items()})
            ],
            verbose=0,  # the fold lines above, not Tune's status tables every 30 s
            failure_config=tune.FailureConfig(max_failures=trials[0].resolved.config.resources.trial_max_failures),
        ),
    )
    if resources.request:
        request_resources(bundles=list(resources.request))
    try:
        tuner.fit()
    finally:
        if resources.request:
            request_resources(bundles=[])


def summary_line(record: runs.FoldRecord) -> str:
    """A fold's status, epochs, steps, best validation loss and where its model is (or its error)."""
    best = f"{record.best_val_loss:.5f}" if record.best_val_loss is not None else "-"
    return (
        f"{record.name:<28} {record.status:<8} {record.epochs:>6} {record.steps:>7} {best:>10} "
        f"{record.best_step or 0:>7}  {record.best_checkpoint or record.error}"
    )


def print_summary(records: list[runs.FoldRecord]) -> None:
    """One line per fold: status, epochs, steps, best validation loss and where its model is."""
    print(f"{'fold':<28} {'status':<8} {'epochs':>6} {'steps':>7} {'best val':>10} {'at step':>7}  checkpoint")
    for record in records:
        print(summary_line(record))
