"""`lightwork export RUN --split 1/4 --out model.lwpkg`: one split's fold models, recipe and threshold
in one file that `lightwork predict --models model.lwpkg` needs nothing else to use."""

from __future__ import annotations

import sys

from lightwork.jobs.entry import job_parser, run_job


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("export", __doc__.split("\n")[0])
    parser.add_argument("run", help="training run folder/URI (config.yaml + folds.json)")
    parser.add_argument("--split", default=None, help="task split to export (needed when the run holds several)")
    parser.add_argument("--out", required=True, help="package file to write (local or s3://, ending in .lwpkg)")
    args = parser.parse_args(argv)

    from lightwork.data import storage
    from lightwork.inference.package import export_package

    ensemble = export_package(storage.normalise(args.run), args.split, storage.normalise(args.out))
    print(
        f"{args.out}: split {ensemble.split}, {len(ensemble.names)} fold models, recipe {ensemble.recipe_name}, "
        f"threshold {ensemble.threshold:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_job("export", main))
