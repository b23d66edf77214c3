"""What every job entry point shares: its argument parser, the argparse types of counts, and how a
user's mistake becomes one line.

A job is a module `lightwork.jobs.<name>` with `main(argv: list[str] | None) -> int`; the
`lightwork` console script dispatches to it, and `python jobs/<name>.py ...` (a Ray job entry
point) runs it directly, both through `run_job`. `run_job` is the one place where a
`lightwork.errors.UserError` becomes one line on stderr and exit status 2; `LIGHTWORK_DEBUG=1`
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Callable

from lightwork.errors import UserError


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
    """argparse type of a count (CPUs, workers, cases, pixels): an integer >= 1."""
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


def method_names(text: str) -> list[str]:
    """argparse type of `--methods`: a comma list of distinct method names (config.METHODS)."""
    from lightwork.config import METHODS

    names = [name.strip() for name in text.split(",")]
    for name in names:
        if name not in METHODS:
            raise argparse.ArgumentTypeError(f"{name!r} is not a method (one of {', '.join(METHODS)})")
    if len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"{text!r} names a method twice")
    return names


def add_methods(parser: argparse.ArgumentParser) -> None:
    """The `--methods` option of a job that trains: an ablation across methods."""
    parser.add_argument(
        "--methods",
        type=method_names,
        help="train each of these methods (comma list, e.g. synthetic,autoencoder) as its own run "
        "NAME-METHOD, all their folds in one Tune experiment; overrides method.name",
    )


def add_folds(parser: argparse.ArgumentParser) -> None:
    """The `--folds` option of a job that trains the folds of `--split`."""
    parser.add_argument(
        "--folds", help="train only the folds at these positions of each split (0-based, comma list; default all)"
    )


def fold_positions(split_spec: str, folds_spec: str | None) -> list[int] | None:
    """The fold positions of `--folds` (None: every fold), checked with `--split` before Ray
    starts; raises UserError naming the option at fault."""
    from lightwork.training.folds import parse_folds, parse_splits, plan_split, select_folds

    try:
        splits = parse_splits(split_spec)
    except ValueError as error:
        raise UserError(f"--split {split_spec}: {error}") from None
    try:
        folds = None if folds_spec is None else parse_folds(folds_spec)
        select_folds([plan for split in splits for plan in plan_split(split)], folds)
    except ValueError as error:
        raise UserError(f"--folds {folds_spec}: {error}") from None
    return folds


def job_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of job `name`: its defaults shown in `--help`, one-line errors."""
    return _OneLineParser(prog=f"lightwork {name}", description=description, formatter_class=_ShowDefaults)


def run_job(name: str, main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Job `name`'s `main(argv)` as an exit status: its own, or 2 with one line on stderr for a
    `UserError`. `argv` None: the script's own arguments."""
    try:
        return int(main(sys.argv[1:] if argv is None else argv) or 0)
    except UserError as error:
        if os.environ.get("LIGHTWORK_DEBUG") == "1":
            raise
        print(f"lightwork {name}: {error}", file=sys.stderr)
        return 2
