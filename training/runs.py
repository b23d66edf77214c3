"""Layout of a training run's results (local path or s3:// URI), read by evaluation.

After `lightwork train` (`--methods`: a run per method, `{run_name}-{method}`):
    {storage_path}/{run_name}/config.yaml   the RunConfig (lightwork.config) of the run
    {storage_path}/{run_name}/folds.json    a JSON list of fold records (FoldRecord), one per model
    {storage_path}/{run_name}/{fold name}/  Ray Train's folder of that fold (checkpoints, TensorBoard)
    {storage_path}/{run_name}/{fold name}/fold.json  that fold's own record, rewritten as it trains
    {best_checkpoint}/model.pt + model.json the fold model (lightwork.models.load_model)

`folds.json` is the run's index: every fold any `lightwork train` call of the run has planned
(separate calls, for other splits or other folds, add up). A fold's own `fold.json` is written by
the job training it and is the newer word, so readers take it over the index's copy: two jobs
training folds of one run at once cannot hide each other's folds.

Fold record keys: split ("1/4"), name ("split1-4_tasks0"), index, train_tasks, val_tasks,
train_folds, val_folds (lists of ints), best_checkpoint (URI of the kept model's folder, "" until
one exists: the best epoch's by `train.select_by`, or the last with `train.keep_checkpoint: last`),
best_val_loss (float, null until validated) and best_step (optimizer step) of that checkpoint,
val_dice_threshold / val_dice (at its epoch: the score threshold of its binary mask, chosen on
the synthetic validation samples by `train.threshold_fpr`, and the Dice there against their
anomaly masks), status
("pending", "running", "done" or "failed"), epochs, steps, history (per-epoch metrics) and error.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from lightwork.config import RunConfig, config_from_dict
from lightwork.data import storage
from lightwork.errors import UserError
from lightwork.training.folds import FoldPlan

CONFIG_FILE = "config.yaml"
FOLDS_FILE = "folds.json"
RECORD_FILE = "fold.json"


@dataclass
class FoldRecord:
    split: str
    name: str
    index: int
    train_tasks: list[int]
    val_tasks: list[int]
    train_folds: list[int]
    val_folds: list[int]
    best_checkpoint: str = ""
    best_val_loss: float | None = None
    best_step: int | None = None
    val_dice_threshold: float | None = None
    val_dice: float | None = None
    status: str = "pending"
    epochs: int = 0
    steps: int = 0
    history: list[dict] = field(default_factory=list)
    error: str = ""

    @staticmethod
    def from_plan(plan: FoldPlan) -> "FoldRecord":
        return FoldRecord(
            split=plan.split,
            name=plan.name,
            index=plan.index,
            train_tasks=list(plan.train_tasks),
            val_tasks=list(plan.val_tasks),
            train_folds=list(plan.train_folds),
            val_folds=list(plan.val_folds),
        )


def run_uri(storage_path: str, run_name: str) -> str:
    return storage.join(storage_path, run_name)


def method_run_name(run_name: str, method: str) -> str:
    """The name of method `method`'s run in an ablation across methods named `run_name`
    (`--methods`): `{run_name}-{method}`, beside the other methods' under the same storage."""
    return f"{run_name}-{method}"


def write_record(run: str, record: FoldRecord) -> None:
    """Write `record` as its fold's own record in run folder `run`."""
    storage.write_bytes(storage.join(run, record.name, RECORD_FILE), json.dumps(asdict(record)).encode())


def read_record(run: str, plan: FoldPlan) -> FoldRecord:
    """The own record of the fold of `plan` in run folder `run`; a pending one when it has none yet."""
    return _own_record(run, plan.name) or FoldRecord.from_plan(plan)


def _own_record(run: str, name: str) -> FoldRecord | None:
    uri = storage.join(run, name, RECORD_FILE)
    if not storage.exists(uri):
        return None
    try:
        return FoldRecord(**json.loads(storage.read_bytes(uri)))
    except (ValueError, TypeError) as error:
        raise UserError(f"{uri}: not a lightwork fold record: {error}") from error


def _indexed_folds(run: str) -> list[FoldRecord]:
    uri = storage.join(run, FOLDS_FILE)
    if not storage.exists(uri):
        return []
    try:
        return [FoldRecord(**record) for record in json.loads(storage.read_bytes(uri))]
    except (ValueError, TypeError) as error:
        raise UserError(f"{uri}: not a lightwork folds.json: {error}") from error


