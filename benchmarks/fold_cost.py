"""The fixed cost of a fold: what a Ray Tune trial + Ray Train run costs beyond its optimizer steps.

A split of tiny 2D folds (`--config tiny`, 32x32 noise images, batch 2, `--epochs` epochs of 4
steps) is trained on a local Ray instance of `--num-cpus` logical CPUs, `--concurrent` folds at a
time. The step time is measured first in this process (the same model and batch, a plain loop,
median of 40 steps). Then:

    fixed cost per fold = (split wall time - optimizer steps x step time) / folds

which spreads the run's one-time start (Ray Data's actors, the first trial's process and imports)
over its folds; and a fold's own, one at a time (`--concurrent 1`):

    fold period = median time from one fold's Train controller start to the next one's
    fixed cost of a fold = fold period - a fold's optimizer steps x step time
    run start and end = split wall time - folds x fold period

and where a fold's time goes, from Ray's own task events (`ray.timeline()`, medians over the
folds): the trial driver building the fold's datasets and starting the Train controller, the
controller's start (a new process: its imports and the trainer's arguments), the worker group's
start (placement group, worker processes), the worker's train context (imports, process group),
the synthesis stream's start (until its first task starts), the training loop itself
(`epoch_seconds` of the fold records: steps, data waits, validation, checkpoints), and the time
from the end of one fold's run to the next trial's start (reports, the worker group's shutdown).
The processes each fold starts are counted from Ray's state API.

    python benchmarks/fold_cost.py [--split 1/4] [--epochs 1] [--num-cpus 8] [--concurrent 1]

Run it alone: the figures are wall times on a shared machine's cores.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from lightwork.config import load_config
from lightwork.demo.noise import write_noise_dataset
from lightwork.models import build_model
from lightwork.training.loop import FoldTrainer

SHAPE = (32, 32)
SETTINGS = [
    "model.spatial_dims=2",
    "model.features=[4,8]",
    "train.batch_size=2",
    "train.val_batch_size=4",
    "resources.cpus_per_worker=0.5",
]
# A fold's timeline, boundary after boundary: (event, its start or end). Each fold's boundaries are
# found from its controller's start: the trial call that started it, then the first of each next.
BOUNDARIES = (
    ("ImplicitFunc.train", "start"),
    ("TrainController.__init__", "start"),
    ("TrainController.__init__", "end"),
    ("RayTrainWorker.init_train_context", "start"),
    ("RayTrainWorker.init_train_context", "end"),
    ("synthesis task", "start"),
    ("TrainController.run", "end"),
)
PHASES = (
    "trial: datasets, controller launch",
    "controller process start",
    "worker group start",
    "worker train context",
    "loop setup, stream start",
    "training loop, reports, shutdown",
)


def step_seconds(config, steps: int = 40) -> float:
    """Median seconds of one optimizer step of the benchmark's model and batch, in this process."""
    torch.manual_seed(0)
    trainer = FoldTrainer(build_model(config.model), config.train, torch.device("cpu"))
    batch = {
        "image": torch.randn(config.train.batch_size, 1, *SHAPE),
        "label": torch.rand(config.train.batch_size, *SHAPE),
    }
    for _ in range(5):
        trainer.train_step(batch)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def task_events(timeline: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """(start, end) seconds of every executed task and actor method, by `Class.method` in time order."""
    events = collections.defaultdict(list)
    for event in timeline:
        if event.get("ph") != "X" or not str(event.get("cat", "")).startswith("task::"):
            continue
        name = event["cat"][len("task::") :]
        if "synthesise_items" in name:
            name = "synthesis task"
        start = event["ts"] / 1e6
        events[name].append((start, start + event["dur"] / 1e6))
    return {name: sorted(spans) for name, spans in events.items()}


def fold_phases(events: dict[str, list[tuple[float, float]]]) -> list[list[float]]:
    """Per fold (one per Train controller), the seconds of each of PHASES; a fold whose timeline
    lacks a boundary (a restarted worker group, folds at once) is left out."""
    at = {"start": 0, "end": 1}
    folds = []
    for anchor, _ in events.get("TrainController.__init__", []):
        trials = [span[0] for span in events.get("ImplicitFunc.train", []) if span[0] <= anchor]
        times = [trials[-1] if trials else anchor]
        for name, which in BOUNDARIES[1:]:
            later = [span[at[which]] for span in events.get(name, []) if span[at[which]] >= times[-1]]
            if not later:
                break
            times.append(later[0])
        if len(times) == len(BOUNDARIES):
            folds.append([end - start for start, end in zip(times, times[1:])])
    return folds


def fold_period(events: dict[str, list[tuple[float, float]]]) -> float | None:
    """Median seconds from one Train controller's start to the next one's (folds one at a time);
    None with fewer than two folds."""
    starts = [start for start, _ in events.get("TrainController.__init__", [])]
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    return statistics.median(gaps) if gaps else None


def between_folds(events: dict[str, list[tuple[float, float]]]) -> float | None:
    """Median seconds from one fold's `TrainController.run` end to the next trial's start (folds
    one at a time): reports, the worker group's shutdown, Tune's next trial; None with one fold."""
    trial_starts = [start for start, _ in events.get("ImplicitFunc.train", [])]
    gaps = []
    for _, run_end in events.get("TrainController.run", []):
        later = [start for start in trial_starts if start >= run_end]
        if later:
            gaps.append(later[0] - run_end)
    return statistics.median(gaps) if gaps else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="1/4")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the local Ray instance")
    parser.add_argument("--concurrent", type=int, default=1, help="folds at once")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    root = Path(tempfile.mkdtemp(prefix="lightwork-foldcost-"))
    data = write_noise_dataset(root / "data", SHAPE, recipe="test")
    config = load_config(
        preset="tiny",
        overrides=[
            "name=foldcost",
            f"storage_path={root / 'runs'}",
            f"data.manifest={data}",
            f"train.max_epochs={args.epochs}",
            f"resources.max_concurrent_trials={args.concurrent}",
            *SETTINGS,
        ],
    )
    step = step_seconds(config)

    import ray
    from ray.util.state import list_actors

    from lightwork.distributed.cluster import connect
    from lightwork.distributed.train import train_splits
    from lightwork.training.resolve import resolve_run

    connect(num_cpus=args.num_cpus)
    start = time.perf_counter()
    records = train_splits(resolve_run(config, args.split))
    wall = time.perf_counter() - start
    folds = len(records)
    steps = sum(record.steps for record in records)
    loop = statistics.median(sum(entry["epoch_seconds"] for entry in record.history) for record in records)
    timeline = ray.timeline()
    events = task_events(timeline)
    phases = fold_phases(events) if args.concurrent == 1 else []
    period = fold_period(events) if args.concurrent == 1 else None
    gap = between_folds(events) if args.concurrent == 1 else None
    processes = len({event["tid"] for event in timeline if str(event.get("cat", "")).startswith("task::")})
    actors = collections.Counter(actor["class_name"] for actor in list_actors(limit=10000, detail=True))
    ray.shutdown()

    fixed = (wall - steps * step) / folds
    print(f"\n{folds} folds of split {args.split}, {args.epochs} epoch(s), {args.concurrent} at a time, ")
    print(f"local Ray of {args.num_cpus} logical CPUs on {os.cpu_count()} cores\n")
    print(f"{'measure':<34} {'seconds':>9}")
    print(f"{'split wall time':<34} {wall:9.1f}")
    print(f"{'optimizer step (in process)':<34} {step:9.4f}")
    print(f"{'optimizer steps, all folds':<34} {steps:9d}")
    print(f"{'fixed cost per fold (wall/folds)':<34} {fixed:9.1f}")
    if period is not None:
        print(f"{'fold period (median)':<34} {period:9.1f}")
        print(f"{'fixed cost of a fold':<34} {period - steps / folds * step:9.1f}")
        print(f"{'run start and end':<34} {wall - folds * period:9.1f}")
    if phases:
        print(f"\n{'where a fold goes (median)':<34} {'seconds':>9}")
        medians = [statistics.median(fold[index] for fold in phases) for index in range(len(PHASES))]
        for label, seconds in zip(PHASES, medians):
            print(f"{label:<34} {seconds:9.1f}")
        if gap is not None:
            print(f"{'after the run, next trial start':<34} {gap:9.1f}")
        print(f"{'  (in the loop: epoch_seconds)':<34} {loop:9.1f}")
        print(f"{'  (in the loop: optimizer steps)':<34} {steps / folds * step:9.1f}")
    print(f"\n{'worker processes that ran a task':<34} {processes:9d} {processes / folds:9.1f}")
    print(f"{'actors started':<34} {'count':>9} {'per fold':>9}")
    for name, count in sorted(actors.items(), key=lambda item: -item[1]):
        print(f"{name[:34]:<34} {count:9d} {count / folds:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
