"""The `lightwork` console script: one subcommand per entry point in `lightwork.jobs`.

Each subcommand is a module `lightwork.jobs.<name>` with a `main(argv: list[str] | None) -> int`;
the same module runs as a Ray job entry point (`python jobs/<name>.py ...`, which comes back here).
This is the one place where a user's mistake (`lightwork.errors.UserError`) becomes one line on
stderr and exit status 2; `LIGHTWORK_DEBUG=1` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import typing

from lightwork import __version__
from lightwork.errors import UserError

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


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` text with each option's default, except the empty ones (None, False, [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default == []:
            return action.help or ""
        return super()._get_help_string(action)


class _OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (and exit status 2), not the usage."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """argparse type of a count (CPUs, actors, cases, pixels): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed (an integer >= 1)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed (an integer >= 1)")
    return value


def add_num_cpus(parser: argparse.ArgumentParser) -> None:
    """The `--num-cpus` option of a job that starts a local Ray instance when none is attached."""
    parser.add_argument(
        "--num-cpus", type=positive_int, help="logical CPUs of a local Ray instance (ignored when attached)"
    )


def job_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of subcommand `name`: its defaults shown in `--help`, one-line errors."""
    return _OneLineParser(prog=f"lightwork {name}", description=description, formatter_class=_ShowDefaults)


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
    module = importlib.import_module(f"lightwork.jobs.{args[0]}")
    try:
        return int(module.main(args[1:]) or 0)
    except UserError as error:
        if os.environ.get("LIGHTWORK_DEBUG") == "1":
            raise
        print(f"lightwork {args[0]}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
