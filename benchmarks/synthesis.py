"""Synthesis speed of the five anomaly tasks on one core, against the reference's quiet figures.

    python benchmarks/synthesis.py                     # 3 runs of 40 calls per task and grid
    python benchmarks/synthesis.py --calls 20 --runs 2 # quick
    python benchmarks/synthesis.py --profile           # + cProfile of every task short of 3x in some run

Per task call (the full `task(image, foreground, rng)`: 1-4 anomalies and the soft label), on the
phantom of docs/method.md section 6: smoothed noise (Gaussian, sigma 2 voxels) in [0, 1] with an
ellipsoidal foreground (80x112x80 with the mask, 256x256 without); blend sources are other such
phantoms. Generators: `sample_generator(SEED, call, "phantom", task)`, so every run draws the same
anomalies. A run times `--calls` calls of every task and grid; the runs are interleaved (run 1 of
every task, then run 2, ...), so a burst of load on the machine spreads over the tasks instead of
falling on all the runs of one.

Per task and grid, the median over the calls of each run of the thread's CPU time (what a call
costs when it has the core to itself: on a busy machine the wall clock also counts the wait for a
core), then the min / median / max of those run medians, and the median wall clock over all
calls; beside the reference (ms), the target (reference / 3), the speed-up of the slowest run
(reference / max) and PASS when every run is at least 3x faster than the reference. Then the
samples per second one core sustains with the tasks mixed uniformly (a seeded task sequence)
against the reference's mean over the tasks.

Threads are pinned to one (OMP/MKL/OPENBLAS variables set before numpy loads); the load average
is printed, as other processes on the machine slow every figure.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.ndimage  # noqa: E402

from lightwork.anomalies import TASK_NAMES, make_task  # noqa: E402
from lightwork.anomalies.parameters import max_push_for  # noqa: E402
from lightwork.anomalies.seeding import sample_generator  # noqa: E402

SEED = 0
SOURCES = 4  # phantoms feeding the blends
# The reference's quiet one-core figures (ms per call incl. the label), docs/method.md section 6.
REFERENCE_MS = {
    (80, 112, 80): (51.0, 44.0, 35.0, 36.0, 22.0),
    (256, 256): (5.6, 6.0, 5.3, 5.4, 3.7),
}
SPEEDUP_TARGET = 3.0


def phantom(seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed noise in [0, 1] ([1, *S] float32) and an ellipsoidal foreground ([*S] bool)."""
    rng = np.random.default_rng(seed)
    noise = scipy.ndimage.gaussian_filter(rng.random(shape), 2.0)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    axes = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    return noise[None].astype(np.float32), sum(axis**2 for axis in axes) < 0.8


def tasks_for(shape: tuple[int, ...]) -> list:
    """The five tasks, set up for this grid (blend sources: other phantoms)."""
    sources = [phantom(100 + index, shape) for index in range(SOURCES)]
    made = []
    for task_id, name in enumerate(TASK_NAMES):
        if name in ("intra_blend", "inter_blend"):
            made.append(make_task(task_id, sources=sources))
        elif name in ("sink", "source"):
            made.append(make_task(task_id, max_push=max_push_for(len(shape))))
        else:
            made.append(make_task(task_id))
    return made


def time_calls(task, image, foreground, task_id: int, calls: int, first: int = 0) -> np.ndarray:
    """[2, calls] seconds per call: wall clock and this thread's CPU time (generators for calls
    first .. first + calls - 1)."""
    seconds = np.empty((2, calls))
    for index in range(calls):
        rng = sample_generator(SEED, first + index, "phantom", task_id)
        wall, cpu = time.perf_counter(), time.thread_time()
        task(image, foreground, rng)
        seconds[:, index] = time.perf_counter() - wall, time.thread_time() - cpu
    return seconds


def profile(task, image, foreground, task_id: int, calls: int) -> None:
    """Print where a task's CPU time goes (cProfile timed by the thread's CPU clock, top
    functions by own time)."""
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    time_calls(task, image, foreground, task_id, calls)
    profiler.disable()
    print(f"\n--- cProfile: {TASK_NAMES[task_id]}, {calls} calls, top functions by own CPU time")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def load_average() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=40, help="timed calls per task, grid and run")
    parser.add_argument("--runs", type=int, default=3, help="runs (each task's median is taken per run)")
    parser.add_argument("--profile", action="store_true", help="profile every task short of 3x in some run")
    args = parser.parse_args()
    print(
        f"load average before: {load_average()} (1/5/15 min, {os.cpu_count()} CPUs); {args.runs} runs of "
        f"{args.calls} calls per task; one thread; CPU ms per call: min / median / max over the runs of "
        "each run's median"
    )
    header = (
        f"{'grid':<12} {'task':<12} {'cpu min':>8} {'cpu med':>8} {'cpu max':>8} {'wall med':>9} {'ref':>6} "
        f"{'target':>7} {'worst':>7}  verdict"
    )
    print(header + "\n" + "-" * len(header))
    slow = []
    for shape, reference in REFERENCE_MS.items():
        image, foreground = phantom(SEED, shape)
        if len(shape) == 2:
            foreground = None  # 256x256 without a mask, as the reference was measured
        tasks = tasks_for(shape)
        grid = "x".join(map(str, shape))
        for task_id, task in enumerate(tasks):
            time_calls(task, image, foreground, task_id, 3, first=10**6)  # warm-up (imports, caches)
        runs = [
            [time_calls(task, image, foreground, task_id, args.calls) for task_id, task in enumerate(tasks)]
            for _ in range(args.runs)
        ]
        for task_id in range(len(tasks)):
            seconds = np.concatenate([run[task_id] for run in runs], axis=1) * 1e3
            medians = np.array([np.median(run[task_id][1]) for run in runs]) * 1e3
            worst = reference[task_id] / medians.max()
            verdict = "PASS" if worst >= SPEEDUP_TARGET else f"FAIL (< {SPEEDUP_TARGET:g}x in some run)"
            print(
                f"{grid:<12} {TASK_NAMES[task_id]:<12} {medians.min():8.2f} {np.median(medians):8.2f} "
                f"{medians.max():8.2f} {np.median(seconds[0]):9.2f} {reference[task_id]:6.1f} "
                f"{reference[task_id] / SPEEDUP_TARGET:7.2f} {worst:6.2f}x  {verdict}"
            )
            if worst < SPEEDUP_TARGET:
                slow.append((shape, task_id))
        # Mixed: a seeded uniform task sequence, the throughput of one core.
        order = np.random.default_rng(SEED).integers(len(tasks), size=args.calls * len(tasks))
        wall, cpu = time.perf_counter(), time.thread_time()
        for index, task_id in enumerate(order):
            tasks[task_id](image, foreground, sample_generator(SEED, index, "mixed", int(task_id)))
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        reference_rate = 1e3 / float(np.mean(reference))
        print(
            f"{grid:<12} {'mixed':<12} {len(order) / wall:.1f} samples/s on one core (wall), {len(order) / cpu:.1f} "
            f"per CPU second; reference {reference_rate:.1f}/s -> {len(order) / cpu / reference_rate:.2f}x"
        )
    print(f"load average after: {load_average()}")
    if args.profile:
        for shape, task_id in slow:
            image, foreground = phantom(SEED, shape)
            profile(
                tasks_for(shape)[task_id],
                image,
                foreground if len(shape) == 3 else None,
                task_id,
                max(args.calls // 2, 10),
            )


if __name__ == "__main__":
    main()
