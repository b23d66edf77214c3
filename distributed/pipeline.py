"""The main job's steps in order: (demo cohort) -> prepare -> train -> evaluate.

Every step is the library call behind its own `lightwork` subcommand (`prepare_dataset`,
`train_runs`, `evaluate_run`), on one Ray cluster, under one run folder (local or s3://):

    RUN/demo-data/{healthy,test} the generated cohort, when no data was given
    RUN/prepared/{healthy,test}  prepared arrays and their Parquet manifests
    RUN/train/config.yaml        the resolved config of the training run (reproduces it)
    RUN/train/...                fold records, checkpoints, metrics, TensorBoard events
    RUN/train-{method}/          with methods (`--methods`): a training run per method instead
    RUN/report/                  metrics.json, report.md, curves and montages (methods side by side)
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from lightwork import demo
from lightwork.anomalies.parameters import RECIPE_OF_DIMS
from lightwork.config import RunConfig
from lightwork.data import manifest, storage
from lightwork.errors import UserError
from lightwork.training.folds import parse_splits
from lightwork.training.resolve import resolve_data, resolve_run
from lightwork.training.runs import CONFIG_FILE, check_saved, method_run_name

STEPS = ("generate", "prepare", "train", "evaluate")


@dataclass(frozen=True)
class PipelineRequest:
    """What `lightwork pipeline` was asked to do (see jobs/pipeline.py for each option).

    config: the training config (its seed is the run's and the demo cohort's; the pipeline sets its
    data, storage_path and name). data / test_data: raw case folders or prefixes, None = the demo
    cohort. folds: the positions in each split of the fold models to train (None = all; the
    report ensembles the folds that are done). run: the run folder (absolute or a URI). methods:
    an ablation across methods (`--methods`, `lightwork.training.resolve.method_configs`), a
    training config per method, each trained as its own run RUN/train-{method}, all in one Tune
    experiment, and evaluated side by side in one report; empty: `config` alone, as RUN/train.
    """

    config: RunConfig
    data: str | None
    test_data: str | None
    recipe: str
    split: str
    run: str
    folds: tuple[int, ...] | None = None
    methods: tuple[RunConfig, ...] = ()
    num_cpus: int | None = None
    until: str = "evaluate"
    dry_run: bool = False
    fresh: bool = False
    verbose: bool = False


@dataclass(frozen=True)
class PipelineResult:
    """Where the run's outputs are, and how long each step took (seconds).

    `output` is the report (`report.md`) after a full run, else the last step's output folder;
    `failure` says which step failed and why (None when every step worked).
    """

    run: str
    output: str
    seconds: dict[str, float]
    failure: str | None = None


def generate_cohort(
    dst_uri: str, kind: str, seed: int, num_healthy: int = 20, num_test: int = 6, shape: tuple[int, ...] | None = None
) -> demo.Cohort:
    """Write the demo cohort with one Ray task per case (same files as `demo.write_cohort`)."""
    import ray

    write_case = ray.remote(num_cpus=0.5)(demo.write_cohort_case)
    groups = demo.cohort_case_ids(kind, num_healthy, num_test)
    ray.get(
        [
            write_case.remote(dst_uri, group, case_id, kind, seed, shape)
            for group, case_ids in groups.items()
            for case_id in case_ids
        ]
    )
    return demo.cohort_at(dst_uri, kind, groups)


def demo_recipe_options(kind: str) -> dict:
    """Recipe options that keep the demo cohort on its own small grid (the paper's 80x112x80 /
    256x256 grids would make the demo too slow for a laptop): the brain recipe resamples to the
    demo cohort's spacing and skips the downsampling."""
    if kind == "brain":
        return {"spacing_mm": demo.BRAIN_SPACING_MM, "downsample": 1, "shape": demo.BRAIN_SHAPE}
    return {"size": max(demo.CHEST_SHAPE)}


def default_run_name(source: str, config: str, split: str, seed: int) -> str:
    """A deterministic name, so that re-running the same command resumes the same run."""
    return f"{source}-{config}-split{split.replace('/', '-').replace(',', '_')}-seed{seed}"


