"""Scale-out on real multi-node Ray clusters on this machine, driven as users drive it
(`lightwork train` attached through RAY_ADDRESS):

- Ray's own autoscaler over its fake multi-node provider: a head with no GPU and a GPU node type
  that starts at 0 nodes. Autoscaler v1 (which cannot be asked): two trials wait, their demand
  makes it launch at most its one GPU node, every fold is done there, and the node goes again once
  idle. Autoscaler v2: asked what it can add, it answers (a GPU node) and refuses what no node
  type holds.
- `ray.cluster_utils.Cluster` with two worker nodes: the node running a fold is removed while it
  trains (a new one joins); both folds end done, the interrupted one resumed from its checkpoint.
  The run folder is in a real S3 bucket, and no credential shows in Ray's state API meanwhile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lightwork.data import storage
from lightwork.demo.noise import write_noise_dataset
from lightwork.distributed.cluster import LOCAL_TRAIN_ENV
from lightwork.testing.clusters import AutoscalingCluster, free_port, list_state
from lightwork.training import runs

pytestmark = pytest.mark.slow
LIGHTWORK = str(Path(sys.executable).with_name("lightwork"))
TRAIN_TIMEOUT_S = 900
# The node-loss test's folds train 10 epochs; their node goes only while both have 4 or more left.
LAST_EPOCH_TO_INTERRUPT = 6


def job_env(address: str) -> dict[str, str]:
    """A `lightwork train` attached to the cluster at `address`, with the Train settings lightwork
    gives a local instance (`LOCAL_TRAIN_ENV`: Train propagates them from the driver): with Ray's
    default 2-s polling each fold waits up to two polls more, which only lengthens the test."""
    return dict(os.environ, RAY_ADDRESS=address, RAY_AUTH_MODE="disabled", **LOCAL_TRAIN_ENV)


def train_command(data: str, storage_uri: str, name: str, folds: str, *overrides: str) -> list[str]:
    """`lightwork train` of the 1/4 split's folds at positions `folds` (a comma list): what the
    tests check needs neither all five nor the time their trials' starts take."""
    settings = [
        "model.spatial_dims=2",
        "model.features=[4,8]",
        "train.batch_size=2",
        "train.val_batch_size=4",
        "train.warmup_steps=1",
        *overrides,
    ]
    return [
        LIGHTWORK,
        "train",
        "--config",
        "tiny",
        "--data",
        data,
        "--storage",
        storage_uri,
        "--name",
        name,
        "--split",
        "1/4",
        "--folds",
        folds,
        *[item for setting in settings for item in ("--set", setting)],
    ]


def alive(dashboard: str) -> list[dict]:
    """The alive nodes of the cluster whose dashboard is at `dashboard` (state API, no driver)."""
    return list_state(dashboard, "nodes", [("state", "=", "ALIVE")])


def test_a_gpu_trial_waits_for_autoscaler_v1_runs_there_and_the_node_goes_when_idle(tmp_path):
    data = write_noise_dataset(tmp_path / "data")
    with AutoscalingCluster(
        {"gpu": {"CPU": 2, "GPU": 1}}, max_workers=1, head_resources={"CPU": 1}, idle_timeout_s=10, autoscaler="v1"
    ) as cluster:
        command = train_command(
            data,
            str(tmp_path / "runs"),
            "autoscaled",
            "0",
            "resources.gpus_per_worker=1",
            "train.max_epochs=1",
            "resources.cpus_per_worker=1",
            "resources.data_cpus_per_trial=1",
        )
        gpu_nodes_seen = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                gpu_nodes_seen.append(sum(1 for node in alive(cluster.dashboard) if node["resources_total"].get("GPU")))
                time.sleep(1)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            result = subprocess.run(
                command, env=job_env(cluster.address), capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S
            )
        finally:
            stop.set()
            watcher.join()
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        # v1 is told apart from a plain head's monitor; the run says what it could not ask.
        assert "autoscaler v1: what it can add cannot be asked" in result.stdout, result.stdout[-4000:]
        records = runs.read_folds(str(tmp_path / "runs" / "autoscaled"))
        assert [record.status for record in records] == ["done"] + ["pending"] * 4
        assert gpu_nodes_seen[0] == 0 and max(gpu_nodes_seen) == 1  # launched from zero for the demand
        # The fold ran its Train worker on a GPU node: the head has none, and a worker asks for one.
        workers = list_state(cluster.dashboard, "actors", [("class_name", "=", "RayTrainWorker")])
        nodes = {node["node_id"]: node for node in list_state(cluster.dashboard, "nodes", [])}
        assert workers and all(nodes[w["node_id"]]["resources_total"].get("GPU") == 1 for w in workers)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(alive(cluster.dashboard)) > 1:
            time.sleep(1)
        left = alive(cluster.dashboard)
        actors = list_state(cluster.dashboard, "actors", [("state", "=", "ALIVE")])
        assert len(left) == 1, "idle GPU nodes were not removed; alive there: " + json.dumps(
            [(actor["class_name"], actor["node_id"][:8]) for actor in actors]
            + [(node["node_id"][:8], node["resources_total"]) for node in left]
        )


