"""`lightwork train`: train every fold model of one or more task splits on Ray Tune.

    lightwork train --config demo|brain|cxr|tiny|FILE.yaml --split 1/4|2/3|3/2|4/1|all \
        --data PREPARED_DATASET --storage RUNS_URI [--name RUN] [--seed N] [--set train.lr=1e-3 ...] \
        [--folds 0,2] [--methods synthetic,autoencoder]

Results: `{storage}/{name}/config.yaml` (the whole resolved config: `--config` that file reproduces
the run) and `folds.json` (see `lightwork.training.runs`). Re-running the same command resumes:
finished folds are skipped, interrupted ones continue from their last checkpoint. `--folds` trains
only the folds at those positions of each split (as `--dry-run` lists them; e.g. one fold to try a
recipe first, the rest later): the run's records add up, other splits' and other jobs' too, and
`evaluate` ensembles the folds that are done. Re-running a name with other data or settings stops
and says what differs, unless `--fresh`. Attaches to a running cluster when RAY_ADDRESS is set
(e.g. inside `ray job submit`). `--methods` trains each method as its own run `{name}-{method}`
(its own config.yaml and folds.json, so every other verb takes it as any run), the folds of all
of them as the trials of one Tune experiment; `lightwork evaluate` with each run's `--models`
puts them side by side in one report.
"""

from __future__ import annotations

import json
import sys

from lightwork.config import PRESETS, load_config
from lightwork.jobs.entry import add_folds, add_methods, add_num_cpus, fold_positions, job_parser, run_job
from lightwork.training.resolve import method_configs, resolve_run


def build_parser():
    parser = job_parser("train", __doc__.split("\n")[0].split(": ", 1)[1])
    parser.add_argument("--config", default="demo", help=f"a preset ({', '.join(PRESETS)}) or a YAML file/URI")
    parser.add_argument("--split", default="1/4", help="1/4, 2/3, 3/2, 4/1, a comma list, or all")
    add_folds(parser)
    add_methods(parser)
    parser.add_argument("--data", help="prepared dataset folder/URI (its manifest.parquet); overrides data.manifest")
    parser.add_argument("--storage", help="where runs are stored (local or s3://); overrides storage_path")
    parser.add_argument("--name", help="run name (default: the config's name); same name = resume")
    parser.add_argument("--seed", type=int, help="run seed (synthetic anomalies, initial weights); overrides seed")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one config field (repeatable)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="delete the results of an earlier run of this name and train again"
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config YAML and exit")
    parser.add_argument("--dry-run", action="store_true", help="plan the trials and their resources, train nothing")
    add_num_cpus(parser)
    parser.add_argument("--verbose", action="store_true", help="show the output of Ray's workers on the console")
    return parser


def run_overrides(args) -> list[str]:
    """`--set` values followed by the dedicated flags (which win; JSON-quoted: a path stays a string)."""
    overrides = list(args.overrides)
    for key, value in (
        ("data.manifest", args.data),
        ("storage_path", args.storage),
        ("name", args.name),
        ("seed", args.seed),
    ):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path, preset = (None, args.config) if args.config in PRESETS else (args.config, None)
    if args.methods:
        configs = method_configs(path, preset, run_overrides(args), args.methods)
    else:
        configs = [load_config(path, preset=preset, overrides=run_overrides(args))]
    folds = fold_positions(args.split, args.folds)
    if args.print_config and not configs[0].data.manifest:  # a preset's description needs no data
        print("---\n".join(config.to_yaml() for config in configs), end="")
        return 0
    # Before Ray starts: a model that does not fit the data, or a cohort too small for the folds, fails here.
    resolved = [resolve_run(config, args.split) for config in configs]
    if args.print_config:
        print("---\n".join(run.config.to_yaml() for run in resolved), end="")
        return 0
    from lightwork.data import storage
    from lightwork.distributed.cluster import connected
    from lightwork.distributed.train import train_runs
    from lightwork.training import runs

    for config in (run.config for run in resolved):
        run = runs.run_uri(config.storage_path, config.name)
        if args.fresh and not args.dry_run:
            storage.remove(run)
        runs.check_saved(config, storage.join(run, runs.CONFIG_FILE))  # before Ray starts
    with connected(args.num_cpus, args.verbose):
        records = train_runs(resolved, dry_run=args.dry_run, folds=folds)
    return 0 if args.dry_run or all(record.status == "done" for run in records for record in run) else 1


if __name__ == "__main__":
    sys.exit(run_job("train", main))
