"""Every fold model of the requested splits as concurrent Ray Tune trials, each a Ray Train run.

    Tuner(driver)  one trial per fold (task combination), `max_concurrent_trials` from the plan
      driver(fold) builds the fold's Ray Datasets and fits a TorchTrainer (DDP when
                   num_workers > 1; elastic when resources.min_workers < num_workers), with
                   TuneReportCallback so Tune's trial table shows the epochs
        train_loop_per_worker  `FoldTrainer` over `get_dataset_shard("train"/"val")`, restoring
                   from `ray.train.get_checkpoint()` after a worker failure (FailureConfig)

Run layout: see `lightwork.training.runs`. Each fold's Train run is named after the fold inside the
run folder, so re-running the same command resumes an interrupted fold from its latest
checkpoint, and folds whose record says "done" are not trained again.

Each reported checkpoint is a folder with `model.pt` + `model.json` (loadable by
`lightwork.models.load_model`), `trainer.pt` (optimizer, scheduler, counters) and `history.json`;
Train keeps the best one by `val_loss` and the latest.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass

import ray
import torch
from ray import train, tune

from lightwork.config import RunConfig, config_from_dict, save_config
from lightwork.data import manifest, storage
from lightwork.distributed import stream
from lightwork.models import UNet, save_model
from lightwork.training import runs
from lightwork.training.folds import FoldPlan, parse_splits, plan_split
from lightwork.training.loop import EpochResult, FoldTrainer

TRAINER_STATE_FILE = "trainer.pt"
# Object-storage variables every process that touches the run needs (Ray propagates only some).
STORAGE_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION")
HISTORY_FILE = "history.json"
RECORD_FILE = "fold.json"
TRIAL_DRIVER_CPUS = 0.01  # the Tune trial that drives a fold's TorchTrainer (0 is refused)


@dataclass(frozen=True)
class TrialResources:
    """Resources of one trial: per Train worker, how many trials run at once, and the CPUs each
    running trial leaves for its data stream (what the workers and drivers of the concurrent
    trials leave on the cluster, shared evenly)."""

    num_workers: int | tuple[int, int]
    cpus_per_worker: float
    gpus_per_worker: float
    max_concurrent_trials: int
    cpus_for_data: float


def plan_trial_resources(num_trials: int, config: RunConfig, cluster: dict[str, float]) -> TrialResources:
    """Fit `num_trials` trials on `cluster` (`ray.cluster_resources()`), leaving at least
    `resources.data_cpus_per_trial` CPUs per running trial for the synthesis actors.

    GPUs: when the cluster has G GPUs and more trials than G, several trials share one GPU
    (fraction 1 / ceil(trials / G), each worker) unless `resources.gpus_per_worker` fixes it.
    Raises ValueError naming the shortfall when not even one trial fits.
    """
    res = config.resources
    workers = res.num_workers if res.min_workers is None or res.min_workers >= res.num_workers \
        else (res.min_workers, res.num_workers)
    min_workers = workers if isinstance(workers, int) else workers[0]
    gpus = cluster.get("GPU", 0.0)
    gpu_fraction = res.gpus_per_worker
    if gpu_fraction is None:
        gpu_fraction = 0.0 if gpus < 1 else min(1.0, 1.0 / math.ceil(num_trials * res.num_workers / gpus))
    cpus = cluster.get("CPU", 0.0)
    cpus_for_data = res.data_cpus_per_trial
    per_trial_cpu = min_workers * res.cpus_per_worker + cpus_for_data
    fit_cpu = int(cpus // per_trial_cpu) if per_trial_cpu > 0 else num_trials
    fit_gpu = int(gpus // (min_workers * gpu_fraction)) if gpu_fraction > 0 else num_trials
    concurrent = min(num_trials, fit_cpu, fit_gpu, res.max_concurrent_trials or num_trials)
    if gpu_fraction > 0 and gpus < gpu_fraction:
        raise ValueError(f"resources: {gpu_fraction} GPU per worker requested, the cluster has {gpus}")
    if concurrent < 1:
        raise ValueError(f"resources: one trial needs {per_trial_cpu} CPUs ({min_workers} workers x "
                         f"{res.cpus_per_worker} + {cpus_for_data} for data) but the cluster has {cpus}")
    data = (cpus - concurrent * (min_workers * res.cpus_per_worker + TRIAL_DRIVER_CPUS)) / concurrent
    return TrialResources(workers, res.cpus_per_worker, gpu_fraction, concurrent, data)


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
        scalars = {"loss/train": result.train_loss, "loss/val": result.val_loss, "dice/val": result.val_dice,
                   "dice/val_threshold": result.val_dice_threshold, "lr": result.lr,
                   "data_wait_share": result.data_wait_share, "best_val_loss": result.best_val_loss}
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
    torch.manual_seed(settings.seed)
    model = UNet(config.model)
    device = train.torch.get_device() if torch.cuda.is_available() else torch.device("cpu")
    trainer = FoldTrainer(model, settings, device)
    if world > 1:
        trainer.sum_over_workers = _all_reduce_sum
    saved = train.get_checkpoint()
    if saved is not None:
        with saved.as_directory() as folder:
            trainer.load_state_dict(torch.load(os.path.join(folder, TRAINER_STATE_FILE), map_location=device,
                                               weights_only=False))
    if world > 1:
        trainer.model = train.torch.prepare_model(trainer.model)
    train_shard = train.get_dataset_shard("train")
    val_shard = train.get_dataset_shard("val")
    steps_per_epoch = max(1, loop_config["steps_per_epoch"] // world)
    batch_iterator = iter(())

    def train_batches(epoch: int):
        """`steps_per_epoch` batches from one persistent stream, restarted when it ends."""
        nonlocal batch_iterator
        for _ in range(steps_per_epoch):
            batch = next(batch_iterator, None)
            if batch is None:
                batch_iterator = iter(train_shard.iter_torch_batches(batch_size=settings.batch_size, drop_last=True))
                batch = next(batch_iterator, None)
                if batch is None:
                    raise ValueError(f"{loop_config['fold_name']}: the training stream yields no full batch "
                                     f"of {settings.batch_size}")
            yield batch

    def val_batches(epoch: int):
        return val_shard.iter_torch_batches(batch_size=settings.val_batch_size)

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


def _write_record(run: str, record: runs.FoldRecord) -> None:
    storage.write_bytes(storage.join(run, record.name, RECORD_FILE), json.dumps(dataclasses.asdict(record)).encode())


def _read_record(run: str, plan: FoldPlan) -> runs.FoldRecord:
    uri = storage.join(run, plan.name, RECORD_FILE)
    if storage.exists(uri):
        return runs.FoldRecord(**json.loads(storage.read_bytes(uri)))
    return runs.FoldRecord.from_plan(plan)


def _driver(trial_config: dict, *, config_dict: dict, plans: dict, run: str, seed: int,
            steps: dict, resources: TrialResources, env: dict) -> None:
    """One Tune trial: fit the fold's TorchTrainer, then write its fold record."""
    from ray.tune.integration.ray_train import TuneReportCallback
    from ray.train.torch import TorchTrainer

    os.environ.update(env)

    plan: FoldPlan = plans[trial_config["fold"]]
    config = config_from_dict(config_dict)
    record = runs.FoldRecord.from_plan(plan)
    record.status = "running"
    _write_record(run, record)
    storage_path, filesystem = _ray_storage(run)
    use_gpu = resources.gpus_per_worker > 0
    per_worker = {"CPU": resources.cpus_per_worker, **({"GPU": resources.gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"run": config_dict, "fold_uri": _fold_uri(run, plan), "fold_name": plan.name,
                           "steps_per_epoch": steps[plan.name]},
        scaling_config=train.ScalingConfig(num_workers=resources.num_workers, use_gpu=use_gpu,
                                           resources_per_worker=per_worker),
        datasets=stream.fold_datasets(plan, config, seed, data_cpus=resources.cpus_for_data),
        # One worker needs no shards; skipping the split saves a coordinator actor per dataset.
        # The ingest options keep the stream within the trial's CPU budget and in item order.
        dataset_config=train.DataConfig(datasets_to_split=[] if resources.num_workers == 1 else "all",
                                        execution_options=stream.ingest_options(resources.cpus_for_data)),
        run_config=train.RunConfig(
            name=plan.name, storage_path=storage_path, storage_filesystem=filesystem,
            worker_runtime_env={"env_vars": env},
            failure_config=train.FailureConfig(max_failures=config.resources.max_failures),
            checkpoint_config=train.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="val_loss",
                                                     checkpoint_score_order="min"),
            callbacks=[TuneReportCallback()]),
    )
    try:
        result = trainer.fit()
    except Exception as error:
        record.status, record.error = "failed", f"{type(error).__name__}: {error}"
        _write_record(run, record)
        raise
    best_checkpoint, best_metrics = min(result.best_checkpoints, key=lambda pair: pair[1]["val_loss"])
    with result.checkpoint.as_directory() as folder:
        with open(os.path.join(folder, HISTORY_FILE)) as handle:
            record.history = json.load(handle)
    record.best_checkpoint = best_checkpoint.path if not storage.is_remote(run) else _as_uri(run, best_checkpoint.path)
    record.best_val_loss, record.best_step = best_metrics["val_loss"], best_metrics["step"]
    record.val_dice_threshold, record.val_dice = best_metrics["val_dice_threshold"], best_metrics["val_dice"]
    record.epochs, record.steps = record.history[-1]["epoch"], record.history[-1]["step"]
    record.status = "done"
    _write_record(run, record)


