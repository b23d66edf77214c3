"""The fold data stream through real Ray Data: shapes and dtypes, folds and tasks of the plan,
the same rows whatever the number of synthesis tasks at once, cases read from a real S3 endpoint, a
corrupt case skipped and counted, and the resource plan."""

import logging
import subprocess
import sys
import warnings

import numpy as np

from lightwork.anomalies.seeding import sample_generator
from lightwork.config import load_config
from lightwork.data import manifest
from lightwork.data.cases import load_case
from lightwork.demo.noise import write_noise_dataset
from lightwork.distributed.resources import plan_synthesis
from lightwork.distributed.stream import (
    CALLS_PER_TASK,
    ORDER_KEY,
    fold_dataset,
    fold_datasets,
    item_dataset,
    rows_per_call,
    rows_per_task,
    synthesis_dataset,
    training_epochs,
)
from lightwork.synthesis.samples import VALIDATION_EPOCH, BatchSynthesiser
from lightwork.training.folds import plan_split, steps_per_epoch

IMAGE_COLUMNS = {"image", "label"}


def config_for(data: str, *overrides):
    return load_config(preset="tiny", overrides=[f"data.manifest={data}", *overrides])


def plan_of(split: str, index: int):
    return plan_split(split, {fold: 2 for fold in range(5)})[index]


def fold_of(case_id: str) -> int:
    return int(case_id[4:]) // 2


def test_rows_follow_the_plan(ray_session, tmp_path):
    data = write_noise_dataset(str(tmp_path / "data"), (16, 16, 16))
    config = config_for(data, "data.val_per_case=2", "train.max_epochs=2", "train.batch_size=2")
    plan = plan_of("2/3", 0)  # trains with tasks 0, 1, validates with 2, 3, 4; the image sets swap (3 folds > 2)
    assert plan.train_tasks == (0, 1) and plan.train_folds == (2, 3, 4) and plan.val_folds == (0, 1)
    datasets = fold_datasets(plan, config, seed=5, data_cpus=1.0, keys=True)
    train_rows = datasets["train"].take_all()
    # every step of the run plus an epoch of margin, each data epoch a permutation of the train cases
    epochs = training_epochs(6, config.train)
    assert epochs == 3 and len(train_rows) == 6 * epochs
    for epoch in range(epochs):
        keys = [row["sample_key"] for row in train_rows[6 * epoch : 6 * epoch + 6]]
        assert sorted(keys) == [f"case0{i}@{epoch}" for i in range(4, 10)]
    orders = [[row["case_id"] for row in train_rows[6 * e : 6 * e + 6]] for e in range(epochs)]
    assert len({tuple(order) for order in orders}) > 1  # the order is drawn per epoch
    assert {fold_of(row["case_id"]) for row in train_rows} == {2, 3, 4}
    assert {int(row["task"]) for row in train_rows} == {0, 1}
    for row in train_rows:
        assert row["image"].shape == (1, 16, 16, 16) and row["image"].dtype == np.float32
        assert row["label"].shape == (16, 16, 16) and row["label"].dtype == np.float32
        assert 0 <= row["label"].min() and row["label"].max() <= 1
    assert sum(row["label"].max() > 0 for row in train_rows) >= len(train_rows) / 2  # most samples show an anomaly

    val_rows = datasets["val"].take_all()  # synthesised in this process (a small set)
    from_actors = fold_dataset(plan, config, 5, "val", data_cpus=1.0, keys=True).take_all()
    assert [
        (r["sample_key"], r["image"].tobytes(), r["label"].tobytes(), r["healthy"].tobytes()) for r in val_rows
    ] == [(r["sample_key"], r["image"].tobytes(), r["label"].tobytes(), r["healthy"].tobytes()) for r in from_actors]
    assert sorted(row["sample_key"] for row in val_rows) == sorted(
        f"case{i:02d}@{VALIDATION_EPOCH + v}" for i in range(4) for v in range(2)
    )
    assert {int(row["task"]) for row in val_rows} <= {2, 3, 4}
    for row in val_rows:
        healthy = load_case(f"{tmp_path}/data/{row['case_id']}.npz").image
        np.testing.assert_array_equal(row["healthy"], healthy)  # the unchanged case: its target is zero
        assert row["image"].shape == healthy.shape and row["label"].shape == healthy.shape[1:]
        assert (row["label"].max() > 0) <= (row["image"] != healthy).any()  # a label marks a change

    # What Train gets: only tensor columns, which convert to torch batches; validation adds each
    # sample's task id (the loop's per-task figures), synthesised in this process or by tasks alike.
    plain = fold_datasets(plan, config, seed=5, data_cpus=1.0)
    batch = next(iter(plain["train"].iter_torch_batches(batch_size=2)))
    assert set(batch) == IMAGE_COLUMNS and tuple(batch["image"].shape) == (2, 1, 16, 16, 16)
    batch = next(iter(plain["val"].iter_torch_batches(batch_size=8)))
    assert set(batch) == IMAGE_COLUMNS | {"healthy", "task"}
    assert batch["task"].tolist() == [int(row["task"]) for row in val_rows]
    by_tasks = fold_dataset(plan, config, 5, "val", data_cpus=1.0)
    assert next(iter(by_tasks.iter_torch_batches(batch_size=8)))["task"].tolist() == batch["task"].tolist()


