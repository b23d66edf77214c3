"""Synthesis throughput: the bare single-core loop beside the Ray Data stream, 1 and 2 tasks at once.

    python benchmarks/pipeline.py                        # 80x112x80 brain and 256x256 chest phantoms
    python benchmarks/pipeline.py --presets cxr --appetite 500

Per preset: phantom cases prepared as the recipes leave them (brain: z-scored over the brain,
zero outside; chest: scaled to [-1, 1], whole-image foreground), written as `.npz` files with a
manifest in a temporary folder; every sample uses one of all five tasks (inter_blend from the
stand-in external pool). Then, in the same run and on the same (case, epoch) items:
    bare      `Synthesiser.sample` in this process (one core): samples/s over all items after a
              warm-up pass (cases cached, stand-in pool built), and the median time per sample
    ray, n    `stream.synthesis_dataset` with n synthesis tasks at once, consumed with `iter_batches`
              in this process: samples/s between the 1/4 and 3/4 marks of the samples (the start,
              reported apart, excluded), and the ratio to n x the bare rate (goal >= 0.8)
Each figure is measured `--repeats` times (bare, 1 task, 2 tasks, bare, ...); the table prints the
medians, and each ratio's median with its range over the repeats (ratios pair each Ray
measurement with the bare measurement just before it).
Pool sizing for a GPU: tasks = ceil(GPU samples/s appetite / (stream efficiency x per-core synthesis
samples/s)), with the bare rate as the per-core rate and the 1-task ratio as the efficiency
(printed for `--appetite` values).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from lightwork import demo
from lightwork.anomalies.parameters import MAX_PUSH
from lightwork.config import load_config
from lightwork.data import manifest
from lightwork.data.cases import PreparedCase, save_case
from lightwork.distributed import stream
from lightwork.distributed.resources import plan_synthesis
from lightwork.synthesis.samples import Synthesiser

# shape, spacing mm, cases, samples: enough samples that a task's output block (up to 48 brain /
# 512 chest samples, delivered at once) is a small part of the measured window
PRESETS = {
    "brain": ((80, 112, 80), 2.0, 6, 1200),
    "cxr": ((256, 256), 1.4, 16, 12288),
}
ALL_TASKS = (0, 1, 2, 3, 4)
SEED = 0


def prepare(kind: str, root: str, shape: tuple[int, ...], spacing_mm: float, count: int) -> list[tuple[str, str]]:
    """Write `count` prepared phantom cases and their manifest under `root`; returns (case_id, uri)."""
    rows, cases = [], []
    ids = [f"{kind}{index:03d}" for index in range(count)]
    folds = manifest.contiguous_folds(ids)
    for case_id in ids:
        make = demo.make_brain_case if kind == "brain" else demo.make_chest_case
        case = make(SEED, case_id, False, shape, spacing_mm)
        if kind == "brain":
            inside = case.image[case.foreground]
            image = np.where(case.foreground, (case.image - inside.mean()) / inside.std(), 0.0)
            foreground = case.foreground
        else:
            image, foreground = case.image * 2.0 - 1.0, np.ones(shape, bool)
        uri = os.path.join(root, f"{case_id}.npz")
        save_case(uri, PreparedCase(case_id, image[None].astype(np.float32), foreground))
        cases.append((case_id, uri))
        rows.append(
            {
                "case_id": case_id,
                "source_uri": uri,
                "array_uri": uri,
                "checksum": case_id,
                "shape": list(shape),
                "spacing": [spacing_mm] * len(shape),
                "recipe": kind,
                "recipe_version": "phantom",
                "fold": folds[case_id],
                "has_lesion": False,
                "status": "ok",
                "error": None,
            }
        )
    manifest.write_manifest(root, rows)
    return cases


def bare(cases: list[tuple[str, str]], epochs: int, max_push: float) -> tuple[float, float]:
    """(samples/s, median ms per sample) of the single-process loop over the items."""
    synthesiser = Synthesiser(SEED, ALL_TASKS, cases, max_push=max_push)
    for case_id, uri in cases:  # warm-up: cases cached, stand-in pool built
        synthesiser.sample(case_id, uri, epochs)
    times = []
    started = time.perf_counter()
    for epoch in range(epochs):
        for case_id, uri in cases:
            before = time.perf_counter()
            synthesiser.sample(case_id, uri, epoch)
            times.append(time.perf_counter() - before)
    return len(times) / (time.perf_counter() - started), 1000 * statistics.median(times)


def through_ray(
    cases: list[tuple[str, str]], epochs: int, shape: tuple[int, ...], tasks: int, max_push: float
) -> tuple[float, float, int]:
    """(steady samples/s, seconds to the first batch, samples) of the Ray stream.

    The steady rate is taken between the batches that bring the count past 1/4 and 3/4 of the
    samples: it leaves out the stream's start and the end of the stream, and the samples that wait
    delivered but unread (Ray Data hands over a task's output in blocks of many samples) are about
    as many at both ends of that window.
    """
    config = load_config(overrides=[f"data.max_push={max_push}"])
    dataset = stream.synthesis_dataset(
        cases,
        ALL_TASKS,
        config,
        SEED,
        list(range(epochs)),
        validation=False,
        pool=plan_synthesis(2.0, tasks),
        shape=shape,
    )
    dataset.context.execution_options = stream.ingest_options(2.0)
    started = time.perf_counter()
    arrivals, count = [], 0  # (seconds, samples so far) per batch
    for batch in dataset.iter_batches(batch_size=stream.rows_per_call(shape), batch_format="numpy"):
        count += len(batch["image"])
        arrivals.append((time.perf_counter(), count))
    (since, first), (until, last) = (
        next((when, rows) for when, rows in arrivals if rows >= count * share) for share in (0.25, 0.75)
    )
    return (last - first) / (until - since), arrivals[0][0] - started, count


def spread(ratios: list[float]) -> str:
    return f"({min(ratios):.2f}-{max(ratios):.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="brain,cxr", help="comma-separated: brain, cxr")
    parser.add_argument("--samples", type=int, default=None, help="samples per measurement (default per preset)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure (medians are printed)")
    parser.add_argument(
        "--appetite",
        type=float,
        action="append",
        default=None,
        help="GPU samples/s to size a pool for (repeatable; default 20, 100, 500)",
    )
    args = parser.parse_args(argv)
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"machine: {os.cpu_count()} cores; Ray with 2 CPUs; all five tasks, inter_blend from the stand-in pool")
    header = (
        f"{'preset':<6} {'shape':<12} {'samples':>7} {'bare/s':>8} {'ms/sample':>9} {'ray 1/s':>8} "
        f"{'x bare':>7} {'(min-max)':>11} {'ray 2/s':>8} {'x 2 bare':>8} {'(min-max)':>11} {'start s':>7}"
    )
    print(header, flush=True)
    for preset in [name.strip() for name in args.presets.split(",")]:
        shape, spacing, count, samples = PRESETS[preset]
        max_push = MAX_PUSH["brain" if preset == "brain" else "cxr"]
        epochs = max(1, math.ceil((args.samples or samples) / count))
        bare_rates, median_ms, one, two, starts = [], [], [], [], []
        with tempfile.TemporaryDirectory() as root:
            cases = prepare(preset, root, shape, spacing, count)
            for _ in range(args.repeats):  # interleaved, so that each figure sees the same machine
                rate, ms = bare(cases, epochs, max_push)
                bare_rates.append(rate)
                median_ms.append(ms)
                for rates, tasks in ((one, 1), (two, 2)):
                    delivered, start, total = through_ray(cases, epochs, shape, tasks, max_push)
                    rates.append(delivered)
                    starts.append(start)
        rate = statistics.median(bare_rates)
        one_ratios = [delivered / single for delivered, single in zip(one, bare_rates)]
        two_ratios = [delivered / (2 * single) for delivered, single in zip(two, bare_rates)]
        print(
            f"{preset:<6} {'x'.join(map(str, shape)):<12} {total:>7} {rate:>8.1f} {statistics.median(median_ms):>9.1f} "
            f"{statistics.median(one):>8.1f} {statistics.median(one_ratios):>7.2f} {spread(one_ratios):>11} "
            f"{statistics.median(two):>8.1f} {statistics.median(two_ratios):>8.2f} {spread(two_ratios):>11} "
            f"{statistics.median(starts):>7.1f}",
            flush=True,
        )
        per_task = statistics.median(one_ratios) * rate
        print(
            f"  pool for a GPU ({preset}): tasks = ceil(appetite / ({statistics.median(one_ratios):.2f} x {rate:.1f}"
            f" samples/s per core)): "
            + ", ".join(
                f"{appetite:g}/s -> {math.ceil(appetite / per_task)}" for appetite in args.appetite or (20, 100, 500)
            )
        )
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
