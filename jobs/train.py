"""`lightwork train`: train every fold model of one or more task splits on Ray Tune.

    lightwork train --config demo|brain|cxr|tiny|FILE.yaml --split 1/4|2/3|3/2|4/1|all \
        --data PREPARED_DATASET --storage RUNS_URI [--name RUN] [--seed N] [--set train.lr=1e-3 ...]

Results: `{storage}/{name}/config.yaml` and `folds.json` (see `lightwork.training.runs`). Re-running
the same command resumes: finished folds are skipped, interrupted ones continue from their last
checkpoint. Attaches to a running cluster when RAY_ADDRESS is set (e.g. inside `ray job submit`).
"""

from __future__ import annotations

import argparse
import os
import sys

from lightwork.config import PRESETS, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lightwork train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="demo", help=f"a preset ({', '.join(PRESETS)}) or a YAML file/URI")
    parser.add_argument("--split", default="1/4", help="1/4, 2/3, 3/2, 4/1, a comma list, or all")
    parser.add_argument("--data", help="prepared dataset folder/URI (its manifest.parquet); overrides data.manifest")
    parser.add_argument("--storage", help="where runs are stored (local or s3://); overrides storage_path")
    parser.add_argument("--name", help="run name (default: the config's name); same name = resume")
    parser.add_argument("--seed", type=int, default=0, help="run seed of the synthetic anomalies")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the fold plan and the resource plan, then exit without training")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one config field (repeatable)")
    args = parser.parse_args(argv)
    overrides = list(args.overrides)
    for key, value in (("data.manifest", args.data), ("storage_path", args.storage), ("name", args.name)):
        if value:
            overrides.append(f"{key}={value}")
    if args.config in PRESETS:
        config = load_config(preset=args.config, overrides=overrides)
    else:
        config = load_config(args.config, overrides=overrides)
    if not config.data.manifest:
        parser.error("no training data: pass --data or set data.manifest")

    import ray

    from lightwork.distributed.train import train_splits

    started = not ray.is_initialized()
    if started:
        ray.init(address=os.environ.get("RAY_ADDRESS"))
    try:
        records = train_splits(config, args.split, seed=args.seed, dry_run=args.dry_run)
    finally:
        if started:
            ray.shutdown()
    return 0 if args.dry_run or all(record.status == "done" for record in records) else 1


if __name__ == "__main__":
    sys.exit(main())
