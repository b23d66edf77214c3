"""`lightwork prepare`: preprocess a folder or bucket of raw cases into arrays and a Parquet manifest.

    lightwork prepare SRC DST --recipe brain|cxr [--modality flair|t1|t2|t1c] [--skull-stripped] [--lesion-labels 1,3,4]
        [--shape 80,112,80] [--spacing 1.0] [--downsample 2] [--size 256] [--limit N]
        [--brain-mask-pattern GLOB] [--lesion-mask-pattern GLOB]

SRC and DST are local folders or s3:// prefixes. Writes DST/cases/<case_id>.npz and
DST/manifest.parquet (see lightwork.data.manifest); the layouts SRC may have are the rules of
lightwork.data.discover. Re-running skips cases whose files and recipe did not change. Failed
cases are listed; the exit status is 1 only when no case could be prepared. Attaches to a
running cluster when RAY_ADDRESS is set, else starts a local one.
"""

from __future__ import annotations

import argparse
import re
import sys

from lightwork.data.recipes import RECIPES, make_recipe
from lightwork.errors import UserError
from lightwork.jobs.entry import add_num_cpus, job_parser, positive_int, run_job


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in re.split(r"[,x]", text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape {text!r}: expected integers like 80,112,80") from None
    if any(n < 1 for n in shape):
        raise argparse.ArgumentTypeError(f"shape {text!r}: sizes must be positive")
    return shape


def parse_labels(text: str) -> tuple[int, ...]:
    """Integers from `text` (the recipe checks that they are positive labels)."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"lesion labels {text!r}: expected integers like 1,3,4") from None


def build_parser():
    parser = job_parser("prepare", __doc__.split("\n")[0].split(": ", 1)[1])
    parser.add_argument("src", help="raw cases: a local folder or s3://bucket/prefix")
    parser.add_argument("dst", help="where prepared arrays and manifest.parquet go (local or s3://)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), required=True)
    parser.add_argument(
        "--modality", help="which image of a case folder to use (flair, t1, t2, t1c; matched to file names)"
    )
    parser.add_argument(
        "--brain-mask-pattern", metavar="GLOB", help="file name of each case's brain mask, e.g. mask.nii.gz"
    )
    parser.add_argument(
        "--lesion-mask-pattern", metavar="GLOB", help="file name of each case's lesion mask, e.g. '*_seg.nii.gz'"
    )
    parser.add_argument(
        "--skull-stripped", action="store_true", help="brain: images are skull-stripped (no brain mask needed)"
    )
    parser.add_argument(
        "--lesion-labels",
        type=parse_labels,
        metavar="L,L,...",
        help="brain: the label values that make the lesion in a multi-class mask (default: every non-zero "
        "value); e.g. 1,3,4 for BraTS's tumour core",
    )
    parser.add_argument("--shape", type=parse_shape, help="brain: output grid (recipe default 80,112,80)")
    parser.add_argument(
        "--spacing", type=float, help="brain: resampling spacing in mm before downsampling (recipe default 1.0)"
    )
    parser.add_argument(
        "--downsample", type=positive_int, help="brain: integer downsampling factor after cropping (recipe default 2)"
    )
    parser.add_argument("--size", type=positive_int, help="cxr: output side in pixels (recipe default 256)")
    parser.add_argument("--limit", type=positive_int, help="prepare only the first N cases (sorted by id)")
    add_num_cpus(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="show the output of Ray's workers on the console")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = {
        "skull_stripped": args.skull_stripped or None,
        "lesion_labels": args.lesion_labels,
        "shape": args.shape,
        "spacing_mm": args.spacing,
        "downsample": args.downsample,
        "size": args.size,
    }
    try:
        recipe = make_recipe(args.recipe, **options)
    except ValueError as error:
        parser.error(str(error))

    from lightwork.data import storage
    from lightwork.data.discover import MaskPatterns
    from lightwork.distributed.cluster import connected
    from lightwork.distributed.prepare import prepare_dataset

    src, dst = storage.normalise(args.src), storage.normalise(args.dst)
    if not storage.exists(src):
        raise UserError(f"{args.src}: no such folder or prefix")
    with connected(args.num_cpus, args.verbose):
        try:
            summary = prepare_dataset(
                src,
                dst,
                recipe,
                modality=args.modality,
                limit=args.limit,
                progress=not args.no_progress,
                masks=MaskPatterns(args.brain_mask_pattern, args.lesion_mask_pattern),
            )
        except ValueError as error:  # no case found under SRC
            raise UserError(str(error)) from None
    print("\n".join(summary.lines()))
    return 1 if summary.failed and summary.total == len(summary.failed) else 0


if __name__ == "__main__":
    sys.exit(run_job("prepare", main))
