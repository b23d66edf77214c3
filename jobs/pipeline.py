"""`lightwork pipeline`: prepare -> train every fold model -> ensemble and score, in one Ray job.

With no `--data`, the job runs on the embedded default: a cohort of brain-like volumes generated
by `lightwork.data.phantom` (healthy training cases, test cases with lesion-like anomalies made by
a mechanism that none of the five training tasks uses). It ends by printing where the report is.

Locally:            lightwork pipeline
On a Ray cluster:   ray job submit --working-dir . -- python jobs/pipeline.py --storage s3://bucket/runs ...
(with `ray job submit`, give --storage as s3:// or an absolute path: the job runs in a temporary
copy of the working dir, where a relative path would vanish with it)
"""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightwork pipeline",
        description="prepare, train every fold model and evaluate the ensemble; "
        "with no --data, on a generated demo cohort",
    )
    parser.add_argument("--config", default=None,
                        help="a preset name (demo, brain, cxr) or a YAML config file; default: demo without --data, "
                        "else the --recipe preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config field (repeatable), e.g. --set train.max_steps=200")
    parser.add_argument("--data", default=None,
                        help="folder or s3:// prefix of healthy training cases (default: generate the demo cohort)")
    parser.add_argument("--test-data", default=None,
                        help="folder or s3:// prefix of test cases with lesion masks (default: the demo cohort's)")
    parser.add_argument("--recipe", choices=["brain", "cxr"], default="brain",
                        help="preprocessing recipe of the data (and the demo cohort's kind)")
    parser.add_argument("--split", default="1/4", help="task split(s) to train: 1/4, 2/3, 3/2, 4/1, a list, or all")
    parser.add_argument("--storage", default="runs",
                        help="local folder or s3:// prefix for prepared data, checkpoints and the report")
    parser.add_argument("--name", default=None, help="run name (default: from the config and split); "
                        "re-running with the same name resumes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run (and of the demo cohort)")
    parser.add_argument("--until", choices=["generate", "prepare", "train", "evaluate"], default="evaluate",
                        help="stop after this step (e.g. `--until generate` writes only the demo cohort)")
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="logical CPUs of the local Ray instance when not attached to a cluster")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.test_data is not None and args.data is None:
        build_parser().error("--test-data needs --data (without --data the demo cohort brings its own test cases)")
    from lightwork.data import storage
    from lightwork.distributed.pipeline import PipelineRequest, run_pipeline

    # A submitted job runs in a temporary copy of the working dir: anchor local paths now.
    output = args.storage if storage.is_remote(args.storage) else os.path.abspath(args.storage)

    request = PipelineRequest(
        config=args.config, overrides=tuple(args.overrides), data=args.data, test_data=args.test_data,
        recipe=args.recipe, split=args.split, storage=output, name=args.name, seed=args.seed,
        num_cpus=args.num_cpus, until=args.until,
    )
    result = run_pipeline(request)
    print(f"{'report' if args.until == 'evaluate' else args.until + ' output'}: {result.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
