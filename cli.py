"""The `lightwork` console script: one subcommand per entry point in `lightwork.jobs`.

Each subcommand is a module `lightwork.jobs.<name>` with a `main(argv: list[str] | None) -> int`,
run through `lightwork.jobs.entry.run_job` (a user's mistake: one line on stderr, exit status 2);
the same module runs as a Ray job entry point (`python jobs/<name>.py ...`). Only this module
imports `lightwork.jobs`.
"""

from __future__ import annotations

import importlib
import sys

from lightwork import __version__
from lightwork.jobs.entry import run_job

SUBCOMMANDS: dict[str, str] = {
    "preview": "draw what each synthetic anomaly task does to an image or volume",
    "prepare": "preprocess a folder or bucket of cases into arrays and a Parquet manifest",
    "montage": "draw a montage of prepared cases from a manifest",
    "train": "train every fold model of one or more task splits on Ray Tune",
    "evaluate": "ensemble fold models and score them on a test manifest",
    "pipeline": "prepare, train and evaluate in one job (embedded demo data when none is given)",
    "predict": "anomaly maps and scores for new scans with a run's or a package's fold models",
    "export": "write one split of a run as a single .lwpkg package file",
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()]
    return (
        "usage: lightwork [--version] SUBCOMMAND [options]\n\nsubcommands:\n"
        + "\n".join(lines)
        + "\n\n`lightwork SUBCOMMAND --help` shows a subcommand's options and their defaults."
    )


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--version":
        print(f"lightwork {__version__}")
        return 0
    if not args or args[0] in {"-h", "--help"}:
        print(_usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] not in SUBCOMMANDS:
        print(f"lightwork: unknown subcommand {args[0]!r} (choose from {', '.join(SUBCOMMANDS)})", file=sys.stderr)
        return 2
    return run_job(args[0], importlib.import_module(f"lightwork.jobs.{args[0]}").main, args[1:])


if __name__ == "__main__":
    sys.exit(main())
