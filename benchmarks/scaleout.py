"""Scale-out on a local autoscaling cluster: Ray's autoscaler v2 over its fake multi-node provider.

A head with no GPU and a GPU node type that starts at 0 nodes; `lightwork train --config tiny` on a
small noise dataset, attached through RAY_ADDRESS as any job is, asks for one GPU per worker. The
table: folds done, GPU nodes launched, time to the first GPU node, Train workers alive at once
against the plan (the trials the run starts) and the cap the node types set, and how long the idle
GPU nodes take to go after the run.

    python benchmarks/scaleout.py [--max-gpu-nodes 2] [--split 1/4] [--idle-timeout 10]

The fake nodes share this machine's cores: the times are the control plane's (scheduling, node
start, scale-down), not training speed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lightwork.demo.noise import write_noise_dataset
from lightwork.testing.clusters import AutoscalingCluster, alive_nodes, list_state
from lightwork.training import runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-gpu-nodes", type=int, default=2)
    parser.add_argument("--split", default="1/4")
    parser.add_argument("--idle-timeout", type=float, default=10.0, help="seconds before an idle node goes")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lightwork-scaleout-"))
    data = write_noise_dataset(root / "data")
    command = [
        str(Path(sys.executable).with_name("lightwork")),
        "train",
        "--config",
        "tiny",
        "--data",
        data,
        "--storage",
        str(root / "runs"),
        "--name",
        "scaleout",
        "--split",
        args.split,
    ]
    for setting in (
        "model.spatial_dims=2",
        "model.features=[4,8]",
        "train.batch_size=2",
        "train.val_batch_size=4",
        "resources.gpus_per_worker=1",
        "resources.cpus_per_worker=1",
        "resources.data_cpus_per_trial=1",
    ):
        command += ["--set", setting]
    samples: list[tuple[float, int, int]] = []  # (seconds since start, GPU nodes alive, Train workers alive)
    with AutoscalingCluster(
        {"gpu": {"CPU": 2, "GPU": 1}},
        max_workers=args.max_gpu_nodes,
        head_resources={"CPU": 1},
        idle_timeout_s=args.idle_timeout,
    ) as cluster:
        env = dict(os.environ, RAY_ADDRESS=cluster.address, RAY_AUTH_MODE="disabled")
        dry = subprocess.run([*command, "--dry-run"], env=env, capture_output=True, text=True, check=True)
        planned = next(line for line in dry.stdout.splitlines() if "trials at once" in line)
        stop = threading.Event()
        start = time.monotonic()

        def watch() -> None:
            while not stop.is_set():
                gpu_nodes = sum(1 for node in alive_nodes(cluster.address) if node.get("GPU"))
                workers = len(
                    list_state(
                        cluster.dashboard, "actors", [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
                    )
                )
                samples.append((time.monotonic() - start, gpu_nodes, workers))
                time.sleep(1.0)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        train_seconds = time.monotonic() - start
        stop.set()
        watcher.join()
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:], file=sys.stderr)
            return 1
        ended = time.monotonic()
        while sum(1 for node in alive_nodes(cluster.address) if node.get("GPU")) and time.monotonic() - ended < 300:
            time.sleep(1.0)
        scale_down = time.monotonic() - ended
        nodes_launched = len(
            [node for node in list_state(cluster.dashboard, "nodes", []) if node["resources_total"].get("GPU")]
        )
    records = runs.read_folds(str(root / "runs" / "scaleout"))
    first_gpu = next((t for t, gpus, _ in samples if gpus), float("nan"))
    rows = [
        ("folds done", f"{sum(r.status == 'done' for r in records)} of {len(records)}"),
        ("plan (--dry-run)", planned.strip()),
        ("GPU nodes launched", f"{nodes_launched} (cap {args.max_gpu_nodes})"),
        ("time to the first GPU node", f"{first_gpu:.1f} s"),
        ("Train workers alive at once, max", f"{max((w for _, _, w in samples), default=0)}"),
        ("GPU nodes alive at once, max", f"{max((g for _, g, _ in samples), default=0)}"),
        ("train command wall time", f"{train_seconds:.1f} s"),
        (f"idle GPU nodes gone after the run (idle timeout {args.idle_timeout:g} s)", f"{scale_down:.1f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"| {'measure':<{width}} | value |\n|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
