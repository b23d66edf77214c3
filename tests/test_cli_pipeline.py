"""`lightwork pipeline` drives the library (`prepare_dataset`, `train_splits`), not other
subcommands: a dry run generates and prepares the demo cohort, plans the trials and trains
nothing; a model that cannot fit the recipe's data stops before Ray starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lightwork.cli import main
from lightwork.data.manifest import read_manifest

pytestmark = pytest.mark.slow


def test_dry_run_prepares_the_demo_cohort_and_trains_nothing(ray_session, tmp_path, capsys):
    assert main(["pipeline", "--config", "tiny", "--storage", str(tmp_path), "--name", "dry", "--dry-run"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "dry"
    healthy, test = read_manifest(str(run / "prepared" / "healthy")), read_manifest(str(run / "prepared" / "test"))
    assert (len(healthy), len(test)) == (20, 6) and all(row["status"] == "ok" for row in healthy + test)
    assert f"dry run: {run / 'train'}" in out
    # each fold model on a line, with its position in the split (what `train --folds` selects)
    assert " 0  split1-4_tasks0 " in out and " 4  split1-4_tasks4 " in out
    assert not list(run.glob("train/*/checkpoint_*"))  # nothing trained


@pytest.mark.parametrize(
    "config, key",
    [("demo", "data.slice_axis: 2"), ("tiny", "model.spatial_dims: 3")],  # 2D slices of volumes; a 3D model
)
def test_a_model_that_does_not_fit_the_recipe_stops_before_ray(tmp_path, config, key):
    code = (
        "import sys; from lightwork.cli import main; "
        f"status = main(['pipeline', '--recipe', 'cxr', '--config', {config!r}, '--storage', {str(tmp_path)!r}]); "
        "print(status, 'ray' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["2", "False"], result.stderr
    assert result.stderr == (
        f"lightwork pipeline: {key} does not fit the cxr recipe's 2D cases: choose a config of the recipe's kind\n"
    )
    assert not list(tmp_path.iterdir())


def test_folds_the_split_lacks_stop_before_anything_is_written(tmp_path, capsys):
    """`--folds` (the fold models of the split to train, as for `lightwork train`) is checked first."""
    assert main(["pipeline", "--folds", "1,5", "--storage", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "lightwork pipeline: --folds 1,5: no fold at position(s) [5] (1/4: 0-4)\n"
    assert not list(tmp_path.iterdir())
