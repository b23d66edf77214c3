"""The main job's steps in order: (demo cohort) -> prepare -> train -> evaluate.

Every step writes under one run folder (local or s3://):

    RUN/config.yaml              the resolved config of the run (reproduces it)
    RUN/demo-data/{healthy,test} the generated cohort, when no data was given
    RUN/prepared/{healthy,test}  prepared arrays and their Parquet manifests
    RUN/train/...                Tune experiment: checkpoints, metrics, TensorBoard events
    RUN/report/                  metrics.json, report.md, curves and montages
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from lightwork.data import phantom, storage


@dataclass(frozen=True)
class PipelineRequest:
    """What `lightwork pipeline` was asked to do (see jobs/pipeline.py for each field's meaning)."""

    config: str | None
    overrides: tuple[str, ...]
    data: str | None
    test_data: str | None
    recipe: str
    split: str
    storage: str
    name: str | None
    seed: int
    num_cpus: int | None
    until: str = "evaluate"


@dataclass(frozen=True)
class PipelineResult:
    """Where the run's outputs are, and how long each step took (seconds).

    `output` is the report (`report.md`) after a full run, else the last step's output folder.
    """

    run: str
    output: str
    seconds: dict[str, float]


def connect(num_cpus: int | None = None) -> bool:
    """Attach to the Ray cluster this process belongs to, or start a local one.

    A process started by `ray job submit`, or given RAY_ADDRESS, attaches with a plain `ray.init()`
    (asking for resources there raises); otherwise a local instance starts with `num_cpus`
    logical CPUs. Returns True when this call started Ray (the caller shuts it down).
    """
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(num_cpus=num_cpus)
    return True


STEPS = ("generate", "prepare", "train", "evaluate")


def generate_cohort(dst_uri: str, kind: str, seed: int, num_healthy: int = 20, num_test: int = 6,
                    shape: tuple[int, ...] | None = None) -> phantom.Cohort:
    """Write the demo cohort with one Ray task per case (same files as `phantom.write_cohort`)."""
    import ray

    write_case = ray.remote(num_cpus=0.5)(phantom.write_cohort_case)
    groups = phantom.cohort_case_ids(kind, num_healthy, num_test)
    ray.get([write_case.remote(dst_uri, group, case_id, kind, seed, shape)
             for group, case_ids in groups.items() for case_id in case_ids])
    return phantom.cohort_at(dst_uri, kind, groups)


def demo_recipe_options(kind: str) -> list[str]:
    """`lightwork prepare` options that keep the demo cohort on its own small grid (the paper's
    80x112x80 / 256x256 grids would make the demo too slow for a laptop): the brain recipe
    resamples to the phantom's spacing and skips the downsampling."""
    if kind == "brain":
        shape = ",".join(map(str, phantom.BRAIN_SHAPE))
        return ["--spacing", str(phantom.BRAIN_SPACING_MM), "--downsample", "1", "--shape", shape]
    return ["--size", str(max(phantom.CHEST_SHAPE))]


def default_run_name(request: PipelineRequest) -> str:
    """A deterministic name, so that re-running the same command resumes the same run."""
    source = "demo" if request.data is None else request.recipe
    return f"{source}-{request.config or request.recipe}-split{request.split.replace('/', '-').replace(',', '_')}-seed{request.seed}"


def run_pipeline(request: PipelineRequest) -> PipelineResult:
    """Run every step of the main job; returns where the report is.

    Each step is the library call behind its own `lightwork` subcommand (prepare, train,
    evaluate), so the pipeline does exactly what the separate commands would do, on one Ray
    cluster, under one run folder.
    """
    if request.until not in STEPS:
        raise ValueError(f"unknown step {request.until!r}: choose from {STEPS}")
    last = STEPS.index(request.until)
    started_ray = connect(request.num_cpus)
    try:
        run = storage.join(request.storage, request.name or default_run_name(request))
        seconds: dict[str, float] = {}
        config = request.config or ("demo" if request.data is None else request.recipe)
        healthy, test = request.data, request.test_data
        if healthy is None:
            clock = time.perf_counter()
            cohort = generate_cohort(storage.join(run, "demo-data"), kind=request.recipe, seed=request.seed)
            healthy, test = cohort.healthy_uri, cohort.test_uri
            seconds["generate"] = time.perf_counter() - clock
            print(f"demo cohort: {len(cohort.healthy_ids)} healthy and {len(cohort.test_ids)} test cases under {healthy}, {test}")
        if last == STEPS.index("generate"):
            return PipelineResult(run, storage.join(run, "demo-data") if request.data is None else healthy, seconds)
        # Imported here: `--until generate` works before the later steps' modules are installed.
        from lightwork.jobs import evaluate, prepare, train

        clock = time.perf_counter()
        prepared_healthy = storage.join(run, "prepared", "healthy")
        recipe = ["--recipe", request.recipe, *(demo_recipe_options(request.recipe) if request.data is None else [])]
        _step("prepare", prepare.main, [healthy, prepared_healthy, *recipe])
        prepared_test = None
        if test is not None:
            prepared_test = storage.join(run, "prepared", "test")
            _step("prepare", prepare.main, [test, prepared_test, *recipe])
        seconds["prepare"] = time.perf_counter() - clock
        if last == STEPS.index("prepare"):
            return PipelineResult(run, storage.join(run, "prepared"), seconds)

        clock = time.perf_counter()
        models = storage.join(run, "train")
        overrides = [item for pair in request.overrides for item in ("--set", pair)]
        # `lightwork train` writes {storage}/{name}/folds.json: the run folder `models`.
        _step("train", train.main, ["--config", config, *overrides, "--split", request.split, "--data", prepared_healthy,
                                     "--storage", run, "--name", "train", "--seed", str(request.seed)])
        seconds["train"] = time.perf_counter() - clock
        if last == STEPS.index("train"):
            return PipelineResult(run, models, seconds)

        report_dir = storage.join(run, "report")
        if prepared_test is None:
            print("no --test-data: trained models are under", models, "(nothing to score)")
            return PipelineResult(run, models, seconds)
        clock = time.perf_counter()
        _step("evaluate", evaluate.main, ["--models", models, "--data", prepared_test, "--out", report_dir])
        seconds["evaluate"] = time.perf_counter() - clock
        print("step seconds: " + ", ".join(f"{step} {value:.0f}" for step, value in seconds.items()))
        return PipelineResult(run, storage.join(report_dir, "report.md"), seconds)
    finally:
        if started_ray:
            import ray

            ray.shutdown()


def _step(name: str, entry, argv: list[str]) -> None:
    """Run one subcommand's `main(argv)`; a non-zero status stops the pipeline with its name."""
    print(f"== {name}: lightwork {name} {' '.join(argv)}", flush=True)
    status = entry(argv)
    if status:
        raise RuntimeError(f"pipeline step `lightwork {name}` failed with status {status}")
