"""Every fold of a split through real Ray Data, Train and Tune on tiny 3D and 2D datasets:
best checkpoints, falling validation loss, resume without redoing finished folds, and a training
worker killed mid-run whose trial resumes from its checkpoint with its history intact."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from lightwork.config import load_config
from lightwork.data import manifest, storage
from lightwork.data.cases import PreparedCase, save_case
from lightwork.models import load_model
from lightwork.training import runs

pytestmark = pytest.mark.slow


def write_dataset(root, shape, count=10):
    """`count` smooth random cases of spatial `shape` written as prepared cases + manifest."""
    rng = np.random.default_rng(0)
    rows = []
    ids = [f"case{i:02d}" for i in range(count)]
    folds = manifest.contiguous_folds(ids)
    for case_id in ids:
        image = rng.normal(0.5, 0.05, size=(1, *shape)).astype(np.float32)
        uri = str(root / f"{case_id}.npz")
        save_case(uri, PreparedCase(case_id, image, np.ones(shape, bool)))
        rows.append({"case_id": case_id, "source_uri": uri, "array_uri": uri, "checksum": case_id,
                     "shape": list(shape), "spacing": [1.0] * len(shape), "recipe": "test", "recipe_version": "1",
                     "fold": folds[case_id], "has_lesion": False, "status": "ok", "error": None})
    return manifest.write_manifest(str(root), rows)


def make_datasets_factory():
    """Fold datasets built with real Ray Data from the prepared cases: a bright box of random
    size/place per sample (a stand-in for the synthesis tasks, which the stream tests cover)."""

    def factory(plan, config, seed):
        import ray

        from lightwork.anomalies.seeding import sample_generator
        from lightwork.data.cases import load_case

        rows = [r for r in manifest.usable(manifest.read_manifest(config.data.manifest))]

        def with_box(row, task):
            case = load_case(row["array_uri"])
            rng = sample_generator(seed, 0, row["case_id"], task)
            shape = case.image.shape[1:]
            size = [int(rng.integers(2, max(3, s // 2))) for s in shape]
            corner = [int(rng.integers(0, s - z)) for s, z in zip(shape, size)]
            box = tuple(slice(c, c + z) for c, z in zip(corner, size))
            image = case.image.copy()
            image[(slice(None), *box)] += 0.5
            label = np.zeros(shape, np.float32)
            label[box] = 1 - np.exp(-0.5**2 / (2 * 0.2**2))
            return case.image, image, label

        def train_row(row):
            _, image, label = with_box(row, plan.train_tasks[0])
            return {"image": image, "label": label}

        def val_row(row):
            healthy, image, label = with_box(row, plan.val_tasks[0])
            return {"healthy": healthy, "image": image, "label": label}

        pick = lambda folds: [{"case_id": r["case_id"], "array_uri": r["array_uri"]} for r in rows if r["fold"] in folds]  # noqa: E731
        return {"train": ray.data.from_items(pick(plan.train_folds)).map(train_row, num_cpus=0.1),
                "val": ray.data.from_items(pick(plan.val_folds)).map(val_row, num_cpus=0.1)}

    return factory


def run_config(tmp_path, shape, name, storage_path, **train):
    data = write_dataset(tmp_path / "data", shape)
    dims = len(shape)
    overrides = [f"name={name}", f"storage_path={storage_path}", f"data.manifest={data}",
                 f"model.spatial_dims={dims}", "model.features=[4,8]", "train.batch_size=2",
                 "train.val_batch_size=4", "train.lr=0.01", "train.warmup_steps=1",
                 "resources.cpus_per_worker=0.5", "resources.max_concurrent_trials=5", "resources.max_failures=2",
                 *[f"train.{key}={value}" for key, value in train.items()]]
    return load_config(preset="tiny", overrides=overrides)


def check_records(records, epochs):
    assert len(records) == 5
    for record in records:
        assert record.status == "done", record.error
        val_losses = [h["val_loss"] for h in record.history]
        assert [h["epoch"] for h in record.history] == list(range(1, epochs + 1))
        assert val_losses[-1] < val_losses[0]
        assert record.best_val_loss == pytest.approx(min(val_losses))
        best_epoch = record.history[val_losses.index(min(val_losses))]
        assert record.best_step == best_epoch["step"]
        assert record.val_dice_threshold == best_epoch["val_dice_threshold"]
        model = load_model(record.best_checkpoint)
        saved = json.loads(storage.read_bytes(storage.join(record.best_checkpoint, "history.json")))
        assert saved[-1]["step"] == record.best_step  # the kept checkpoint is the best epoch's
        assert not model.training


def test_split_3d_end_to_end_and_resume(ray_session, tmp_path):
    from lightwork.distributed.train import train_splits

    config = run_config(tmp_path, (16, 16, 16), "brain3d", tmp_path / "runs", max_epochs=3)
    records = train_splits(config, "1/4", seed=1, datasets_factory=make_datasets_factory())
    check_records(records, epochs=3)
    run = runs.run_uri(config.storage_path, config.name)
    assert [r.name for r in runs.read_folds(run)] == [r.name for r in records]
    assert (tmp_path / "runs" / "brain3d" / "config.yaml").exists()
    # the first fold's model trained on folds 1-4 (image sets swap: its validation fold is smaller)
    assert records[0].train_folds == [1, 2, 3, 4] and records[0].val_folds == [0] and records[0].train_tasks == [0]
    with torch.no_grad():
        output = load_model(records[0].best_checkpoint)(torch.zeros(1, 1, 16, 16, 16))
    assert output.shape == (1, 1, 16, 16, 16)

    # An interrupted run: one fold never finished. The re-run trains only that fold.
    interrupted = records[2]
    record_file = tmp_path / "runs" / "brain3d" / interrupted.name / "fold.json"
    record_file.write_text(json.dumps({**json.loads(record_file.read_text()), "status": "running"}))
    stamps = {r.name: os.path.getmtime(tmp_path / "runs" / "brain3d" / r.name / "fold.json") for r in records}
    again = train_splits(config, "1/4", seed=1, datasets_factory=make_datasets_factory())
    check_records(again, epochs=3)
    for record in records:
        changed = os.path.getmtime(tmp_path / "runs" / "brain3d" / record.name / "fold.json") != stamps[record.name]
        assert changed == (record.name == interrupted.name)
    assert again[2].history == interrupted.history  # resumed from its checkpoint, not retrained


def _kill_first_worker_after_report(run_uri, killed: list, stop: threading.Event):
    """Once any fold has reported a checkpoint, SIGKILL one live Ray Train worker process."""
    from ray.util.state import list_actors

    filesystem, run_path = storage.filesystem(run_uri)
    while not stop.is_set():
        if filesystem.glob(f"{run_path}/*/checkpoint_*"):
            workers = list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
            if workers:
                os.kill(workers[0]["pid"], signal.SIGKILL)
                killed.append(workers[0]["pid"])
                return
        time.sleep(0.5)
        filesystem.invalidate_cache()


def test_split_2d_on_s3_survives_killed_worker(ray_session, s3_server, tmp_path):
    """Run folder in a real S3 bucket; one training worker is SIGKILLed after the first checkpoint."""
    from lightwork.distributed.train import train_splits

    config = run_config(tmp_path, (32, 32), "cxr2d", f"s3://{s3_server['bucket']}/runs", max_epochs=3)
    run = runs.run_uri(config.storage_path, config.name)
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_first_worker_after_report, args=(run, killed, stop), daemon=True)
    killer.start()
    try:
        records = train_splits(config, "4/1", seed=2, datasets_factory=make_datasets_factory())
    finally:
        stop.set()
        killer.join()
    assert killed, "no worker was killed: the test did not exercise a failure"
    check_records(records, epochs=3)  # every trial completed with epochs 1..3, none lost or repeated
    assert all(record.best_checkpoint.startswith(f"s3://{s3_server['bucket']}/runs/cxr2d/") for record in records)
    assert [r.name for r in runs.read_folds(run)] == [r.name for r in records]
    assert storage.exists(storage.join(run, "config.yaml"))
    filesystem, run_path = storage.filesystem(run)
    assert filesystem.glob(f"{run_path}/{records[0].name}/tensorboard/events.out.tfevents.*")
