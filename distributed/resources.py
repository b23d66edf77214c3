"""What one trial needs, what the cluster has or can add, and how many trials run at once.

A run declares what one trial (one fold model) needs in `RunConfig.resources`: its Train workers
(`num_workers`, each `cpus_per_worker` CPUs and `gpus_per_worker` GPUs) and the CPUs of the
synthesis stream that feeds it (`data_cpus_per_trial`, Ray places those tasks on any node).
The cluster decides only how many trials run at once:

    fixed cluster       as many trials as fit on the nodes alive now (each Train worker on one
                        node), every running trial's stream sharing the CPUs the workers leave
    autoscaling cluster as many as fit on the largest cluster its node types allow; trials wait
                        as PENDING while the autoscaler adds nodes for the demand, and
                        `request_resources` asks for the whole first wave at once

A worker no node type could ever hold fails at once, naming the resource that is missing.
`gpus_per_worker = None` means 1 wherever the cluster has or can get GPUs, else 0 (CPU training).

The shape of the cluster comes from Ray: the nodes alive now (`ray.nodes()`), which autoscaler
runs, and the node types it reports to the GCS where it does. Ray 2.60's autoscalers do not report
them, so what the cluster can add is asked of the autoscaler itself (`autoscaler_can_add`): v2 is
asked with a cluster resource constraint of one bundle, which it either reports infeasible or
starts a node for. v1 (the fake multi-node provider's default, and KubeRay's where v2 is not on)
cannot be asked: the run trusts the declared resources, its trials wait as PENDING and their
waiting bundles are the demand v1 launches nodes for, and the plan says so in one line
(`TrialPlan.unchecked`). Nothing here starts a task.

Synthesis pool of a data budget B CPUs (one stream): the read task takes READ_CPUS, the synthesis
tasks running at once the rest

    tasks = max(1, round(B - READ_CPUS - SLACK_CPUS))      one per CPU: synthesis is single-threaded
    cpus per task = (B - READ_CPUS - SLACK_CPUS) / tasks   fractional, so the pool fits exactly

and `plan_synthesis` raises when fewer than MIN_TASK_CPUS are left.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lightwork.config import ResourcesSection
from lightwork.errors import UserError

TRIAL_DRIVER_CPUS = 0.01  # the Tune trial that drives a fold's TorchTrainer (0 is refused)
READ_CPUS = 0.05  # a stream's item read task: generates a few small tables
SLACK_CPUS = 0.01  # kept free of rounding
MIN_TASK_CPUS = 0.25
UNLIMITED = sys.maxsize  # a node type the autoscaler may add without a count limit


@dataclass(frozen=True)
class SynthesisPool:
    """The synthesis of one dataset: up to `tasks` Ray Data tasks at once, each asking `cpus_per_task`."""

    tasks: int
    cpus_per_task: float


def plan_synthesis(data_cpus: float, tasks: int | None = None) -> SynthesisPool:
    """The pool that fits a data budget of `data_cpus` CPUs (formula in the module docstring).

    `tasks` fixes the pool size (benchmarks, tests), sharing the budget.
    Raises UserError when the budget leaves a task fewer than MIN_TASK_CPUS.
    """
    usable = data_cpus - READ_CPUS - SLACK_CPUS
    count = tasks if tasks is not None else max(1, round(usable))
    if count < 1 or usable / count < MIN_TASK_CPUS:
        raise UserError(
            f"resources: {data_cpus:.2f} CPUs per trial are left for synthesis, {count} task(s) at once need at least "
            f"{count * MIN_TASK_CPUS + READ_CPUS + SLACK_CPUS:.2f}; raise resources.data_cpus_per_trial, lower "
            f"resources.cpus_per_worker or resources.max_concurrent_trials, or add CPUs to the cluster"
        )
    return SynthesisPool(count, usable / count)


@dataclass(frozen=True)
class NodeType:
    """One kind of node: its resources ({"CPU": 16, "GPU": 1, ...}) and how many the cluster may
    hold (`count`: alive now on a fixed cluster, the autoscaler's max on an autoscaling one)."""

    name: str
    resources: dict[str, float]
    count: int


@dataclass(frozen=True)
class ClusterShape:
    """The nodes a run can use: alive now, the autoscaler that runs ("v1", "v2" or None), and the
    node types it may add where it reports them (else ())."""

    alive: tuple[NodeType, ...]
    node_types: tuple[NodeType, ...] = ()
    autoscaler: str | None = None

    @property
    def autoscaling(self) -> bool:
        return self.autoscaler is not None or bool(self.node_types)

    @property
    def bounded(self) -> bool:
        """Whether the largest cluster the run can get is known (fixed, or node types reported)."""
        return not self.autoscaling or bool(self.node_types)

    @property
    def reachable(self) -> tuple[NodeType, ...]:
        """The largest cluster the run can get: the autoscaler's node types at their maximum counts
        and the alive nodes of no such type (the head), else the nodes alive now."""
        shapes = [node.resources for node in self.node_types]
        return self.node_types + tuple(node for node in self.alive if node.resources not in shapes)

    def total(self, resource: str, reachable: bool = False) -> float:
        nodes = self.reachable if reachable else self.alive
        return sum(node.resources.get(resource, 0.0) * node.count for node in nodes)


@dataclass(frozen=True)
class TrialPlan:
    """Resources of one trial and how the run's trials share the cluster.

    num_workers: Train workers (an int, or (min, max) for an elastic group); cpus_per_worker /
    gpus_per_worker: each worker's bundle; cpus_for_data: the CPU budget of each trial's synthesis
    stream; max_concurrent_trials: trials running at once; pool: each stream's synthesis pool;
    request: the bundles asked of the autoscaler for the first wave ([] on a fixed cluster);
    unchecked: one line saying what the autoscaler could not be asked (None when nothing was left).
    """

    num_trials: int
    num_workers: int | tuple[int, int]
    cpus_per_worker: float
    gpus_per_worker: float
    cpus_for_data: float
    max_concurrent_trials: int
    pool: SynthesisPool
    autoscaling: bool
    request: tuple[dict[str, float], ...] = ()
    unchecked: str | None = None

    @property
    def min_workers(self) -> int:
        return self.num_workers if isinstance(self.num_workers, int) else self.num_workers[0]

    @property
    def worker_bundle(self) -> dict[str, float]:
        return _bundle(self.cpus_per_worker, self.gpus_per_worker)

    def lines(self) -> list[str]:
        """What `--dry-run` prints about resources."""
        workers = (
            f"{self.num_workers}"
            if isinstance(self.num_workers, int)
            else f"{self.num_workers[0]}-{self.num_workers[1]} (elastic)"
        )
        waves = math.ceil(self.num_trials / self.max_concurrent_trials)
        kind = "autoscaling" if self.autoscaling else "fixed-size"
        lines = [
            f"per trial: {workers} Train worker(s) x {_text(self.worker_bundle)}, "
            f"{self.cpus_for_data:.2f} CPUs of synthesis ({self.pool.tasks} task(s) at once x "
            f"{self.pool.cpus_per_task:.2f} CPUs) and {TRIAL_DRIVER_CPUS} CPUs for the trial driver",
            f"{kind} cluster: {self.max_concurrent_trials} of {self.num_trials} trials at once ({waves} wave(s))",
        ]
        if self.request:
            total: dict[str, float] = {}
            for bundle in self.request:
                for key, value in bundle.items():
                    total[key] = total.get(key, 0.0) + value
            lines.append(f"requested from the autoscaler: {len(self.request)} bundles, {_text(total)} in all")
        elif self.autoscaling:
            lines.append(
                f"requested from the autoscaler: each waiting trial's bundles as it waits for them "
                f"({self.min_workers} x {_text(self.worker_bundle)} for its workers, then its synthesis pool)"
            )
        else:
            lines.append("requested from the autoscaler: nothing (the cluster cannot grow)")
        return lines


def _bundle(cpus: float, gpus: float) -> dict[str, float]:
    return {"CPU": cpus, **({"GPU": gpus} if gpus > 0 else {})}


def _text(resources: dict[str, float]) -> str:
    return "{" + ", ".join(f"{key}: {value:g}" for key, value in sorted(resources.items())) + "}"


def _fits(bundle: dict[str, float], node: dict[str, float]) -> int:
    """How many `bundle`s one node of resources `node` holds."""
    counts = [node.get(key, 0.0) / value for key, value in bundle.items() if value > 0]
    return int(min(counts) + 1e-9) if counts else UNLIMITED


def _workers_that_fit(bundle: dict[str, float], nodes: Sequence[NodeType]) -> int:
    return min(UNLIMITED, sum(min(UNLIMITED, _fits(bundle, node.resources) * node.count) for node in nodes))


Probe = Callable[[dict[str, float]], "bool | None"]


def _unknown(bundle: dict[str, float]) -> bool | None:
    return None


def default_gpus_per_worker(resources: ResourcesSection, shape: ClusterShape, can_add: Probe = _unknown) -> float:
    """The declared GPUs per worker, or 1 where the cluster has or can get GPUs and 0 elsewhere."""
    if resources.gpus_per_worker is not None:
        return float(resources.gpus_per_worker)
    if shape.total("GPU", reachable=True) > 0:
        return 1.0
    return 1.0 if not shape.bounded and can_add(_bundle(resources.cpus_per_worker, 1.0)) else 0.0


def _check_worker_fits(bundle: dict[str, float], gpus: float, shape: ClusterShape, can_add: Probe) -> None:
    """Raise naming the field when no node alive (fixed cluster), no reported node type, or no node
    the autoscaler says it can add holds one Train worker's `bundle`."""
    nodes = shape.reachable
    if any(_fits(bundle, node.resources) for node in nodes):
        return
    if shape.bounded:
        gpu_short = gpus > 0 and not any(_fits({"GPU": gpus}, node.resources) for node in nodes)
    else:
        verdict = can_add(bundle)
        if verdict is not False:
            return  # the autoscaler can add it, or cannot be asked: trust the declaration
        gpu_short = gpus > 0 and can_add({"GPU": gpus}) is False
    field = "resources.gpus_per_worker" if gpu_short else "resources.cpus_per_worker"
    where = "that the autoscaler can add" if shape.autoscaling else "alive (the cluster has no autoscaler)"
    known = ", ".join(f"{node.name} {_text(node.resources)}" for node in nodes)
    raise UserError(
        f"{field}: one Train worker needs {_text(bundle)} on one node, and no node {where} has it "
        f"(nodes now: {known or 'none'})"
    )


def plan_trials(
    num_trials: int, resources: ResourcesSection, shape: ClusterShape, can_add: Probe = _unknown
) -> TrialPlan:
    """Plan `num_trials` trials of the declared `resources` on `shape` (see the module docstring).

    `can_add(bundle)` answers whether the autoscaler can add a node holding `bundle` (True, False,
    or None when it cannot be asked). Raises UserError naming the field and the missing resource
    when no node can hold one Train worker, or, on a fixed cluster, when one whole trial does not fit.
    """
    workers = (
        resources.num_workers
        if resources.min_workers is None or resources.min_workers >= resources.num_workers
        else (resources.min_workers, resources.num_workers)
    )
    min_workers = workers if isinstance(workers, int) else workers[0]
    unanswered: list[dict[str, float]] = []

    def ask(bundle: dict[str, float]) -> bool | None:
        verdict = can_add(bundle)
        if verdict is None:
            unanswered.append(bundle)
        return verdict

    gpus = default_gpus_per_worker(resources, shape, ask)
    gpus_unknown = bool(unanswered) and resources.gpus_per_worker is None
    bundle = _bundle(resources.cpus_per_worker, gpus)
    _check_worker_fits(bundle, gpus, shape, ask)
    nodes = shape.reachable
    # The drivers' TRIAL_DRIVER_CPUS are left out of the fit (they come out of the data share), so
    # that one trial of 1 + 1 CPUs fits a 2-core workstation.
    per_trial_cpus = min_workers * resources.cpus_per_worker + resources.data_cpus_per_trial
    concurrent = min(num_trials, resources.max_concurrent_trials or num_trials)
    cpus = shape.total("CPU", reachable=True)
    if shape.bounded:
        fit_cpu = int(cpus // per_trial_cpus + 1e-9) if per_trial_cpus > 0 else num_trials
        concurrent = min(concurrent, fit_cpu, _workers_that_fit(bundle, nodes) // min_workers)
        if concurrent < 1:
            raise UserError(
                f"resources: one trial needs {per_trial_cpus:g} CPUs ({min_workers} worker(s) x "
                f"{resources.cpus_per_worker:g} resources.cpus_per_worker + "
                f"{resources.data_cpus_per_trial:g} resources.data_cpus_per_trial) but the cluster "
                f"{'can grow to' if shape.autoscaling else 'has'} {cpus:g}"
            )
    if shape.autoscaling:
        data = resources.data_cpus_per_trial
    else:  # what the concurrent trials' workers and drivers leave, shared evenly among their streams
        data = (cpus - concurrent * (min_workers * resources.cpus_per_worker + TRIAL_DRIVER_CPUS)) / concurrent
    pool = plan_synthesis(data)
    request: tuple[dict[str, float], ...] = ()
    if shape.autoscaling and shape.bounded:  # a request beyond what the node types allow would be infeasible
        per_trial = (
            [bundle] * min_workers
            + [{"CPU": pool.cpus_per_task}] * pool.tasks
            + [{"CPU": READ_CPUS + SLACK_CPUS + TRIAL_DRIVER_CPUS}]
        )
        request = tuple(dict(item) for _ in range(concurrent) for item in per_trial)
    unchecked = None
    if unanswered:
        unchecked = (
            f"autoscaler {shape.autoscaler}: what it can add "
            f"{'cannot be asked' if shape.autoscaler == 'v1' else 'got no answer'}; the run trusts the "
            f"declared resources and waits for nodes"
        )
        if gpus_unknown:
            unchecked += " (no GPU alive: CPU training unless resources.gpus_per_worker is declared)"
    return TrialPlan(
        num_trials,
        workers,
        resources.cpus_per_worker,
        gpus,
        data,
        concurrent,
        pool,
        shape.autoscaling,
        request,
        unchecked,
    )


def _node_types_from_config(cluster_config) -> tuple[NodeType, ...]:
    """The worker node types of the autoscaler's ClusterConfig message (None: no autoscaler)."""
    if cluster_config is None:
        return ()
    types = []
    for group in cluster_config.node_group_configs:
        count = UNLIMITED if group.max_count == -1 else int(group.max_count)
        resources = {key: float(value) for key, value in group.resources.items()}
        if count and resources:
            types.append(NodeType(group.name, resources, count))
    return tuple(types)


def cluster_shape() -> ClusterShape:
    """The shape of the connected Ray cluster: alive nodes, its autoscaler, reported node types."""
    import ray
    from ray._private.state import state
    from ray._private.worker import global_worker

    alive: dict[tuple, int] = {}
    for node in ray.nodes():
        if node.get("Alive"):
            resources = {
                key: float(value)
                for key, value in node.get("Resources", {}).items()
                if key in ("CPU", "GPU") or not (key.startswith("node:") or key.endswith("memory"))
            }
            key = tuple(sorted(resources.items()))
            alive[key] = alive.get(key, 0) + 1
    nodes = tuple(NodeType(f"alive{index}", dict(key), count) for index, (key, count) in enumerate(alive.items()))
    node_types = _node_types_from_config(state.get_cluster_config())
    return ClusterShape(nodes, node_types, _autoscaler(global_worker.gcs_client))


def _autoscaler(gcs) -> str | None:
    """The autoscaler of the cluster whose GCS client is `gcs`: "v2", "v1", or None (none runs).

    v2 sets its key in the GCS. v1 is the monitor every head runs: its status (DEBUG_AUTOSCALING_STATUS,
    what `ray status` reads) maps each node to its node type, which on a head with no autoscaling
    config is the read-only provider's own type for that one node; any other type is a node type
    of a provider that launches nodes.
    """
    import json

    import ray
    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
    from ray.autoscaler._private.util import format_readonly_node_type

    namespace = ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE.encode()
    if gcs.internal_kv_get(ray._raylet.GCS_AUTOSCALER_V2_ENABLED_KEY.encode(), namespace=namespace) == b"1":
        return "v2"
    status = gcs.internal_kv_get(DEBUG_AUTOSCALING_STATUS.encode(), namespace=None)
    report = json.loads(status).get("autoscaler_report") if status else None
    types = (report or {}).get("node_type_mapping") or {}
    # The read-only provider names each node by its id, its "IP" there (use_node_id_as_ip).
    if any(node_type != format_readonly_node_type(ip) for ip, node_type in types.items()):
        return "v1"
    return None


def autoscaler_can_add(bundle: dict[str, float], timeout_s: float = 60.0) -> bool | None:
    """Whether the cluster's v2 autoscaler can bring up a node that holds `bundle`: a cluster resource
    constraint of that one bundle, then the first report the autoscaler computed with it in view
    (infeasible, or not). None where that cannot be asked (autoscaler v1 or none, or no such
    report in `timeout_s`).

    The constraint is withdrawn before returning; a node the autoscaler started for it stays for
    its idle timeout (the run that asked usually needs it).
    """
    from ray._private.worker import global_worker
    from ray.autoscaler.sdk import request_resources
    from ray.core.generated.autoscaler_pb2 import GetClusterStatusReply

    gcs = global_worker.gcs_client
    if _autoscaler(gcs) != "v2":
        return None
    wanted = {key: value for key, value in bundle.items() if value > 0}
    request_resources(bundles=[wanted])  # in the GCS when it returns
    try:
        deadline = time.monotonic() + timeout_s
        asked_at = None  # the version of the cluster state that first holds the constraint
        while time.monotonic() < deadline:
            reply = GetClusterStatusReply()
            reply.ParseFromString(gcs.get_cluster_status(timeout_s=10))
            state = reply.autoscaling_state
            if asked_at is None:
                asked_at = reply.cluster_resource_state.cluster_resource_state_version
            elif state.last_seen_cluster_resource_state_version > asked_at:
                # A report from before (a node pending for an earlier bundle, say) is no answer.
                return not any(
                    dict(request.request.resources_bundle) == wanted
                    for constraint in state.infeasible_cluster_resource_constraints
                    for request in constraint.resource_requests
                )
            time.sleep(0.5)
        return None
    finally:
        request_resources(bundles=[])
