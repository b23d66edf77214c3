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
    import ray

    from lightwork.data import storage
    from lightwork.data.manifest import read_manifest, usable
    from lightwork.distributed.predict import predict_cases, prediction_table, run_fold_models
    from lightwork.evaluation.evaluate import evaluate_predictions

    cases = usable(read_manifest(args.data))
    if not cases:
        print(f"{args.data}: no usable cases", file=sys.stderr)
        return 1
    models = run_fold_models(args.models)
    prediction_uri = args.predictions or storage.join(args.out, "predictions")
    if not ray.is_initialized():
        ray.init()
    rows = predict_cases(models, cases, prediction_uri, actors=args.actors)
    uris, errors = prediction_table(rows)
    for error in errors:
        print(f"prediction failed: {error}", file=sys.stderr)
    failed = {row["case_id"] for row in rows if row["error"]}
    scored = [case for case in cases if case["case_id"] not in failed]
    notes = [f"Not scored, prediction failed: {error}" for error in errors]
    dice_threshold = args.dice_threshold
    recorded = [model.val_dice_threshold for model in models]
    if dice_threshold is None and recorded and None not in recorded:
        dice_threshold = sum(recorded) / len(recorded)
        notes.append(f"Dice threshold {dice_threshold:.4f}: mean of the fold models' thresholds maximising Dice on "
                     "their synthetic validation samples (held-out tasks).")
    elif dice_threshold is not None:
        notes.append(f"Dice threshold {dice_threshold:.4f}: given on the command line.")
    else:
        notes.append("No validation Dice threshold recorded by training: only the oracle Dice is shown.")
    metrics = evaluate_predictions(scored, uris, args.out, args.foreground_only, dice_threshold,
                                   not args.no_baselines, notes=notes)
    for split, entry in metrics["splits"].items():
        ensemble = entry.get("ensemble", {})
        print(f"{split} ensemble: pixel AP {ensemble.get('pixel_ap', float('nan')):.4f} "
              f"AUROC {ensemble.get('pixel_auroc', float('nan')):.4f}")
    print(f"report: {storage.join(args.out, 'report.md')}")
    return 0 if not errors else 2


if __name__ == "__main__":
    sys.exit(main())
