"""Trial resource planning: declared per-trial needs against fixed and autoscaling cluster shapes,
GPUs by default where the cluster has or can get them, clear failures naming the field."""

import time

import pytest

from lightwork.config import load_config
from lightwork.distributed.resources import ClusterShape, NodeType, plan_synthesis, plan_trials
from lightwork.errors import UserError


def resources(*overrides, preset="tiny"):
    return load_config(preset=preset, overrides=[f"resources.{item}" for item in overrides]).resources


def fixed(*nodes):
    return ClusterShape(alive=tuple(NodeType(f"n{i}", res, count) for i, (res, count) in enumerate(nodes)))


# The shipped k8s/rayjob.yaml: a head with 0 CPUs, one 16-CPU synthesis pod up (max 8), GPU group at 0 (max 8).
SHIPPED = ClusterShape(
    alive=(NodeType("head", {"CPU": 0.0}, 1), NodeType("alive1", {"CPU": 16.0}, 1)),
    node_types=(NodeType("cpu-synthesis", {"CPU": 16.0}, 8), NodeType("gpu-training", {"CPU": 4.0, "GPU": 1.0}, 8)),
)


def test_fixed_cpu_cluster_runs_what_fits_and_shares_the_rest_for_data():
    plan = plan_trials(5, resources("cpus_per_worker=1", "data_cpus_per_trial=1.0"), fixed(({"CPU": 8}, 1)))
    assert plan.gpus_per_worker == 0 and plan.worker_bundle == {"CPU": 1}
    assert plan.max_concurrent_trials == 4 and not plan.autoscaling and plan.request == ()
    assert plan.cpus_for_data == pytest.approx((8 - 4 * 1.01) / 4)


def test_a_fixed_gpu_cluster_trains_on_gpus_by_default_one_trial_per_gpu():
    plan = plan_trials(10, resources("cpus_per_worker=2"), fixed(({"CPU": 16, "GPU": 4}, 1)))
    assert plan.gpus_per_worker == 1 and plan.max_concurrent_trials == 4
    shared = plan_trials(10, resources("cpus_per_worker=1", "gpus_per_worker=0.5"), fixed(({"CPU": 32, "GPU": 4}, 1)))
    assert shared.max_concurrent_trials == 8  # declared half a GPU each: two per GPU


def test_the_shipped_autoscaling_cluster_asks_for_gpus_and_cpu_pods():
    """The issue's case: the snapshot says {"CPU": 16}; the node types say GPUs can be had."""
    plan = plan_trials(5, resources("cpus_per_worker=4", "data_cpus_per_trial=7", preset="brain"), SHIPPED)
    assert plan.autoscaling and plan.gpus_per_worker == 1
    assert plan.max_concurrent_trials == 5  # the GPU group may grow to 8: every trial at once
    assert plan.cpus_for_data == 7  # declared, not what the snapshot's one pod leaves
    gpu_bundles = [bundle for bundle in plan.request if "GPU" in bundle]
    assert gpu_bundles == [{"CPU": 4, "GPU": 1}] * 5
    data_cpus = sum(bundle["CPU"] for bundle in plan.request if "GPU" not in bundle)
    assert data_cpus == pytest.approx(5 * (7 + 0.01))  # synthesis pools, read tasks and drivers
    assert plan.pool.tasks == 7
    assert any("requested from the autoscaler: 45 bundles" in line for line in plan.lines())


def test_the_data_budget_is_the_clusters_not_the_gpu_nodes():
    shape = fixed(({"CPU": 0}, 1), ({"CPU": 16}, 1), ({"CPU": 4, "GPU": 1}, 1))
    plan = plan_trials(5, resources("cpus_per_worker=4"), shape)
    assert plan.max_concurrent_trials == 1  # one GPU node holds one worker
    assert plan.cpus_for_data == pytest.approx(20 - 4.01)  # the synthesis pod's CPUs count


def test_ddp_and_elastic_workers():
    plan = plan_trials(5, resources("num_workers=4", "min_workers=2"), fixed(({"CPU": 32, "GPU": 8}, 1)))
    assert plan.num_workers == (2, 4) and plan.min_workers == 2 and plan.gpus_per_worker == 1
    assert plan.max_concurrent_trials == 4  # 8 GPUs / 2 workers at least
    capped = plan_trials(2, resources("num_workers=4", "max_concurrent_trials=1"), fixed(({"CPU": 32, "GPU": 8}, 1)))
    assert capped.num_workers == 4 and capped.max_concurrent_trials == 1


def test_what_no_node_can_hold_is_one_clear_error_naming_the_field():
    with pytest.raises(UserError, match=r"resources.gpus_per_worker: one Train worker needs \{CPU: 1, GPU: 1\}"):
        plan_trials(1, resources("gpus_per_worker=1"), fixed(({"CPU": 8}, 1)))
    with pytest.raises(UserError, match=r"resources.cpus_per_worker: .*that the autoscaler can add"):
        plan_trials(1, resources("cpus_per_worker=32"), SHIPPED)
    with pytest.raises(UserError, match="one trial needs 5 CPUs .* but the cluster has 4"):
        plan_trials(5, resources("cpus_per_worker=4"), fixed(({"CPU": 4}, 1)))