def read_folds(run: str) -> list[FoldRecord]:
    """The fold records of run folder `run` in index order, each fold's own record where it has
    one; [] when the run has no index yet."""
    return [_own_record(run, record.name) or record for record in _indexed_folds(run)]


def read_trained_folds(run: str) -> list[FoldRecord]:
    """The fold records of run folder `run` that have a best checkpoint, in file order.

    Raises:
        UserError: `run` is not a `lightwork train` run (no folds.json), or no fold has a checkpoint.
    """
    uri = storage.join(run, FOLDS_FILE)
    if not storage.exists(uri):
        raise UserError(f"{run}: not a lightwork training run (no {FOLDS_FILE} there)")
    trained = [record for record in read_folds(run) if record.best_checkpoint]
    if not trained:
        raise UserError(f"{uri}: no fold has a best checkpoint yet; nothing to evaluate")
    return trained


# What one of the paper's full-size models needs (docs/method.md, training), beside a run's own figures.
PAPER_TRAINING = (
    "the paper's full-size models train about 15 GPU-hours each (3D brain, 80x112x80) and 10 "
    "(chest X-rays, 256x256), stopping 5000 steps after their best validation loss"
)


def describe_training(records: list[FoldRecord], batch_size: int) -> str:
    """How long the fold models of `records` trained, beside what a full-size model needs: one line."""
    steps = [record.steps for record in records]
    seconds = [sum(epoch.get("epoch_seconds", 0.0) for epoch in record.history) for record in records]
    return (
        f"Training: each of the {len(records)} fold models took {min(steps)}-{max(steps)} optimizer steps "
        f"of {batch_size} samples, {min(seconds):.0f}-{max(seconds):.0f} s of training steps per model; "
        f"{PAPER_TRAINING}."
    )


def write_folds(run: str, records: list[FoldRecord]) -> None:
    """Write the run's index: the folds already indexed (`records`' versions in their place) and
    then the folds of `records` new to it."""
    given = {record.name: record for record in records}
    indexed = _indexed_folds(run)
    merged = [given.pop(record.name, record) for record in indexed] + list(given.values())
    storage.write_bytes(storage.join(run, FOLDS_FILE), json.dumps([asdict(r) for r in merged], indent=1).encode())


# Keys that say where a run goes or how it is scheduled, not what it trains: a re-run may change them.
# data.left_right_axis follows from the cases data.fingerprint names (and records saved before it
# existed lack it).
NOT_RESULT_KEYS = frozenset(
    {
        "name",
        "data.left_right_axis",
        "storage_path",
        "resources.cpus_per_worker",
        "resources.gpus_per_worker",
        "resources.data_cpus_per_trial",
        "resources.max_concurrent_trials",
        "resources.max_failures",
        "resources.trial_max_failures",
    }
)


def _flat(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in document.items():
        if isinstance(value, dict) and key != "recipe_options":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def result_differences(saved: RunConfig, new: RunConfig) -> list[str]:
    """`key: saved -> new` for every field that decides the trained models and differs."""
    old, now = _flat(saved.to_dict()), _flat(new.to_dict())
    return [
        f"{key}: {old.get(key)!r} -> {now.get(key)!r}"
        for key in now
        if key not in NOT_RESULT_KEYS and old.get(key) != now.get(key)
    ]


def check_saved(config: RunConfig, uri: str) -> None:
    """Raise UserError when `uri` holds the saved config of a run that trained other models than
    `config` describes (`result_differences`); nothing there, or the same description, passes."""
    if not storage.exists(uri):
        return
    try:
        saved = config_from_dict(yaml.safe_load(storage.read_bytes(uri)) or {})
    except (UserError, yaml.YAMLError) as error:
        raise UserError(f"{uri}: the saved config of this run does not load ({error}); move it away") from None
    differences = result_differences(saved, config)
    if differences:
        raise UserError(
            f"{uri}: run {config.name!r} was trained with other settings ({'; '.join(differences)}): "
            "give another --name, or --fresh to delete its results and train again"
        )


def save_config(config: RunConfig, uri: str) -> None:
    """Write `config` as YAML to `uri` (local or s3://). An existing file there is the record of
    what a run trained: `check_saved` first, so that it is never overwritten by another description."""
    check_saved(config, uri)
    storage.write_bytes(uri, config.to_yaml().encode())
