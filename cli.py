"""The `lightwork` console script: one subcommand per entry point in `lightwork.jobs`.

Each subcommand is a module `lightwork.jobs.<name>` with a `main(argv: list[str] | None) -> int`;
the same module runs as a Ray job entry point (`python jobs/<name>.py ...`).
"""

from __future__ import annotations

import importlib
import sys

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


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help"} or args[0] not in SUBCOMMANDS:
        width = max(map(len, SUBCOMMANDS))
        lines = [f"  {name:<{width}}  {text}" for name, text in SUBCOMMANDS.items()]
        print("usage: lightwork SUBCOMMAND [options]\n\nsubcommands:\n" + "\n".join(lines))
        return 0 if args and args[0] in {"-h", "--help"} else 2
    module = importlib.import_module(f"lightwork.jobs.{args[0]}")
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