def test_an_epoch_of_fixed_steps_sizes_the_stream_to_the_run():
    """`train.epoch_steps` sets the steps between validations; the stream holds every step of the
    run (max_epochs x epoch_steps samples of batch_size) plus a data epoch of margin."""
    one_pass = load_config(preset="tiny", overrides=["train.batch_size=4", "train.max_epochs=3"]).train
    assert steps_per_epoch(10, one_pass.batch_size) == 2 and training_epochs(10, one_pass) == 4  # 6 steps = 24 samples
    fixed = load_config(preset="tiny", overrides=["train.batch_size=4", "train.max_epochs=3", "train.epoch_steps=5"])
    assert steps_per_epoch(10, 4, fixed.train.epoch_steps) == 5
    assert training_epochs(10, fixed.train) == 7  # 15 steps of 4 = 60 samples = 6 passes over 10, + 1
    capped = load_config(preset="tiny", overrides=["train.epoch_steps=5", "train.max_steps=7", "train.batch_size=4"])
    assert training_epochs(10, capped.train) == 4  # 28 samples -> 3 passes, + 1


def test_same_rows_whatever_the_number_of_synthesis_tasks(ray_session, tmp_path):
    data = write_noise_dataset(str(tmp_path / "data"), (32, 32), channels=3)
    config = config_for(data, "train.max_epochs=3", "train.batch_size=2")
    plan = plan_of("3/2", 3)  # tasks 0, 2, 3 on folds 0, 2, 3

    def rows(tasks, seed=7):
        dataset = fold_dataset(plan, config, seed, "train", data_cpus=3.0, tasks=tasks, keys=True)
        return [
            (row["sample_key"], int(row["task"]), row["image"].tobytes(), row["label"].tobytes())
            for row in dataset.iter_rows()
        ]

    one, two = rows(1), rows(2)
    assert len(one) == 6 * training_epochs(6, config.train) and one == two  # same bytes, same order
    assert {task for _, task, _, _ in one} == {0, 2, 3}
    other_seed = rows(2, seed=8)
    assert [key for key, *_ in other_seed] != [key for key, *_ in one]


def test_cases_on_s3_give_the_local_rows(ray_session, s3_server, tmp_path):
    local = write_noise_dataset(str(tmp_path / "data"), (24, 24))
    remote = write_noise_dataset(f"s3://{s3_server['bucket']}/stream-cases", (24, 24))
    plan = plan_of("1/4", 3)

    def rows(data):
        datasets = fold_datasets(plan, config_for(data, "train.max_epochs=1"), seed=1, data_cpus=1.0, keys=True)
        return {
            name: sorted((row["sample_key"], row["image"].tobytes()) for row in dataset.iter_rows())
            for name, dataset in datasets.items()
        }

    from_s3 = rows(remote)
    assert from_s3 == rows(local) and len(from_s3["val"]) == 2


def test_a_corrupt_case_is_skipped_counted_and_logged(ray_session, tmp_path, caplog):
    data = write_noise_dataset(str(tmp_path / "data"), (16, 16))
    bad = tmp_path / "data" / "case03.npz"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    plan = plan_of("1/4", 0)  # trains on folds 1-4 (they are the larger set), validates on fold 0
    rows = fold_dataset(plan, config_for(data, "train.max_epochs=1"), 0, "train", data_cpus=1.0, keys=True).take_all()
    assert {row["case_id"] for row in rows} == {f"case{i:02d}" for i in range(2, 10)} - {"case03"}

    # The actor's own count and message, without Ray.
    image_set = [(f"case{i:02d}", f"{tmp_path}/data/case{i:02d}.npz") for i in range(2, 10)]
    synthesise = BatchSynthesiser(0, (0,), image_set, (), 5.0, validation=False, keys=True)
    items = {
        "case_id": np.array(["case03", "case02", "case03"]),
        "array_uri": np.array([str(bad), f"{tmp_path}/data/case02.npz", str(bad)]),
        "epoch": np.array([0, 0, 1]),
    }
    with caplog.at_level(logging.WARNING):
        out = synthesise(items)
    assert list(out["sample_key"]) == ["case02@0"] and synthesise.skipped == 2
    assert str(bad) in caplog.text and "2 of 3 skipped" in caplog.text


