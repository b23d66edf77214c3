"""Trial resource planning: fractional GPUs, concurrency limits, clear failure when nothing fits."""

import pytest

from lightwork.config import load_config
from lightwork.distributed.train import plan_trial_resources


def config(*overrides):
    return load_config(preset="tiny", overrides=list(overrides))


def test_small_models_share_gpus():
    plan = plan_trial_resources(10, config("resources.cpus_per_worker=2"), {"CPU": 64, "GPU": 4})
    assert plan.gpus_per_worker == pytest.approx(1 / 3)  # 10 trials on 4 GPUs: 3 per GPU
    assert plan.max_concurrent_trials == 10 and plan.num_workers == 1


def test_cpu_bound_concurrency_leaves_room_for_data():
    plan = plan_trial_resources(5, config("resources.cpus_per_worker=1", "resources.data_cpus_per_trial=1.0"), {"CPU": 8})
    assert plan.gpus_per_worker == 0 and plan.max_concurrent_trials == 4  # 8 CPUs / (1 + 1)


def test_data_budget_per_trial_sets_the_concurrency():
    from lightwork.distributed.stream import plan_synthesis

    plan = plan_trial_resources(5, config("resources.cpus_per_worker=0.5", "resources.data_cpus_per_trial=0.4"),
                                {"CPU": 2})
    assert plan.max_concurrent_trials == 2 and plan.cpus_per_worker == 0.5
    assert plan.cpus_for_data == pytest.approx(0.49)  # (2 - 2 x (0.5 + 0.01 trial driver)) / 2
    assert plan_synthesis(plan.cpus_for_data).actors == 1


def test_ddp_and_elastic_workers():
    plan = plan_trial_resources(5, config("resources.num_workers=4", "resources.min_workers=2"), {"CPU": 32, "GPU": 8})
    assert plan.num_workers == (2, 4) and plan.gpus_per_worker == pytest.approx(1 / 3)
    assert plan.max_concurrent_trials == 5
    fixed = plan_trial_resources(2, config("resources.num_workers=4", "resources.max_concurrent_trials=1"),
                                 {"CPU": 32, "GPU": 8})
    assert fixed.num_workers == 4 and fixed.gpus_per_worker == 1 and fixed.max_concurrent_trials == 1


def test_nothing_fits_is_a_clear_error():
    with pytest.raises(ValueError, match="one trial needs 5.0 CPUs"):
        plan_trial_resources(5, config("resources.cpus_per_worker=4"), {"CPU": 2})
    with pytest.raises(ValueError, match="GPU per worker requested"):
        plan_trial_resources(1, config("resources.gpus_per_worker=1"), {"CPU": 8})
