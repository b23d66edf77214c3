"""The `lightwork` console script forgives: a user's mistake is one line on stderr and exit status
2 (no traceback), `--version` works, every `--help` shows the defaults. None of these starts Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lightwork import __version__
from lightwork.cli import SUBCOMMANDS, main
from lightwork.errors import UserError, failure_message

LIGHTWORK = str(Path(sys.executable).with_name("lightwork"))


def one_line_error(capsys, argv: list[str]) -> str:
    """Run `lightwork ARGV`; assert exit 2 and exactly one line on stderr; return that line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err.strip()


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.batch_size=abc", "train.batch_size: 'abc' is not allowed (an integer >= 1)"),
        ("train.lr=abc", "train.lr: 'abc' is not allowed (a number > 0)"),
        ("train.batch_size=2.5", "train.batch_size: 2.5 is not allowed (an integer >= 1)"),
        ("model.features=8", "model.features: 8 is not allowed (a list of ints each >= 1, at least 2 of them)"),
        ("train.bach_size=2", "unknown key 'bach_size' in train (did you mean 'batch_size'?)"),
        ("resources.num_workers=0", "resources.num_workers: 0 is not allowed (an integer >= 1)"),
        ("resources.min_workers=3", "resources.min_workers: 3 is not allowed (1..resources.num_workers = 1"),
        ("model.spatial_dims=4", "model.spatial_dims: 4 is not allowed (one of 2, 3)"),
        ("train.keep_checkpoint=first", "train.keep_checkpoint: 'first' is not allowed (one of best, last)"),
        ("train.epoch_steps=0", "train.epoch_steps: 0 is not allowed (an integer >= 1"),
        ("lr", "--set 'lr': expected SECTION.FIELD=VALUE"),
    ],
)
def test_every_bad_override_is_one_line_and_exit_2(capsys, tmp_path, override, expected):
    line = one_line_error(capsys, ["train", "--config", "tiny", "--data", str(tmp_path), "--set", override])
    assert line.startswith("lightwork train: ") and expected in line


