"""`lightwork montage`: draw prepared cases of a manifest with their foreground and lesion contours.

    lightwork montage MANIFEST --out PNG [--max N]

MANIFEST is a prepared dataset folder or its manifest.parquet (local or s3://); PNG may be s3:// too.
"""

from __future__ import annotations

import sys

from lightwork.data.montage import montage
from lightwork.errors import UserError
from lightwork.jobs.entry import job_parser, positive_int, run_job


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("montage", __doc__.split("\n")[0].split(": ", 1)[1])
    parser.add_argument("manifest", help="prepared dataset folder or manifest.parquet")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument(
        "--max", type=positive_int, default=12, help="at most this many cases, evenly spaced over the sorted case list"
    )
    args = parser.parse_args(argv)
    try:
        shown = montage(args.manifest, args.out, args.max)
    except (ValueError, FileNotFoundError) as error:
        raise UserError(str(error)) from None
    print(f"{args.out}: {shown} cases")
    return 0


if __name__ == "__main__":
    sys.exit(run_job("montage", main))
