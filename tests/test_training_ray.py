"""Folds of a split through the real synthesis stream (Ray Data), Train and Tune on a tiny 2D
dataset with the run folder in a real S3 bucket: best checkpoints, falling validation loss, no
credential in Ray's state API while the folds train, and an interrupted run resumed without redoing
finished folds.

The 3D split runs end to end, through `ray job submit`, in tests/test_jobs_submit.py (the demo); a
fold whose worker dies mid-run (its node removed) and resumes from its checkpoint with its history
intact, in tests/test_scaleout.py.
"""

import json
import threading
import time

import pytest
import torch

from lightwork.config import load_config
from lightwork.data import storage
from lightwork.demo.noise import write_noise_dataset
from lightwork.models import load_model
from lightwork.testing.clusters import list_state
from lightwork.training import runs

pytestmark = pytest.mark.slow

# Two of the split's five folds (every fold's path is the same), trained at once, and their epochs.
FOLDS = [0, 2]
EPOCHS = 3


def run_config(tmp_path, shape, name, storage_path, **train):
    data = write_noise_dataset(tmp_path / "data", shape, recipe="test")
    dims = len(shape)
    overrides = [
        f"name={name}",
        f"storage_path={storage_path}",
        f"data.manifest={data}",
        "seed=2",
        f"model.spatial_dims={dims}",
        "model.features=[4,8]",
        "train.batch_size=2",
        "train.val_batch_size=4",
        "train.lr=0.01",
        "train.warmup_steps=1",
        "resources.cpus_per_worker=0.5",
        "resources.max_concurrent_trials=2",
        "resources.max_failures=2",
        *[f"train.{key}={value}" for key, value in train.items()],
    ]
    return load_config(preset="tiny", overrides=overrides)


def _record_state_after_first_checkpoint(run_uri, address: str, state: list, stop: threading.Event):
    """Once any fold has reported a checkpoint while its Train worker lives, record what Ray's
    state API shows of the cluster at `address` (actors, jobs and tasks in detail, as JSON, into
    `state`; named: another Ray may run on the machine)."""
    filesystem, run_path = storage.filesystem(run_uri)
    while not stop.is_set():
        if filesystem.glob(f"{run_path}/*/checkpoint_*"):
            if list_state(address, "actors", [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]):
                state.append(
                    json.dumps([list_state(address, what, []) for what in ("actors", "jobs", "tasks")], default=repr)
                )
                return
        time.sleep(0.5)
        filesystem.invalidate_cache()


def test_split_2d_on_s3_keeps_secrets_out_of_ray_and_resumes_an_interrupted_run(
    ray_session, ray_address, s3_server, tmp_path, check_fold_records
):
    """Run folder in a real S3 bucket, no credential in Ray's state API after the first checkpoint;
    then a run interrupted before one fold finished is resumed."""
    from lightwork.distributed.train import train_splits
    from lightwork.training.resolve import resolve_run

    config = run_config(tmp_path, (32, 32), "cxr2d", f"s3://{s3_server['bucket']}/runs", max_epochs=EPOCHS)
    run = runs.run_uri(config.storage_path, config.name)
    state, stop = [], threading.Event()
    watcher = threading.Thread(
        target=_record_state_after_first_checkpoint, args=(run, ray_address, state, stop), daemon=True
    )
    watcher.start()
    try:
        records = train_splits(resolve_run(config, "4/1"), folds=FOLDS)
    finally:
        stop.set()
        watcher.join()
    assert state, "the state API was not read while a fold trained"
    # Secrets stay out of Ray's metadata: the trial actors' runtime_env (Tune copies the driver's AWS
    # variables into it unless told not to), jobs and tasks, seen while the folds trained.
    assert s3_server["secret"] not in state[0] and s3_server["key"] not in state[0]
    # every trial completed with epochs 1..EPOCHS, none lost or repeated
    check_fold_records(records, epochs=EPOCHS, folds=len(FOLDS))
    assert all(record.best_checkpoint.startswith(f"s3://{s3_server['bucket']}/runs/cxr2d/") for record in records)
    index = runs.read_folds(run)  # the whole split, the folds not asked for still pending
    assert [r.index for r in records] == FOLDS and [index[i].name for i in FOLDS] == [r.name for r in records]
    assert [r.status for r in index] == ["done" if i in FOLDS else "pending" for i in range(5)]
    assert storage.exists(storage.join(run, "config.yaml"))
    filesystem, run_path = storage.filesystem(run)
    assert filesystem.glob(f"{run_path}/{records[0].name}/tensorboard/events.out.tfevents.*")
    # the first fold's model trained on folds 0-3 (4/1: image sets do not swap, its validation fold is smaller)
    assert records[0].train_folds == [0, 1, 2, 3] and records[0].val_folds == [4]
    with torch.no_grad():
        output = load_model(records[0].best_checkpoint)(torch.zeros(1, 1, 32, 32))
    assert output.shape == (1, 1, 32, 32)

    # An interrupted run: one fold never finished. The re-run trains only that fold.
    interrupted = records[1]
    record_uri = storage.join(run, interrupted.name, "fold.json")
    storage.write_bytes(
        record_uri, json.dumps({**json.loads(storage.read_bytes(record_uri)), "status": "running"}).encode()
    )
    before = {r.name: storage.read_bytes(storage.join(run, r.name, "fold.json")) for r in records}
    again = train_splits(resolve_run(config, "4/1"), folds=FOLDS)
    check_fold_records(again, epochs=EPOCHS, folds=len(FOLDS))
    for record in records:
        changed = storage.read_bytes(storage.join(run, record.name, "fold.json")) != before[record.name]
        assert changed == (record.name == interrupted.name)
    assert again[1].history == interrupted.history  # resumed from its checkpoint, not retrained
