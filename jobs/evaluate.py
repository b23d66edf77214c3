"""`lightwork evaluate --models RUN --data MANIFEST --out REPORT_DIR`: predict with every fold model
of a training run (Ray Data), score per fold, per split ensemble and baselines, write the report;
with several --models (e.g. the runs of `lightwork train --methods`), one report with their
ensembles side by side beside the baselines."""

from __future__ import annotations

import sys

from lightwork.jobs.entry import add_num_cpus, job_parser, positive_int, run_job


def build_parser():
    parser = job_parser("evaluate", __doc__.split(": ", 1)[1])
    parser.add_argument(
        "--models",
        required=True,
        action="append",
        help="training run folder/URI holding folds.json; repeat it to compare runs in one report",
    )
    parser.add_argument("--data", required=True, help="prepared test dataset folder or manifest.parquet URI")
    parser.add_argument("--out", required=True, help="report folder (local path)")
    parser.add_argument("--predictions", help="where predictions are stored (default: OUT/predictions)")
    parser.add_argument(
        "--dice-threshold",
        type=float,
        default=None,
        help="score threshold chosen on synthetic validation data; default: the mean of the folds' "
        "val_dice_threshold in folds.json when all have one, else only the oracle Dice is given",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="inference processes at once (each loads the models once)",
    )
    parser.add_argument("--no-baselines", action="store_true")
    add_num_cpus(parser)
    parser.add_argument("--verbose", action="store_true", help="show the output of Ray's workers on the console")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lightwork.data.storage import normalise
    from lightwork.distributed.evaluate import evaluate_run

    predictions = normalise(args.predictions) if args.predictions else None
    return evaluate_run(
        [normalise(models) for models in args.models],
        normalise(args.data),
        normalise(args.out),
        predictions_uri=predictions,
        dice_threshold=args.dice_threshold,
        workers=args.workers,
        with_baselines=not args.no_baselines,
        num_cpus=args.num_cpus,
        verbose=args.verbose,
    )


if __name__ == "__main__":
    sys.exit(run_job("evaluate", main))
