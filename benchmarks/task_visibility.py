"""How visible each synthetic task is on the real healthy sets of ../shared: per task, the label mass,
the mean |change| inside the label and the loss of a model that predicts zero everywhere.

    python benchmarks/task_visibility.py                 # 200 draws per task and set
    python benchmarks/task_visibility.py --draws 400

Sets (prepared once into `--work` by `benchmarks/learning.py`'s recipes): IXI T1 on a 40x56x40 grid
as whole volumes (3D) and as axial slices (2D, `data.slice_axis` 2, slices >= 10% brain), and the
Kermany normals at 128x128 (2D). Every draw is a `lightwork.synthesis.samples.Synthesiser` sample of
one task (the stream's own code): case (or slice) i of the set at epoch i // len(set), run seed 0.
Task 1 (inter_blend) is drawn twice: from the stand-in pool (no external set) and from an external
set: the Kermany X-rays for the IXI slices, IXI axial slices for the X-rays, the MSLUB T1 volumes
(another scanner and site) for the IXI volumes.

Figures over the draws: label mass = mean label over all pixels; |change| = mean over the labelled
pixels (label > 0) of |anomalous - healthy|, in the prepared image's units (z-scored brains,
X-rays in [-1, 1]); zero-prediction loss = mean label^2 (the MSE of predicting 0, what a model that
has learnt nothing scores on the anomalous half of validation). Task 1 against task 0: the ratio
of their label masses.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning import LIGHTWORK, SHARED, _run, prepare  # noqa: E402


def external_sets(work: Path) -> dict[str, str]:
    """The external prepared sets of each target set, prepared under `work`."""
    mslub = work / "mslub-t1"
    shape = ["--recipe", "brain", "--shape", "40,56,40", "--downsample", "4", "--no-progress", "--num-cpus", "2"]
    flags = ["--modality", "t1", "--skull-stripped"]
    _run([LIGHTWORK, "prepare", str(SHARED / "brain" / "lesion_mslub"), str(mslub), *shape, *flags])
    return {"ixi-3d": str(mslub), "ixi-2d": prepare("cxr", work)[0], "kermany": prepare("brain", work)[0]}


def draw_figures(synthesiser, refs, task: int, draws: int) -> dict[str, float]:
    """Label mass, mean |change| inside the label and zero-prediction loss over `draws` samples."""
    mass, change, loss, skipped = [], [], [], 0
    for index in range(draws):
        ref = refs[index % len(refs)]
        try:
            sample = synthesiser.sample(ref.case_id, ref.array_uri, index // len(refs), ref.slice)
        except ValueError:
            skipped += 1
            continue
        inside = sample.label > 0
        mass.append(float(sample.label.mean()))
        loss.append(float((sample.label.astype(np.float64) ** 2).mean()))
        if inside.any():
            change.append(float(np.abs(sample.image - sample.healthy).mean(axis=0)[inside].mean()))
    nan = float("nan")
    return {
        "mass": statistics.fmean(mass) if mass else nan,
        "change": statistics.fmean(change) if change else nan,
        "loss": statistics.fmean(loss) if loss else nan,
        "skipped": skipped,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=200, help="samples per task and set (at least 200 for the table)")
    parser.add_argument("--work", default="/tmp/lightwork-learning", help="where the prepared sets are kept")
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} is absent (the real data sets beside the project)")
        return 0
    from lightwork.anomalies import TASK_NAMES
    from lightwork.anomalies.parameters import max_push_for
    from lightwork.data import manifest
    from lightwork.data.slices import training_samples
    from lightwork.synthesis.samples import Synthesiser

    work = Path(args.work)
    brain, chest = prepare("brain", work)[0], prepare("cxr", work)[0]
    externals = external_sets(work)
    sets = {"ixi-3d": (brain, None, 3), "ixi-2d": (brain, 2, 2), "kermany": (chest, None, 2)}
    print(f"{args.draws} draws per task and set, run seed 0; label mass and zero-prediction loss x 1000")
    print(f"{'set':<8} {'task':<24} {'label mass':>10} {'|change|':>9} {'zero loss':>10} {'skipped':>8}")
    for name, (uri, axis, dims) in sets.items():
        rows = manifest.usable(manifest.read_manifest(uri))
        recipe = rows[0]["recipe"]
        refs = training_samples(rows, axis, 0.1).refs(range(manifest.NUM_FOLDS))
        external = [row["array_uri"] for row in manifest.usable(manifest.read_manifest(externals[name]))]
        push = max_push_for(dims, recipe)
        masses = {}
        runs = [(task, TASK_NAMES[task], ()) for task in range(len(TASK_NAMES))]
        runs.insert(2, (1, f"inter_blend ({Path(externals[name]).name})", external))
        runs[1] = (1, "inter_blend (stand-ins)", ())
        for task, title, sources in runs:
            synthesiser = Synthesiser(0, (task,), [tuple(ref) for ref in refs], sources, push, slice_axis=axis)
            figures = draw_figures(synthesiser, refs, task, args.draws)
            masses[title] = figures["mass"]
            print(
                f"{name:<8} {title:<24} {1000 * figures['mass']:>10.2f} {figures['change']:>9.3f} "
                f"{1000 * figures['loss']:>10.2f} {figures['skipped']:>8}"
            )
        intra = masses[TASK_NAMES[0]]
        inter = [(title, mass) for title, mass in masses.items() if title.startswith("inter")]
        ratios = ", ".join(f"{title}: {mass / intra:.2f}" for title, mass in inter)
        print(f"{name:<8} label mass against intra_blend's: {ratios}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    raise SystemExit(main())