def _as_uri(run: str, path: str) -> str:
    """Train reports remote checkpoint paths without their scheme; give them the run's scheme back."""
    scheme = run.split("://", 1)[0]
    return path if "://" in path else f"{scheme}://{path}"


def train_splits(config: RunConfig, split_spec: str, seed: int = 0) -> list[runs.FoldRecord]:
    """Train every unfinished fold of `split_spec` ("1/4", "1/4,2/3" or "all") on the connected
    Ray cluster; write `config.yaml` and `folds.json` under `{storage_path}/{name}`; return the records.

    Each fold's data comes from `lightwork.distributed.stream.fold_datasets`.
    """
    run = runs.run_uri(config.storage_path, config.name)
    usable = manifest.usable(manifest.read_manifest(config.data.manifest))
    rows = manifest.healthy(usable)
    if not rows:
        raise ValueError(f"{config.data.manifest}: no usable healthy cases in the manifest "
                         f"({len(usable)} usable, all with a lesion mask or labelled anomalous)")
    if len(rows) < len(usable):
        print(f"{config.data.manifest}: {len(usable) - len(rows)} cases with a lesion mask or labelled anomalous "
              f"are left out of training; {len(rows)} healthy cases remain")
    fold_sizes: dict[int, int] = {}
    for row in rows:
        fold_sizes[row["fold"]] = fold_sizes.get(row["fold"], 0) + 1
    plans = [plan for split in parse_splits(split_spec) for plan in plan_split(split, fold_sizes)]
    if not config.data.recipe:  # the run records how its data was prepared (lightwork predict applies it)
        config = dataclasses.replace(config, data=dataclasses.replace(
            config.data, recipe=rows[0]["recipe"], recipe_options=json.loads(rows[0].get("recipe_options") or "{}")))
    save_config(config, storage.join(run, runs.CONFIG_FILE))
    records = {plan.name: _read_record(run, plan) for plan in plans}
    todo = [plan for plan in plans if records[plan.name].status != "done"]
    for plan in plans:
        if records[plan.name].status == "done":
            print(f"{plan.name}: done in an earlier run (best val loss {records[plan.name].best_val_loss:.5f}), skipped")
    runs.write_folds(run, list(records.values()))
    if todo:
        resources = plan_trial_resources(len(todo), config, ray.cluster_resources())
        stream.plan_synthesis(resources.cpus_for_data)  # fails fast when no synthesis pool fits
        steps = {plan.name: max(1, sum(fold_sizes.get(f, 0) for f in plan.train_folds) // config.train.batch_size)
                 for plan in todo}
        driver = tune.with_parameters(
            _driver, config_dict=config.to_dict(), plans={plan.name: plan for plan in todo}, run=run, seed=seed,
            steps=steps, resources=resources,
            env={name: os.environ[name] for name in STORAGE_ENV if name in os.environ})
        storage_path, filesystem = _ray_storage(run)
        tuner = tune.Tuner(
            tune.with_resources(driver, {"cpu": TRIAL_DRIVER_CPUS}),
            param_space={"fold": tune.grid_search([plan.name for plan in todo])},
            tune_config=tune.TuneConfig(max_concurrent_trials=resources.max_concurrent_trials),
            run_config=tune.RunConfig(name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=storage_path,
                                      storage_filesystem=filesystem,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        tuner.fit()
        records = {plan.name: _read_record(run, plan) for plan in plans}
        runs.write_folds(run, list(records.values()))
    final = list(records.values())
    print_summary(final)
    return final


def print_summary(records: list[runs.FoldRecord]) -> None:
    """One line per fold: status, epochs, steps, best validation loss and where its model is."""
    print(f"{'fold':<28} {'status':<8} {'epochs':>6} {'steps':>7} {'best val':>10} {'at step':>7}  checkpoint")
    for r in records:
        best = f"{r.best_val_loss:.5f}" if r.best_val_loss is not None else "-"
        print(f"{r.name:<28} {r.status:<8} {r.epochs:>6} {r.steps:>7} {best:>10} {r.best_step or 0:>7}  "
              f"{r.best_checkpoint or r.error}")
