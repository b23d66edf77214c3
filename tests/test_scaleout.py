"""Scale-out on real multi-node Ray clusters on this machine, driven as users drive it
(`lightwork train` attached through RAY_ADDRESS):

- Ray's own autoscaler over its fake multi-node provider: a head with no GPU and a GPU node type
  that starts at 0 nodes; the trials wait, the autoscaler launches GPU nodes, every fold is done
  on them, and the nodes go again once idle.
- `ray.cluster_utils.Cluster` with two worker nodes: the node running a fold is removed while it
  trains (a new one joins); every fold ends done, the interrupted one resumed from its checkpoint.
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

import numpy as np
import pytest

from lightwork.data import manifest, storage
from lightwork.data.cases import PreparedCase, save_case
from lightwork.distributed.local_cluster import AutoscalingCluster, free_port
from lightwork.training import runs

pytestmark = pytest.mark.slow
LIGHTWORK = str(Path(sys.executable).with_name("lightwork"))
TRAIN_TIMEOUT_S = 900


def write_dataset(root: Path, shape=(24, 24), count: int = 10) -> str:
    """`count` smooth random 2D cases (foreground: all but a 2-pixel border) and their manifest."""
    rng = np.random.default_rng(0)
    ids = [f"case{i:02d}" for i in range(count)]
    folds = manifest.contiguous_folds(ids)
    foreground = np.zeros(shape, bool)
    foreground[2:-2, 2:-2] = True
    rows = []
    for case_id in ids:
        image = (rng.normal(1.0, 0.2, shape)).astype(np.float32)[None]
        uri = str(root / f"{case_id}.npz")
        save_case(uri, PreparedCase(case_id, image, foreground))
        rows.append({"case_id": case_id, "source_uri": uri, "array_uri": uri, "checksum": case_id,
                     "shape": list(shape), "spacing": [1.0, 1.0], "recipe": "cxr", "recipe_version": "1",
                     "fold": folds[case_id], "has_lesion": False, "status": "ok", "error": None})
    return manifest.write_manifest(str(root), rows)


def train_command(data: str, storage_uri: str, name: str, *overrides: str) -> list[str]:
    settings = ["model.spatial_dims=2", "model.features=[4,8]", "train.batch_size=2", "train.val_batch_size=4",
                "train.warmup_steps=1", *overrides]
    return [LIGHTWORK, "train", "--config", "tiny", "--data", data, "--storage", storage_uri, "--name", name,
            "--split", "1/4", *[item for setting in settings for item in ("--set", setting)]]


def alive_nodes(address: str) -> list[dict]:
    """The alive nodes of the cluster at `address` (GCS), read from a fresh driver process."""
    code = ("import json, ray; ray.init(logging_level='ERROR'); "
            "print(json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, RAY_ADDRESS=address, RAY_AUTH_MODE="disabled"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gpu_trials_wait_for_the_autoscaler_run_there_and_the_nodes_go_when_idle(tmp_path):
    data = write_dataset(tmp_path / "data")
    with AutoscalingCluster({"gpu": {"CPU": 2, "GPU": 1}}, max_workers=2, head_resources={"CPU": 1},
                            idle_timeout_s=10) as cluster:
        env = dict(os.environ, RAY_ADDRESS=cluster.address, RAY_AUTH_MODE="disabled")
        command = train_command(data, str(tmp_path / "runs"), "autoscaled", "resources.gpus_per_worker=1",
                                "resources.cpus_per_worker=1", "resources.data_cpus_per_trial=1")
        dry = subprocess.run([*command, "--dry-run"], env=env, capture_output=True, text=True, timeout=300)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        # The autoscaler does not report its node types: every trial starts and waits for its workers.
        assert "autoscaling cluster: 5 of 5 trials at once" in dry.stdout, dry.stdout
        assert "1 Train worker(s) x {CPU: 1, GPU: 1}" in dry.stdout
        assert not runs.read_folds(str(tmp_path / "runs" / "autoscaled"))  # nothing trained or written
        gpu_nodes_seen = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                gpu_nodes_seen.append(sum(1 for node in alive_nodes(cluster.address) if node.get("GPU")))
                time.sleep(2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S)
        finally:
            stop.set()
            watcher.join()
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        records = runs.read_folds(str(tmp_path / "runs" / "autoscaled"))
        assert [record.status for record in records] == ["done"] * 5
        assert max(gpu_nodes_seen) >= 1 and max(gpu_nodes_seen) <= 2
        # Every fold ran its Train worker on a GPU node: the head has none, and a worker asks for one.
        workers = list_state(cluster.dashboard, "actors", [("class_name", "=", "RayTrainWorker")])
        nodes = {node["node_id"]: node for node in list_state(cluster.dashboard, "nodes", [])}
        assert workers and all(nodes[w["node_id"]]["resources_total"].get("GPU") == 1 for w in workers)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(alive_nodes(cluster.address)) > 1:
            time.sleep(2)
        assert len(alive_nodes(cluster.address)) == 1, "idle GPU nodes were not removed"


def list_state(dashboard: str, what: str, filters: list) -> list[dict]:
    """Ray's state API (`ray.util.state.list_<what>`, detail=True) of the cluster at `dashboard`."""
    from ray.util import state

    return [dict(item) if not isinstance(item, dict) else item for item in
            getattr(state, f"list_{what}")(address=dashboard, filters=filters, detail=True, limit=10_000,
                                           raise_on_missing_output=False)]