V2_PROBE = """
import ray
from lightwork.config import load_config
from lightwork.distributed.resources import autoscaler_can_add, cluster_shape, plan_trials
from lightwork.errors import UserError

ray.init(logging_level="ERROR")
shape = cluster_shape()
plan = plan_trials(3, load_config(preset="tiny").resources, shape, autoscaler_can_add)
print("PLAN", shape.autoscaler, plan.worker_bundle, plan.max_concurrent_trials, plan.unchecked)
try:
    big = load_config(preset="tiny", overrides=["resources.cpus_per_worker=4"]).resources
    plan_trials(3, big, shape, autoscaler_can_add)
except UserError as error:
    print("REFUSED", error)
"""


def test_autoscaler_v2_is_asked_what_it_can_add():
    """v2 answers: a GPU node type exists (GPUs by default, from a head with none), and no node type
    holds a worker of 4 CPUs (refused before any trial starts, naming the field)."""
    with AutoscalingCluster({"gpu": {"CPU": 2, "GPU": 1}}, max_workers=1, head_resources={"CPU": 1}) as cluster:
        probe = subprocess.run(
            [sys.executable, "-c", V2_PROBE], env=job_env(cluster.address), capture_output=True, text=True, timeout=300
        )
    assert probe.returncode == 0, probe.stdout[-3000:] + probe.stderr[-3000:]
    assert "PLAN v2 {'CPU': 1.0, 'GPU': 1.0} 3 None" in probe.stdout, probe.stdout
    assert (
        "REFUSED resources.cpus_per_worker: one Train worker needs {CPU: 4} on one node, and no node that the "
        "autoscaler can add has it" in probe.stdout
    ), probe.stdout


