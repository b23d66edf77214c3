"""The README's real-data commands as a user runs them: from a checkout with ../shared beside it,
in a shell, with the README's own relative paths (`prep/...`, `runs`). The sets are prepared
verbatim (the training set and the smallest test set); the training command is run verbatim with
`--dry-run` appended (its full run takes about 35 minutes on 2 cores: its figures are in
benchmarks/RESULTS.md, measured with these very commands)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lightwork.data import manifest

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[1] / "README.md"


def bash_block(heading: str) -> list[str]:
    """The commands of the first ```bash block after the line `heading`, continuation lines joined."""
    text = README.read_text()
    block = re.search(r"```bash\n(.*?)```", text[text.index(heading) :], re.S).group(1)
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_the_real_data_commands_run_as_written(tmp_path, real_data):
    shared = real_data("brain").parents[1]
    checkout = tmp_path / "lightwork"
    checkout.mkdir()
    (tmp_path / "shared").symlink_to(shared)  # a clone's layout: ../shared beside the project
    setup, *commands = bash_block("## Real data")
    by_start = {command.split()[1] + " " + command.split()[3]: command for command in commands}
    train = next(command for command in commands if command.startswith("lightwork train "))
    script = "\n".join(
        [
            "set -e",
            setup,
            by_start["prepare prep/ixi"],
            by_start["prepare prep/mslub"],
            by_start["prepare prep/brats-core"],
            train + " --dry-run",
        ]
    )
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run(["bash", "-c", script], cwd=checkout, env=env, capture_output=True, text=True, timeout=900)
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-3000:]
    ixi = manifest.usable(manifest.read_manifest(str(checkout / "prep" / "ixi")))
    mslub = manifest.usable(manifest.read_manifest(str(checkout / "prep" / "mslub")))
    assert len(ixi) == 10 and not any(row["has_lesion"] for row in ixi)
    assert len(mslub) == 3 and all(row["has_lesion"] for row in mslub)
    core = manifest.usable(manifest.read_manifest(str(checkout / "prep" / "brats-core")))
    assert len(core) == 5 and all(row["has_lesion"] for row in core)
    assert json.loads(core[0]["recipe_options"])["lesion_labels"] == [1, 3, 4]
    assert all(row["shape"] == [40, 56, 40] for row in ixi + mslub + core)
    # The dry run resolved the relative --data and --storage against this folder, and trained nothing.
    assert f"run {checkout / 'runs' / 'brain-ixi'}: 5 fold models, 5 to train, 10 healthy cases" in console
    assert not (checkout / "runs" / "brain-ixi").exists()