def test_synthesis_pool_fits_the_budget():
    assert plan_synthesis(3.0, tasks=2).cpus_per_task == pytest.approx(2.94 / 2)
    big = plan_synthesis(15.99)
    assert big.tasks == 16 and big.tasks * big.cpus_per_task <= 15.99
    with pytest.raises(UserError, match="left for synthesis"):
        plan_synthesis(0.2)


HEAD_ONLY_V2 = ClusterShape(alive=(NodeType("head", {"CPU": 1.0}, 1),), autoscaler="v2")


def test_an_autoscaler_that_does_not_report_node_types_is_asked():
    """Ray 2.60's autoscalers report no node types: whether a bundle can be had is the autoscaler's answer."""
    asked = []

    def gpu_nodes_exist(bundle):
        asked.append(bundle)
        return bundle.get("GPU", 0) <= 1 and bundle.get("CPU", 0) <= 2

    plan = plan_trials(5, resources(), HEAD_ONLY_V2, can_add=gpu_nodes_exist)
    assert plan.gpus_per_worker == 1 and asked[0] == {"CPU": 1, "GPU": 1}
    assert plan.autoscaling and plan.max_concurrent_trials == 5 and plan.cpus_for_data == 1.0
    assert plan.request == ()  # an unbounded request could be infeasible as a whole: the trials ask as they wait
    with pytest.raises(ValueError, match=r"resources.cpus_per_worker: one Train worker needs \{CPU: 4\} on one node"):
        plan_trials(5, resources("cpus_per_worker=4"), HEAD_ONLY_V2, can_add=gpu_nodes_exist)
    cpu_only = plan_trials(5, resources(), HEAD_ONLY_V2, can_add=lambda bundle: "GPU" not in bundle)
    assert cpu_only.gpus_per_worker == 0
    with pytest.raises(ValueError, match="resources.gpus_per_worker"):
        plan_trials(5, resources("gpus_per_worker=1"), HEAD_ONLY_V2, can_add=lambda bundle: "GPU" not in bundle)
    # The same head with no autoscaler: planned as it stands.
    fixed_head = ClusterShape(alive=HEAD_ONLY_V2.alive)
    small = ("cpus_per_worker=0.5", "data_cpus_per_trial=0.5")
    plan = plan_trials(5, resources(*small), fixed_head)
    assert plan.gpus_per_worker == 0 and not plan.autoscaling and plan.max_concurrent_trials == 1
    with pytest.raises(ValueError, match="resources.gpus_per_worker"):
        plan_trials(5, resources(*small, "gpus_per_worker=1"), fixed_head)


def test_autoscaler_v1_cannot_be_asked_so_the_declared_trials_all_wait_for_nodes_and_the_plan_says_so():
    """What `autoscaler_can_add` answers on v1 (None): the declaration is trusted, never refused."""
    head_v1 = ClusterShape(alive=HEAD_ONLY_V2.alive, autoscaler="v1")
    plan = plan_trials(3, resources("gpus_per_worker=1"), head_v1)
    assert plan.autoscaling and plan.worker_bundle == {"CPU": 1, "GPU": 1}
    assert plan.max_concurrent_trials == 3 and plan.request == ()  # every trial waits as PENDING: its demand
    assert plan.unchecked == (
        "autoscaler v1: what it can add cannot be asked; the run trusts the declared resources and waits for nodes"
    )
    assert plan.unchecked not in plan.lines()  # printed once, by the run, dry or not
    cpu = plan_trials(3, resources(), head_v1)  # GPUs it may add are not assumed
    assert cpu.gpus_per_worker == 0 and "CPU training unless resources.gpus_per_worker is declared" in cpu.unchecked
    gpu_alive = ClusterShape(alive=(NodeType("gpu", {"CPU": 2.0, "GPU": 1.0}, 1),), autoscaler="v1")
    assert plan_trials(3, resources(), gpu_alive).unchecked is None  # nothing needed asking


def test_a_plain_head_runs_no_autoscaler(ray_session):
    """Every head runs autoscaler v1's monitor; without a node provider of its own it is no autoscaler."""
    from lightwork.distributed.resources import cluster_shape

    gcs = ray_session._private.worker.global_worker.gcs_client
    deadline = time.monotonic() + 60
    while b"autoscaler_report" not in (gcs.internal_kv_get(b"__autoscaling_status", namespace=None) or b""):
        assert time.monotonic() < deadline, "the head's monitor wrote no status"
        time.sleep(0.5)
    assert cluster_shape().autoscaler is None