def test_a_lost_node_resumes_its_fold_from_the_checkpoint_and_secrets_stay_out_of_ray(tmp_path, s3_server):
    from ray.cluster_utils import Cluster

    data = write_noise_dataset(tmp_path / "data")
    run_uri = f"s3://{s3_server['bucket']}/scaleout/nodeloss"
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": free_port(),
        },
    )
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=2)
        dashboard = "http://" + cluster.head_node.address_info["webui_url"]
        env = job_env(cluster.address)
        command = train_command(
            data,
            f"s3://{s3_server['bucket']}/scaleout",
            "nodeloss",
            "0,1",  # both at once, one on each node
            # 10 epochs of 8 steps: the node goes while its fold trains (LAST_EPOCH_TO_INTERRUPT).
            "train.max_epochs=10",
            "train.batch_size=1",
            "resources.cpus_per_worker=1",
            "resources.data_cpus_per_trial=1",
        )
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        filesystem, run_path = storage.filesystem(run_uri)
        removed, seen_state = None, []
        deadline = time.monotonic() + TRAIN_TIMEOUT_S
        while removed is None and process.poll() is None and time.monotonic() < deadline:
            filesystem.invalidate_cache()
            # A checkpoint counts once Train has registered it (its snapshot names it): a checkpoint
            # folder uploaded but not yet registered is not restored, as Train documents. The fold
            # must have epochs left after it: restored from its last one, it would train no more.
            checkpointed = {
                Path(path).parent.name
                for path in filesystem.glob(f"{run_path}/*/checkpoint_manager_snapshot.json")
                if json.loads(filesystem.cat_file(path))["latest_checkpoint_result"]["metrics"]["epoch"]
                <= LAST_EPOCH_TO_INTERRUPT
            }
            running = {
                Path(path).parent.name
                for path in filesystem.glob(f"{run_path}/*/fold.json")
                if json.loads(filesystem.cat_file(path))["status"] == "running"
            }
            workers = list_state(dashboard, "actors", [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
            # Remove a node only once every running fold has a registered checkpoint to resume from.
            if running and running <= checkpointed and len(workers) == len(running):
                seen_state.append(
                    json.dumps([list_state(dashboard, what, []) for what in ("actors", "jobs", "tasks")], default=repr)
                )
                by_id = {node.node_id: node for node in cluster.list_all_nodes()}
                victims = [by_id[w["node_id"]] for w in workers if w["node_id"] in by_id]
                if victims:
                    removed = victims[0].node_id
                    cluster.remove_node(victims[0])
                    cluster.add_node(num_cpus=2)  # a replacement joins, as an autoscaler would bring
            time.sleep(0.5)
        try:
            output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            process.kill()
        assert removed is not None, "no node was removed: the test did not exercise a node loss\n" + output[-3000:]
        assert process.returncode == 0, output[-5000:]
        records = runs.read_folds(run_uri)
        assert [record.status for record in records] == ["done"] * 2 + ["pending"] * 3  # as undisturbed
        resumed = [r for r in records if any(h["restored_from_step"] for h in r.history)]
        assert resumed, "no fold resumed from a checkpoint"
        for record in resumed:
            assert [h["epoch"] for h in record.history] == list(range(1, 11))  # continued, none repeated or lost
            first = next(h for h in record.history if h["restored_from_step"])
            assert first["restored_from_step"] == record.history[first["epoch"] - 2]["step"]
        for text in seen_state:
            for value in (s3_server["secret"], s3_server["key"]):
                at = text.find(value)
                assert at < 0, f"a credential in Ray's state API: ...{text[max(0, at - 600) : at + 100]}..."
        config_text = storage.read_bytes(f"{run_uri}/config.yaml").decode()
        assert s3_server["secret"] not in config_text and s3_server["secret"] not in output
    finally:
        cluster.shutdown()


@pytest.mark.scale  # about 11 minutes on 2 cores: opt-in with `-m scale`
def test_thirty_trials_queue_on_a_small_fixed_cluster_and_all_finish(ray_session, tmp_path):
    """The whole ablation (--split all: 5 + 10 + 10 + 5 models) on the suite's 8-CPU cluster, at
    most 4 at once. Long (about 10 minutes on 2 cores): run with `-m scale`."""
    from lightwork.config import load_config
    from lightwork.distributed.train import train_splits
    from lightwork.training.resolve import resolve_run

    overrides = [
        f"data.manifest={write_noise_dataset(tmp_path / 'data')}",
        f"storage_path={tmp_path / 'runs'}",
        "name=ablation",
        "model.spatial_dims=2",
        "model.features=[4,8]",
        "train.batch_size=2",
        "train.val_batch_size=4",
        "train.max_epochs=1",
        "resources.cpus_per_worker=0.5",
        "resources.data_cpus_per_trial=1",
        "resources.max_concurrent_trials=4",
    ]
    records = train_splits(resolve_run(load_config(preset="tiny", overrides=overrides), "all"))
    assert [r.split for r in records] == ["1/4"] * 5 + ["2/3"] * 10 + ["3/2"] * 10 + ["4/1"] * 5
    assert all(record.status == "done" for record in records), [r.error for r in records if r.status != "done"]