def test_inter_blend_reads_the_external_dataset(tmp_path):
    write_noise_dataset(str(tmp_path / "data"), (24, 24), count=5)
    external = write_noise_dataset(str(tmp_path / "external"), (40, 40), count=3, seed=9)
    synthesise = BatchSynthesiser(
        0,
        (1,),
        [(f"case{i:02d}", f"{tmp_path}/data/case{i:02d}.npz") for i in range(5)],
        [row["array_uri"] for row in manifest.read_manifest(external)],
        5.0,
        validation=False,
        keys=True,
    )
    out = synthesise(
        {
            "case_id": np.array(["case00"]),
            "array_uri": np.array([f"{tmp_path}/data/case00.npz"]),
            "epoch": np.array([0]),
        }
    )
    assert out["task"].tolist() == [1] and out["label"].max() > 0
    assert any(f"{tmp_path}/external/case{i:02d}.npz" in synthesise.synthesiser.cache for i in range(3))


def test_items_reach_the_actors_in_blocks_of_many_calls(ray_session):
    """Each actor task is one item block: many calls' worth of items (one call per task left the
    actors waiting on Ray's scheduling), every item once, in the drawn order."""
    assert rows_per_call((80, 112, 80)) == 3 and rows_per_call((256, 256)) == 32
    assert rows_per_task((80, 112, 80), 10_000, tasks=2) == CALLS_PER_TASK * 3
    assert rows_per_task((256, 256), 100_000, tasks=4) == CALLS_PER_TASK * 32
    assert rows_per_task((80, 112, 80), 80, tasks=2) == 10  # a short stream: 4 tasks per slot
    assert rows_per_task((80, 112, 80), 8, tasks=2) == 3  # never below one call

    cases = [(f"case{i:02d}", f"/data/case{i:02d}.npz") for i in range(16)]
    epochs = list(range(40))
    blocks = [bundle.num_rows() for bundle in item_dataset(cases, epochs, 3, True, 48).iter_internal_ref_bundles()]
    assert sum(blocks) == 640 and len(blocks) == 13 and max(blocks) - min(blocks) <= 1
    rows = item_dataset(cases, epochs, 3, True, 48).take_all()
    expected = [
        (cases[index][0], epoch)
        for epoch in epochs
        for index in sample_generator(3, epoch, ORDER_KEY, -1).permutation(16)
    ]
    assert [(row["case_id"], row["epoch"]) for row in rows] == expected


def test_a_stream_shorter_than_the_pool_asks_only_for_the_slots_it_can_use(ray_session, tmp_path):
    """One item block cannot feed two task slots: the pool shrinks to the blocks (Ray Data would
    warn that the operator 'only received 1 input(s)')."""
    data = write_noise_dataset(str(tmp_path / "data"), (16, 16), count=2)
    cases = [(row["case_id"], row["array_uri"]) for row in manifest.read_manifest(data)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = synthesis_dataset(
            cases[:1],
            (2,),
            config_for(data),
            0,
            [0],
            validation=False,
            pool=plan_synthesis(3.0, tasks=2),
            shape=(16, 16),
        ).take_all()
    assert len(rows) == 1 and rows[0]["image"].shape == (1, 16, 16)
    assert [str(warning.message) for warning in caught if "only received" in str(warning.message)] == []


def test_stream_processes_load_without_torch():
    """Read and synthesis tasks import the stream, the config and the synthesiser; torch
    (~2 s per process) is for the Train workers only."""
    code = (
        "import sys, lightwork.config, lightwork.distributed.stream, lightwork.synthesis.samples; "
        "print(sorted(name for name in ('torch', 'lightwork.models') if name in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_training_and_validation_use_healthy_cases_only(ray_session, tmp_path):
    """A case with a lesion mask or labelled anomalous (e.g. a PNEUMONIA folder) never reaches a model."""
    data = write_noise_dataset(str(tmp_path / "data"), (16, 16))
    rows = manifest.read_manifest(data)
    rows[5]["has_lesion"], rows[7]["image_label"], rows[8]["image_label"] = True, 1, 0
    data = manifest.write_manifest(str(tmp_path / "data"), rows)
    config = config_for(data, "train.max_epochs=1", "train.batch_size=1")
    plan = plan_of("1/4", 4)  # trains on folds 0-3, validates on fold 4 (cases 8, 9)
    datasets = fold_datasets(plan, config, seed=1, data_cpus=1.0, keys=True)
    assert {row["case_id"] for row in datasets["train"].take_all()} == {f"case0{i}" for i in (0, 1, 2, 3, 4, 6)}
    assert {row["case_id"] for row in datasets["val"].take_all()} == {"case08", "case09"}
