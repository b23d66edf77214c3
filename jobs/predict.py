"""`lightwork predict -i INPUT -o OUT --models RUN_OR_PACKAGE [--split 1/4]`: anomaly maps for new scans.

INPUT: a NIfTI file, a DICOM series folder, a PNG/JPEG/DICOM X-ray, a case folder (image beside its
brain mask), a folder or s3:// prefix of such cases. OUT gets CASE.nii.gz + CASE_mask.nii.gz
(volumes) or CASE.png, CASE_overlay.png + CASE_mask.png (2D), and scores.csv / scores.json.
One scan runs in this process; several run through Ray Data (attached when RAY_ADDRESS is set).
"""

from __future__ import annotations

import sys

from lightwork.jobs.entry import job_parser, positive_int, run_job


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("predict", __doc__.split("\n")[0])
    parser.add_argument("-i", "--input", required=True, help="scan, case folder, folder or s3:// prefix of cases")
    parser.add_argument("-o", "--out", required=True, help="output folder (local or s3://)")
    parser.add_argument("--models", required=True, help="training run folder/URI or a .lwpkg package")
    parser.add_argument("--split", default=None, help="task split of the run (needed when it holds several)")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="mask threshold; None: the mean of the folds' validation thresholds",
    )
    parser.add_argument("--modality", default=None, help="which image of a multi-modality case folder (e.g. flair)")
    parser.add_argument("--in-process", action="store_true", help="predict a folder in this process, without Ray")
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="inference processes at once for a folder (each loads the models once)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the output of Ray's workers on the console")
    args = parser.parse_args(argv)

    from lightwork.data import storage
    from lightwork.distributed.predict import predict

    results = predict(
        storage.normalise(args.input),
        storage.normalise(args.out),
        storage.normalise(args.models),
        split=args.split,
        threshold=args.threshold,
        modality=args.modality,
        in_process=args.in_process,
        workers=args.workers,
        verbose=args.verbose,
    )
    failed = [result.row for result in results if result.row["status"] != "ok"]
    for row in failed:
        print(f"failed: {row['error']}", file=sys.stderr)
    print(f"{len(results) - len(failed)} of {len(results)} cases predicted into {args.out} (scores.csv)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_job("predict", main))
