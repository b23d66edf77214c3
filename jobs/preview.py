"""`lightwork preview`: draw what synthetic anomaly tasks do to one image or volume.

    lightwork preview --task NAME|ID|all [...] --input FILE --out PNG [--seed N] [--mask FILE]
                      [--sources FILE ...] [--max-size N]

FILE: .nii/.nii.gz, .png/.jpg/.jpeg or .npy (local or s3://); PNG may be s3:// too. --mask gives
the foreground (hole-filled non-zero voxels; default: the image's own non-zero voxels).
--sources: external images for inter_blend (default: procedural stand-in textures). See
lightwork.synthesis.preview for what the figure shows.
"""

from __future__ import annotations

import sys

from lightwork.data import storage
from lightwork.errors import UserError
from lightwork.jobs.entry import job_parser, positive_int, run_job
from lightwork.synthesis.preview import load_input, preview_rows, render_preview


def main(argv: list[str] | None = None) -> int:
    parser = job_parser("preview", __doc__.split("\n")[0].split(": ", 1)[1])
    parser.add_argument("--task", nargs="+", default=["all"], help="task names, ids 0-4, or all")
    parser.add_argument("--input", required=True, help="image or volume to draw anomalies into")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--seed", type=int, default=0, help="run seed of the sample generators")
    parser.add_argument("--mask", help="foreground mask on the input's grid")
    parser.add_argument("--sources", nargs="+", default=[], help="external images for inter_blend")
    parser.add_argument(
        "--max-size", type=positive_int, help="longest axis after resampling (default 128 in 3D, 256 in 2D)"
    )
    args = parser.parse_args(argv)
    try:
        data = load_input(args.input, args.mask, args.max_size)
        sources = [load_input(source, None, args.max_size) for source in args.sources]
        rows = preview_rows(data, args.task, args.seed, sources)
        storage.write_bytes(args.out, render_preview(rows, data.foreground))
    except (ValueError, FileNotFoundError) as error:
        raise UserError(str(error)) from None
    for row in rows:
        print(f"{row.task_id} {row.name}: label max {row.label.max():.3f}, {int((row.label > 0).sum())} voxels")
    print(f"{args.out}: {len(rows)} tasks on {data.name} {tuple(data.image.shape[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(run_job("preview", main))
