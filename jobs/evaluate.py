"""`lightwork evaluate --models RUN --data MANIFEST --out REPORT_DIR`: predict with every fold model
of a training run (Ray Data), score per fold, per split ensemble and baselines, write the report."""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lightwork evaluate", description=__doc__)
    parser.add_argument("--models", required=True, help="training run folder/URI holding folds.json")
    parser.add_argument("--data", required=True, help="prepared test dataset folder or manifest.parquet URI")
    parser.add_argument("--out", required=True, help="report folder (local path)")
    parser.add_argument("--predictions", help="where predictions are stored (default: OUT/predictions)")
    parser.add_argument("--foreground-only", action="store_true", help="score foreground voxels only")
    parser.add_argument("--dice-threshold", type=float, default=None,
                        help="score threshold chosen on synthetic validation data; default: the mean of the folds' "
                             "val_dice_threshold in folds.json when all have one, else only the oracle Dice is given")
    parser.add_argument("--actors", type=int, default=1, help="inference actors")
    parser.add_argument("--no-baselines", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lightwork.distributed.pipeline import connect
    from lightwork.distributed.predict import evaluate_run

    connect()
    return evaluate_run(args.models, args.data, args.out, predictions_uri=args.predictions,
                        foreground_only=args.foreground_only, dice_threshold=args.dice_threshold,
                        actors=args.actors, with_baselines=not args.no_baselines)


if __name__ == "__main__":
    sys.exit(main())
