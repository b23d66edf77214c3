"""Seconds per case of `lightwork predict`, and the shares of preprocessing, inference and writing.

    python benchmarks/predict.py                      # brain + cxr, 5 folds, in-process and Ray (20 cases)
    python benchmarks/predict.py --folds 1 --cases 4  # a quicker look (ensemble time scales with folds)
    python benchmarks/predict.py --folds 1 --cases 0 --presets brain2d,cxr \
        --methods synthetic,autoencoder,ddpm,pddpm,cddpm   # one row per method, side by side

Models: the brain and cxr presets' full-size U-Nets with untrained weights (timing does not depend on
the weights), `--folds` of them per ensemble, exported as one package (what `predict --models
PACKAGE` loads). Inputs: a brain volume (1 mm, 182x218x182, skull-stripped, like MSLUB/MNI; the
brain recipe at its defaults: 1 mm, 160x224x160 -> 80x112x80) and a 1024x1024 chest X-ray PNG
(the cxr recipe: 256x256). In-process: one case at a time through `predict_case` (one warm-up,
then the median of `--repeats`), torch with every core. Ray: a folder of `--cases` copies through
`lightwork.distributed.predict.predict` on a local Ray instance, `--workers` inference processes;
seconds per case = wall time / cases (actor start and model loading included), shares from the
cases' own stage times. `--methods`: each preset's package is built once per method
(`method.name`, which brings the method's own network at the preset's widths: the autoencoder, the
denoisers) and timed alike; `brain2d` is the 2D model of the volume's 80 axial 80x112 slices, all
predicted, and the only brain preset the 2D diffusion methods take.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from lightwork.config import RunConfig, load_config
from lightwork.data.discover import CaseSource
from lightwork.demo import smooth_noise
from lightwork.inference import predict as inference
from lightwork.inference.ensemble import Ensemble
from lightwork.inference.package import package_bytes, read_package
from lightwork.models import build_model

RECIPES = {
    "brain": ("brain", {"skull_stripped": True}),
    "brain2d": ("brain", {"skull_stripped": True}),
    "cxr": ("cxr", {}),
}
INPUTS = {"brain": "brain", "brain2d": "brain", "cxr": "cxr"}  # the input file each preset predicts


def write_inputs(folder: Path) -> dict[str, Path]:
    """One brain volume (NIfTI) and one chest X-ray (PNG) in `folder`."""
    rng = np.random.default_rng(0)
    shape = (182, 218, 182)
    index = np.indices(shape, dtype=np.float32)
    centre = (np.array(shape) - 1) / 2
    inside = sum(((index[a] - centre[a]) / (0.4 * shape[a])) ** 2 for a in range(3)) <= 1
    volume = np.where(inside, 100 + 10 * smooth_noise(rng, shape, 4.0), 0).astype(np.float32)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [90, -126, -72]
    nib.save(nib.Nifti1Image(volume, affine), folder / "brain.nii.gz")
    xray = (128 + 40 * smooth_noise(rng, (1024, 1024), 20.0)).clip(0, 255).astype(np.uint8)
    Image.fromarray(xray).save(folder / "cxr.png")
    return {"brain": folder / "brain.nii.gz", "cxr": folder / "cxr.png"}


def write_package(preset: str, config: RunConfig, folds: int, path: Path) -> str:
    """A package of `folds` untrained full-size models of run `config` (preset `preset`) with its recipe."""
    torch.manual_seed(0)
    recipe, options = RECIPES[preset]
    networks = [build_model(config.model).eval() for _ in range(folds)]
    names = [f"fold{i}" for i in range(folds)]
    ensemble = Ensemble(
        "1/4", names, networks, recipe, options, 0.5, "benchmark", config.data.slice_axis, config.method
    )
    path.write_bytes(package_bytes(ensemble))
    return str(path)


def shares(results: list[inference.CaseResult]) -> list[float]:
    totals = [sum(result.seconds[stage] for result in results) for stage in inference.STAGES]
    return [total / sum(totals) for total in totals]


def in_process(package: str, image: Path, out: Path, repeats: int) -> tuple[float, list[float]]:
    ensemble = read_package(package)
    source = CaseSource(image.name.split(".")[0], str(image))
    inference.predict_case(ensemble, source, str(out))  # warm-up
    results = []
    for _ in range(repeats):
        result = inference.predict_case(ensemble, source, str(out))
        assert result.row["status"] == "ok", result.row["error"]
        results.append(result)
    return statistics.median(sum(r.seconds.values()) for r in results), shares(results)


def through_ray(
    package: str, image: Path, folder: Path, out: Path, cases: int, workers: int
) -> tuple[float, list[float]]:
    from lightwork.distributed.predict import predict

    folder.mkdir()
    for index in range(cases):
        (folder / f"case{index:02d}{''.join(image.suffixes)}").write_bytes(image.read_bytes())
    clock = time.perf_counter()
    results = predict(str(folder), str(out), package, workers=workers, progress=False)
    wall = time.perf_counter() - clock
    assert all(result.row["status"] == "ok" for result in results), [r.row["error"] for r in results]
    return wall / cases, shares(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default="brain,cxr", help=f"comma-separated, of {', '.join(RECIPES)}")
    parser.add_argument("--methods", default="synthetic", help="comma-separated method names (method.name)")
    parser.add_argument("--folds", type=int, default=5, help="fold models per ensemble (a split 1/4 has 5)")
    parser.add_argument("--cases", type=int, default=20, help="cases in the Ray folder (0: skip Ray)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-cpus", type=int, default=None, help="logical CPUs of the local Ray instance")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lightwork-bench-predict-") as tmp:
        root = Path(tmp)
        inputs = write_inputs(root)
        for preset, method in ((p, m) for p in args.presets.split(",") for m in args.methods.split(",")):
            label = preset if method == "synthetic" else f"{preset} {method}"
            config = load_config(preset=preset, overrides=[f"method.name={method}"])
            package = write_package(preset, config, args.folds, root / f"{preset}-{method}.lwpkg")
            image = inputs[INPUTS[preset]]
            seconds, split = in_process(package, image, root / f"out-{preset}-{method}", args.repeats)
            rows.append((label, "in-process", 1, seconds, split))
            if args.cases:
                import ray

                ray.init(num_cpus=args.num_cpus, log_to_driver=False, include_dashboard=False)
                try:
                    seconds, split = through_ray(
                        package,
                        image,
                        root / f"folder-{preset}-{method}",
                        root / f"ray-{preset}-{method}",
                        args.cases,
                        args.workers,
                    )
                finally:
                    ray.shutdown()
                rows.append((label, f"Ray, {args.workers} processes", args.cases, seconds, split))
    print(
        f"\n{args.folds} fold models per ensemble, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{'GPU' if torch.cuda.is_available() else 'CPU'}"
    )
    width = max(6, *(len(row[0]) for row in rows))
    base = {row[0]: row[3] for row in rows if row[1] == "in-process"}  # the synthetic rows, by preset
    print(
        f"| {'input':<{width}} | {'mode':<16} | {'cases':>5} | {'s/case':>7} | {'x default':>9} | "
        f"{'preprocess':>10} | {'inference':>9} | {'write':>6} |"
    )
    print(f"|{'-' * (width + 2)}|{'-' * 18}|{'-' * 7}|{'-' * 9}|{'-' * 11}|{'-' * 12}|{'-' * 11}|{'-' * 8}|")
    for label, mode, cases, seconds, (pre, infer, write) in rows:
        default = base.get(label.split(" ")[0]) if mode == "in-process" else None
        ratio = f"{seconds / default:.1f}" if default else "-"
        print(
            f"| {label:<{width}} | {mode:<16} | {cases:>5} | {seconds:>7.2f} | {ratio:>9} | "
            f"{pre:>10.0%} | {infer:>9.0%} | {write:>6.0%} |"
        )


if __name__ == "__main__":
    main()
