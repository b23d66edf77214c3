"""Prepare throughput: one case at a time in this process beside the Ray fan-out, per data set.

    python benchmarks/prepare.py                      # every real set present + the demo cohort
    python benchmarks/prepare.py --sets demo,kermany --limit 100 --num-cpus 2

Per set (the real ones read in place from ../shared/data, skipped when absent; `demo` is a
generated brain cohort of 32x40x32 at 5 mm): the cases found by `lightwork.data.discover`
(at most `--limit`), prepared with the set's recipe into a temporary folder:
    bare   `prepare_case` in this process, one case after another: median seconds per case
           (read + recipe + checks + compressed .npz write) and cases/s
    ray    `distributed.prepare.prepare_dataset` on a local Ray instance with `--num-cpus`
           logical CPUs and 0.5 CPU per task: cases/s over the whole run (discovery and the
           manifest included, Ray start-up excluded), and its ratio to the bare rate
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lightwork import demo
from lightwork.data.discover import discover_cases
from lightwork.data.prepare import prepare_case
from lightwork.data.recipes import Recipe, make_recipe

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SETS = {  # name -> (source below SHARED, or None for the generated cohort; recipe; options; modality)
    "ixi": ("brain/healthy_ixi_t1", "brain", {}, "t1"),
    "brats": ("brain/lesion_brats2015", "brain", {}, "flair"),
    "mslub": ("brain/lesion_mslub", "brain", {"skull_stripped": True}, "flair"),
    "kermany": ("cxr_kermany/train", "cxr", {}, None),
    "demo": (None, "brain", {"shape": (32, 40, 32), "spacing_mm": 5.0, "downsample": 1}, None),
}


def bare(src: str, recipe: Recipe, modality: str | None, limit: int, dst: str) -> tuple[int, float, float]:
    """(cases, median s per case, cases/s) of prepare_case in this process."""
    sources = discover_cases(src, modality, volumes=recipe.name == "brain")[:limit]
    times = []
    clock = time.perf_counter()
    for source in sources:
        result = prepare_case(source, recipe, dst)
        if result.row["status"] != "ok":
            raise RuntimeError(result.row["error"])
        times.append(result.seconds)
    return len(sources), statistics.median(times), len(sources) / (time.perf_counter() - clock)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--limit", type=int, default=200, help="at most this many cases per set")
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args(argv)
    import ray

    from lightwork.distributed.prepare import prepare_dataset

    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            folder, recipe_name, options, modality = SETS[name]
            if folder is None:
                src = demo.write_cohort(
                    f"{tmp}/demo-raw", "brain", num_healthy=min(args.limit, 20), num_test=0
                ).healthy_uri
            elif (SHARED / folder).exists():
                src = str(SHARED / folder)
            else:
                print(f"{name}: {SHARED / folder} absent, skipped", file=sys.stderr)
                continue
            recipe = make_recipe(recipe_name, **options)
            count, median_s, bare_rate = bare(src, recipe, modality, args.limit, f"{tmp}/{name}-bare")
            summary = prepare_dataset(
                src, f"{tmp}/{name}-ray", recipe, modality=modality, limit=args.limit, progress=False
            )
            ray_rate = summary.prepared / summary.seconds
            rows.append((name, recipe_name, count, median_s * 1000, bare_rate, ray_rate, ray_rate / bare_rate))
    ray.shutdown()
    print(
        f"{'set':<8} {'recipe':<6} {'cases':>5} {'bare ms/case':>13} {'bare cases/s':>13} "
        f"{'ray cases/s':>12} {'ray/bare':>9}   (ray: {args.num_cpus} logical CPUs, 0.5 per task)"
    )
    for name, recipe_name, count, median_ms, bare_rate, ray_rate, ratio in rows:
        print(
            f"{name:<8} {recipe_name:<6} {count:>5} {median_ms:>13.1f} {bare_rate:>13.2f} "
            f"{ray_rate:>12.2f} {ratio:>9.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
