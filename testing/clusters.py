"""A Ray cluster with a real autoscaler on this machine: Ray's fake multi-node provider.

For trying a run's scale-out before a real cluster (tests, `benchmarks/scaleout.py`): a head node
and worker node types of any resources (GPUs included: they have no CUDA behind them), launched
and removed by Ray's own autoscaler as demand comes and goes: v2 (which lightwork can ask what it
can add) or v1 (this provider's default as the wheel ships it, and KubeRay's where v2 is not turned
on; lightwork cannot ask it).

    with AutoscalingCluster({"gpu": {"CPU": 2, "GPU": 1}}, max_workers=2) as cluster:
        subprocess.run([...], env=dict(os.environ, RAY_ADDRESS=cluster.address))

Why not `ray.cluster_utils.AutoscalingCluster`: in the 2.60 wheel it reads an example config the
wheel lacks and runs `ray stop --force`, which ends every Ray on the machine. Here the provider is
named as an external module (no example config needed) and the cluster is stopped by ending the
processes that name its own temporary folder (the fake worker nodes' processes do too).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

FAKE_PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"
HEAD_TYPE = "ray.head.default"  # the fake provider's name for the head's node type
HEAD_ID = "f" * 51 + "00000"  # the fake provider's id of the head node (its FAKE_HEAD_NODE_ID)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_naming(text: str) -> list[int]:
    """Pids of the live processes whose command line contains `text` (Linux /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return [pid for pid in pids if pid != os.getpid()]


def _terminate(find: Callable[[], list[int]], grace_s: float) -> None:
    """SIGTERM the pids `find()` lists, then SIGKILL those it still lists after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in find():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while find() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not find():
            return


def stop_processes(text: str, grace_s: float = 3.0) -> None:
    """SIGTERM every process naming `text`, then SIGKILL what is left after `grace_s`."""
    _terminate(lambda: processes_naming(text), grace_s)


def session_processes(session_id: int) -> list[int]:
    """Pids of the live processes whose session id is `session_id` (Linux /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def stop_session(session_id: int, grace_s: float = 3.0) -> None:
    """SIGTERM every process of the session (a process started with `start_new_session=True` and
    what it started, a local Ray included), then SIGKILL what is left after `grace_s`."""
    _terminate(lambda: session_processes(session_id), grace_s)


class AutoscalingCluster:
    """A head with `head_resources` and worker node types {name: resources}, each from 0 (or
    `min_workers`) to `max_workers` nodes, scaled by Ray's autoscaler `autoscaler` ("v1" or "v2");
    idle nodes go after `idle_timeout_s`. `address` is the GCS address (RAY_ADDRESS), `dashboard`
    the state API's."""

    def __init__(
        self,
        worker_types: dict[str, dict[str, float]],
        max_workers: int = 2,
        min_workers: int = 0,
        head_resources: dict[str, float] | None = None,
        idle_timeout_s: float = 10.0,
        autoscaler: str = "v2",
    ) -> None:
        if autoscaler not in ("v1", "v2"):
            raise ValueError(f"autoscaler: 'v1' or 'v2', not {autoscaler!r}")
        self.autoscaler = autoscaler
        self.worker_types = worker_types
        self.max_workers, self.min_workers = max_workers, min_workers
        self.head_resources = head_resources or {"CPU": 1}
        self.idle_timeout_s = idle_timeout_s
        # Short path: Ray's unix sockets live under the temp dir and their paths are length-limited.
        self.temp_dir = tempfile.mkdtemp(prefix="lwas", dir="/tmp")
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"

    def config(self) -> dict:
        """The autoscaling config `ray start --autoscaling-config` reads."""
        node_types = {HEAD_TYPE: {"resources": self.head_resources, "node_config": {}, "max_workers": 0}}
        for name, resources in self.worker_types.items():
            node_types[name] = {
                "resources": resources,
                "node_config": {},
                "min_workers": self.min_workers,
                "max_workers": self.max_workers,
            }
        return {
            "cluster_name": "lightwork-local",
            "max_workers": self.max_workers * len(self.worker_types),
            "idle_timeout_minutes": self.idle_timeout_s / 60,
            "upscaling_speed": 10.0,
            "provider": {
                "type": "external",
                "module": FAKE_PROVIDER,
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
                "gcs_address": self.address,
                "launch_multiple": True,
                "head_node_id": HEAD_ID,
            },
            "available_node_types": node_types,
            "head_node_type": HEAD_TYPE,
            "auth": {},
            "docker": {},
            "file_mounts": {},
            "cluster_synced_files": [],
            "rsync_exclude": [],
            "rsync_filter": [],
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
        }

    def start(self, timeout_s: float = 180.0) -> "AutoscalingCluster":
        config_path = os.path.join(self.temp_dir, "autoscaling.yaml")
        with open(config_path, "w") as handle:
            yaml.safe_dump(self.config(), handle)
        # Autoscaler v2 maps Ray nodes to the provider's instances by these ids.
        env = dict(
            os.environ,
            RAY_FAKE_CLUSTER="1",
            AUTOSCALER_UPDATE_INTERVAL_S="1",
            RAY_enable_autoscaler_v2="1" if self.autoscaler == "v2" else "0",
            RAY_CLOUD_INSTANCE_ID=HEAD_ID,
            RAY_OVERRIDE_NODE_ID_FOR_TESTING=HEAD_ID,
            RAY_AUTH_MODE="disabled",
            RAY_USAGE_STATS_ENABLED="0",
        )
        env.pop("RAY_ADDRESS", None)
        resources = dict(self.head_resources)
        command = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            f"--port={self.port}",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={int(resources.pop('CPU', 0))}",
            f"--num-gpus={int(resources.pop('GPU', 0))}",
            f"--autoscaling-config={config_path}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            "--disable-usage-stats",
        ]
        if resources:
            command.append(f"--resources={json.dumps(resources)}")
        started = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout_s, start_new_session=True
        )
        if started.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{started.stdout}\n{started.stderr}")
        return self

    def stop(self) -> None:
        stop_processes(self.temp_dir)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> "AutoscalingCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def alive_nodes(address: str) -> list[dict]:
    """The resources of each alive node of the cluster at `address` (GCS), read by a fresh driver
    process (this one may be attached to another cluster)."""
    code = (
        "import json, ray; ray.init(logging_level='ERROR'); "
        "print('NODES', json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, RAY_ADDRESS=address, RAY_AUTH_MODE="disabled"),
    )
    if out.returncode != 0:
        raise RuntimeError(f"cannot list the nodes of {address}: {out.stderr[-2000:]}")
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("NODES "))[len("NODES ") :])


def list_state(dashboard: str, what: str, filters: list) -> list[dict]:
    """Ray's state API (`ray.util.state.list_<what>`, detail=True) of the cluster whose dashboard
    is at `dashboard` (or whose GCS address it is), as dicts."""
    from dataclasses import asdict, is_dataclass

    from ray.util import state

    items = getattr(state, f"list_{what}")(
        address=dashboard, filters=filters, detail=True, limit=10_000, raise_on_missing_output=False
    )
    return [asdict(item) if is_dataclass(item) else dict(item) for item in items]