def test_a_lost_node_resumes_its_fold_from_the_checkpoint_and_secrets_stay_out_of_ray(tmp_path, s3_server):
    from ray.cluster_utils import Cluster

    data = write_dataset(tmp_path / "data")
    run_uri = f"s3://{s3_server['bucket']}/scaleout/nodeloss"
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": free_port()})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=2)
        dashboard = "http://" + cluster.head_node.address_info["webui_url"]
        env = dict(os.environ, RAY_ADDRESS=cluster.address, RAY_AUTH_MODE="disabled")
        command = train_command(data, f"s3://{s3_server['bucket']}/scaleout", "nodeloss", "train.max_epochs=8",
                                "resources.cpus_per_worker=1", "resources.data_cpus_per_trial=1")
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        filesystem, run_path = storage.filesystem(run_uri)
        removed, seen_state = None, []
        deadline = time.monotonic() + TRAIN_TIMEOUT_S
        while removed is None and process.poll() is None and time.monotonic() < deadline:
            filesystem.invalidate_cache()
            checkpointed = {Path(path).parent.name for path in filesystem.glob(f"{run_path}/*/checkpoint_*")}
            running = {Path(path).parent.name for path in filesystem.glob(f"{run_path}/*/fold.json")
                       if json.loads(filesystem.cat_file(path))["status"] == "running"}
            workers = list_state(dashboard, "actors", [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
            # Remove a node only once every running fold has a checkpoint to resume from.
            if running and running <= checkpointed and len(workers) == len(running):
                seen_state.append(json.dumps(list_state(dashboard, "actors", [])) + json.dumps(
                    list_state(dashboard, "jobs", [])) + json.dumps(list_state(dashboard, "tasks", [])))
                by_id = {node.node_id: node for node in cluster.list_all_nodes()}
                victims = [by_id[w["node_id"]] for w in workers if w["node_id"] in by_id]
                if victims:
                    removed = victims[0].node_id
                    cluster.remove_node(victims[0])
                    cluster.add_node(num_cpus=2)  # a replacement joins, as an autoscaler would bring
            time.sleep(0.5)
        output, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert removed is not None, "no node was removed: the test did not exercise a node loss\n" + output[-3000:]
        assert process.returncode == 0, output[-5000:]
        records = runs.read_folds(run_uri)
        assert [record.status for record in records] == ["done"] * 5  # the same set as an undisturbed run
        resumed = [r for r in records if any(h["restored_from_step"] for h in r.history)]
        assert resumed, "no fold resumed from a checkpoint"
        for record in resumed:
            assert [h["epoch"] for h in record.history] == list(range(1, 9))  # continued, none repeated or lost
            first = next(h for h in record.history if h["restored_from_step"])
            assert first["restored_from_step"] == record.history[first["epoch"] - 2]["step"]
        for text in seen_state:
            assert s3_server["secret"] not in text and s3_server["key"] not in text
        config_text = storage.read_bytes(f"{run_uri}/config.yaml").decode()
        assert s3_server["secret"] not in config_text and s3_server["secret"] not in output
    finally:
        cluster.shutdown()