def check_request(request: PipelineRequest) -> None:
    """The mistakes that can be found before Ray starts; raises UserError."""
    if request.until not in STEPS:
        raise UserError(f"unknown step {request.until!r}: choose from {', '.join(STEPS)}")
    try:
        parse_splits(request.split)
    except ValueError as error:
        raise UserError(f"--split {request.split}: {error}") from None
    dims, axis = request.config.data_dims, request.config.data.slice_axis
    if RECIPE_OF_DIMS[dims] != request.recipe:
        key = f"data.slice_axis: {axis}" if axis is not None else f"model.spatial_dims: {dims}"
        raise UserError(
            f"{key} does not fit the {request.recipe} recipe's "
            f"{'2' if dims == 3 else '3'}D cases: choose a config of the recipe's kind"
        )
    for group, source in (("healthy", request.data), ("test", request.test_data)):
        if source is None:
            continue
        if not storage.exists(source):
            raise UserError(f"{source}: no such folder or prefix")
        prepared = storage.join(request.run, "prepared", group)
        if storage.exists(manifest.manifest_uri(prepared)) and not request.fresh:
            earlier = {row["source_uri"] for row in manifest.read_manifest(prepared)}
            if any(not uri.startswith(source.rstrip("/") + "/") for uri in earlier):
                raise UserError(
                    f"{prepared}: run {request.run} was prepared from other cases than {source}: "
                    "give another --name, or --fresh to delete its results and start again"
                )
    if request.fresh:
        return
    for config in training_configs(request):
        if storage.exists(manifest.manifest_uri(config.data.manifest)):  # prepared by an earlier run
            check_saved(resolve_data(config), storage.join(request.run, config.name, CONFIG_FILE))


def training_configs(request: PipelineRequest) -> list[RunConfig]:
    """The run's training configs, not yet resolved: trained on RUN/prepared/healthy, results under
    RUN/train, or one per method of `request.methods` under RUN/train-{method}."""
    named = [(config, method_run_name("train", config.method.name)) for config in request.methods]
    data = storage.join(request.run, "prepared", "healthy")
    return [
        dataclasses.replace(
            config, data=dataclasses.replace(config.data, manifest=data), storage_path=request.run, name=name
        )
        for config, name in named or [(request.config, "train")]
    ]


def run_pipeline(request: PipelineRequest) -> PipelineResult:
    """Run every step of the main job up to `request.until`; returns where the outputs are."""
    check_request(request)  # before Ray is even imported
    from lightwork.data.recipes import make_recipe
    from lightwork.distributed.cluster import connected
    from lightwork.distributed.evaluate import evaluate_run
    from lightwork.distributed.prepare import prepare_dataset
    from lightwork.distributed.train import train_runs

    last = STEPS.index(request.until)
    run, seconds = request.run, {}
    if request.fresh and not request.dry_run:
        storage.remove(run)
    with connected(request.num_cpus, request.verbose):
        healthy, test = request.data, request.test_data
        if healthy is None:
            clock = time.perf_counter()
            cohort = generate_cohort(storage.join(run, "demo-data"), kind=request.recipe, seed=request.config.seed)
            healthy, test = cohort.healthy_uri, cohort.test_uri
            seconds["generate"] = time.perf_counter() - clock
            print(
                f"demo cohort: {len(cohort.healthy_ids)} healthy and {len(cohort.test_ids)} test cases under "
                f"{healthy}, {test}"
            )
        if last == STEPS.index("generate"):
            return PipelineResult(run, storage.join(run, "demo-data") if request.data is None else healthy, seconds)

        clock = time.perf_counter()
        recipe = make_recipe(request.recipe, **(demo_recipe_options(request.recipe) if request.data is None else {}))
        prepared = {}
        for group, source in (("healthy", healthy), ("test", test)):
            if source is None:
                continue
            prepared[group] = storage.join(run, "prepared", group)
            summary = prepare_dataset(source, prepared[group], recipe, progress=False)
            print("\n".join(summary.lines()))
            if summary.failed and len(summary.failed) == summary.total:
                return PipelineResult(run, prepared[group], seconds, f"prepare: no case of {source} could be prepared")
        seconds["prepare"] = time.perf_counter() - clock
        if last == STEPS.index("prepare"):
            return PipelineResult(run, storage.join(run, "prepared"), seconds)

        clock = time.perf_counter()
        configs = training_configs(request)
        models = [storage.join(run, config.name) for config in configs]
        resolved = [resolve_run(config, request.split) for config in configs]
        records = train_runs(resolved, dry_run=request.dry_run, folds=request.folds)
        seconds["train"] = time.perf_counter() - clock
        unfinished = [
            record.name if len(configs) == 1 else f"{config.name}/{record.name}"
            for config, run_records in zip(configs, records)
            for record in run_records
            if record.status != "done"
        ]
        models_output = models[0] if len(models) == 1 else run
        if request.dry_run:
            return PipelineResult(run, models_output, seconds)
        if unfinished:
            return PipelineResult(run, models_output, seconds, f"train: folds {', '.join(unfinished)} did not finish")
        if last == STEPS.index("train"):
            return PipelineResult(run, models_output, seconds)

        if "test" not in prepared:
            print("no --test-data: trained models are under", ", ".join(models), "(nothing to score)")
            return PipelineResult(run, models_output, seconds)
        report_dir = storage.join(run, "report")
        clock = time.perf_counter()
        status = evaluate_run(models, prepared["test"], report_dir)
        seconds["evaluate"] = time.perf_counter() - clock
        print("step seconds: " + ", ".join(f"{step} {value:.0f}" for step, value in seconds.items()))
        failure = f"evaluate: exit status {status} (see the report)" if status else None
        return PipelineResult(run, storage.join(report_dir, "report.md"), seconds, failure)