def test_missing_inputs_are_one_line_and_exit_2(capsys, tmp_path):
    line = one_line_error(capsys, ["train", "--config", str(tmp_path / "nope.yaml")])
    assert f"{tmp_path / 'nope.yaml'}: no such config file" in line
    (tmp_path / "bad.yaml").write_text("preset: huge\n")
    assert "unknown preset 'huge' (choose from brain, brain2d, cxr, demo, tiny)" in one_line_error(
        capsys, ["train", "--config", str(tmp_path / "bad.yaml")]
    )
    assert "no manifest there" in one_line_error(capsys, ["train", "--config", "tiny", "--data", str(tmp_path)])
    assert "no training data: pass --data" in one_line_error(capsys, ["train", "--config", "tiny"])
    evaluate = ["evaluate", "--models", str(tmp_path), "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "r")]
    assert f"{tmp_path / 'absent'}/manifest.parquet: no manifest there" in one_line_error(capsys, evaluate)
    assert "no such folder or prefix" in one_line_error(
        capsys, ["prepare", str(tmp_path / "absent"), str(tmp_path / "out"), "--recipe", "cxr"]
    )
    assert "unknown subcommand 'trian'" in one_line_error(capsys, ["trian"])
    assert "--split 5/0: unknown split(s) ['5/0']" in one_line_error(
        capsys, ["train", "--config", "tiny", "--split", "5/0"]
    )
    assert "--folds 5: no fold at position(s) [5] (1/4: 0-4)" in one_line_error(
        capsys, ["train", "--config", "tiny", "--folds", "5"]
    )
    assert "--folds 1,10: no fold at position(s) [10] (1/4: 0-4, 2/3: 0-9)" in one_line_error(
        capsys, ["train", "--config", "tiny", "--split", "1/4,2/3", "--folds", "1,10"]
    )
    assert "--folds a: expected fold positions as a comma list" in one_line_error(
        capsys, ["train", "--config", "tiny", "--folds", "a"]
    )


def test_argument_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--seed", "x"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "lightwork train: argument --seed: invalid int value: 'x' (see --help)\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--config", "tiny", "--num-cpus", "0"],
        ["pipeline", "--num-cpus", "-2"],
        ["evaluate", "--models", "m", "--data", "d", "--out", "o", "--workers", "0"],
        ["predict", "-i", "x", "-o", "y", "--models", "m", "--workers", "0"],
        ["prepare", "src", "dst", "--recipe", "cxr", "--limit", "0"],
        ["montage", "d", "--out", "m.png", "--max", "0"],
        ["preview", "--task", "all", "--input", "x", "--out", "y", "--max-size", "two"],
    ],
)
def test_counts_below_one_are_refused_by_the_parser(capsys, argv):
    """A count of CPUs, workers, cases or pixels below 1 would start Ray with nothing to run on, or
    draw nothing: refused before anything runs."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    flag, value = argv[-2], argv[-1]
    expected = f"lightwork {argv[0]}: argument {flag}: {value if value != 'two' else repr(value)} is not allowed "
    assert capsys.readouterr().err == expected + "(an integer >= 1) (see --help)\n"


def test_a_failed_cases_message_names_the_file_once():
    where, file = "case7 (/d/case7.npz)", "/d/case7.npz"
    missing = f"{file}: prepared case not found"
    assert failure_message(UserError(missing), where, file) == missing
    # a ValueError that does not name the file gets where it happened; an unexpected error its type too
    assert failure_message(ValueError("UNet: bad shape"), where, file) == f"{where}: UNet: bad shape"
    assert failure_message(RuntimeError("boom"), where, file) == f"{where}: RuntimeError: boom"
    unreadable = "x.nii: not a readable NIfTI file"
    assert failure_message(ValueError(unreadable), "case x") == unreadable  # no file given: the message alone


def test_debug_variable_shows_the_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("LIGHTWORK_DEBUG", "1")
    with pytest.raises(UserError, match="train.lr: 'abc'"):
        main(["train", "--config", "tiny", "--data", str(tmp_path), "--set", "train.lr=abc"])


def test_version_and_help_show_defaults(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lightwork {__version__}"
    # prepare's options default to its recipe's values; export's --split to the run's only split
    for name in set(SUBCOMMANDS) - {"prepare", "export"}:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "(default:" in capsys.readouterr().out, name
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "(default: 1/4)" in out and "(default: demo)" in out and "(default: None)" not in out


def test_the_console_script_itself():
    """The installed `lightwork` script: --version, and a bad value with no traceback."""
    version = subprocess.run([LIGHTWORK, "--version"], capture_output=True, text=True, timeout=60)
    assert (version.returncode, version.stdout.strip()) == (0, f"lightwork {__version__}")
    bad = subprocess.run(
        [LIGHTWORK, "train", "--config", "tiny", "--set", "train.batch_size=abc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == "lightwork train: train.batch_size: 'abc' is not allowed (an integer >= 1)\n"


def test_print_config_of_a_preset_needs_no_data(capsys):
    assert main(["train", "--config", "tiny", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "manifest: ''" in out and "flip_left_right: 0.0" in out


def test_a_cohort_too_small_for_the_folds_is_one_line_before_ray(capsys, tmp_path):
    """Two prepared healthy cases fill folds 0 and 2 of five; the 1/4 split's models need all five."""
    import numpy as np

    from lightwork.data.cases import PreparedCase, save_case
    from lightwork.data.manifest import contiguous_folds, write_manifest

    rows = []
    folds = contiguous_folds(["a", "b"])
    for case_id in ("a", "b"):
        uri = str(tmp_path / "cases" / f"{case_id}.npz")
        save_case(uri, PreparedCase(case_id, np.ones((1, 16, 16, 16), np.float32), np.ones((16, 16, 16), bool)))
        rows.append(
            {
                "case_id": case_id,
                "array_uri": uri,
                "checksum": case_id,
                "shape": [16, 16, 16],
                "recipe": "brain",
                "recipe_options": "{}",
                "fold": folds[case_id],
                "has_lesion": False,
                "status": "ok",
            }
        )
    write_manifest(str(tmp_path), rows)
    line = one_line_error(capsys, ["train", "--config", "tiny", "--data", str(tmp_path), "--storage", str(tmp_path)])
    assert line.endswith(
        f"{tmp_path}: 2 healthy cases fill folds 0, 2 of 5, but the models of --split 1/4 train "
        "or validate on folds 1, 3, 4 too: prepare at least 5 healthy cases (one per fold)"
    )
    assert "Ray" not in capsys.readouterr().out
