"""`lightwork pipeline`: prepare -> train every fold model -> ensemble and score, in one Ray job.

With no `--data`, the job runs on the embedded default: a cohort of brain-like volumes generated
by `lightwork.demo` (healthy training cases, test cases with lesion-like anomalies made by
a mechanism that none of the five training tasks uses). It ends by printing where the report is.

Locally:            lightwork pipeline
On a Ray cluster:   ray job submit --working-dir . -- python jobs/pipeline.py --storage s3://bucket/runs ...
(with `ray job submit`, give --storage as s3:// or an absolute path: the job runs in a temporary
copy of the working dir, where a relative path would vanish with it)
Methods side by side: lightwork pipeline --methods synthetic,autoencoder (a run per method, one report)
"""

from __future__ import annotations

import sys

from lightwork.config import PRESETS, load_config
from lightwork.jobs.entry import add_folds, add_methods, add_num_cpus, fold_positions, job_parser, run_job
from lightwork.training.resolve import method_configs


def build_parser():
    parser = job_parser(
        "pipeline",
        "prepare, train every fold model and evaluate the ensemble; with no --data, on a generated demo cohort",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="a preset name (demo, brain, cxr) or a YAML config file; default: demo without --data, "
        "else the --recipe preset",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config field (repeatable), e.g. --set train.max_steps=200",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="folder or s3:// prefix of healthy training cases (default: generate the demo cohort)",
    )
    parser.add_argument(
        "--test-data",
        default=None,
        help="folder or s3:// prefix of test cases with lesion masks (default: the demo cohort's)",
    )
    parser.add_argument(
        "--recipe",
        choices=["brain", "cxr"],
        default="brain",
        help="preprocessing recipe of the data (and the demo cohort's kind)",
    )
    parser.add_argument("--split", default="1/4", help="task split(s) to train: 1/4, 2/3, 3/2, 4/1, a list, or all")
    add_folds(parser)
    add_methods(parser)
    parser.add_argument(
        "--storage", default="runs", help="local folder or s3:// prefix for prepared data, checkpoints and the report"
    )
    parser.add_argument(
        "--name",
        default=None,
        help="run name (default: from the config, split and seed); re-running with the same name resumes",
    )
    parser.add_argument("--seed", type=int, help="seed of the run and of the demo cohort; overrides the config's seed")
    parser.add_argument(
        "--until",
        choices=["generate", "prepare", "train", "evaluate"],
        default="evaluate",
        help="stop after this step (e.g. `--until generate` writes only the demo cohort)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="generate and prepare the data, then plan the trials and stop"
    )
    parser.add_argument(
        "--fresh", action="store_true", help="delete the results of an earlier run of this name and start again"
    )
    add_num_cpus(parser)
    parser.add_argument("--verbose", action="store_true", help="show the output of Ray's workers on the console")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.test_data is not None and args.data is None:
        parser.error("--test-data needs --data (without --data the demo cohort brings its own test cases)")
    folds = fold_positions(args.split, args.folds)
    from lightwork.data import storage
    from lightwork.distributed.pipeline import PipelineRequest, default_run_name, run_pipeline

    config_name = args.config or ("demo" if args.data is None else args.recipe)
    path, preset = (None, config_name) if config_name in PRESETS else (config_name, None)
    overrides = [*args.overrides, *([] if args.seed is None else [f"seed={args.seed}"])]
    methods = method_configs(path, preset, overrides, args.methods) if args.methods else []
    config = methods[0] if methods else load_config(path, preset=preset, overrides=overrides)
    data, test_data = (None if uri is None else storage.normalise(uri) for uri in (args.data, args.test_data))
    name = args.name or default_run_name(
        "demo" if data is None else args.recipe, args.config or args.recipe, args.split, config.seed
    )
    request = PipelineRequest(
        config=config,
        methods=tuple(methods),
        data=data,
        test_data=test_data,
        recipe=args.recipe,
        split=args.split,
        folds=None if folds is None else tuple(folds),
        run=storage.join(storage.normalise(args.storage), name),
        num_cpus=args.num_cpus,
        until=args.until,
        dry_run=args.dry_run,
        fresh=args.fresh,
        verbose=args.verbose,
    )
    result = run_pipeline(request)
    if result.failure:
        print(f"lightwork pipeline: {result.failure}", file=sys.stderr)
        return 1
    if args.dry_run or args.until != "evaluate":  # evaluate has printed where its report is
        print(f"{'dry run' if args.dry_run else f'{args.until} output'}: {result.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_job("pipeline", main))
