"""Training-step speed of the paper's presets and of the methods: samples/s, step time, peak memory, data-wait share.

    python benchmarks/training.py                 # CPU: fp32 at reduced size (stated in the table)
    python benchmarks/training.py --full          # the paper's sizes (80x112x80 b8, 256x256 b50)
    python benchmarks/training.py --threads 1     # one torch thread, as each learning-benchmark run
    python benchmarks/training.py --full --precision both   # on a GPU: bf16 and fp32 side by side
    python benchmarks/training.py --presets synthetic,autoencoder,hybrid   # methods at brain2d's slices
    python benchmarks/training.py --presets synthetic96,ddpm,pddpm,cddpm,hybrid_ddpm   # at Behrendt's

Each configuration runs in its own process (clean peak memory) through `FoldTrainer.run_epoch`, the
same code path as training: a warm-up epoch first, then one epoch of timed steps (median): wall
time, and the process's CPU time over all its threads (the steadier figure on a shared machine, and
what the learning benchmark's budget counts). Batches come
from memory, so the data-wait share measures the loop's own overhead, not the synthesis stream.
Each batch has the columns its method trains on (`Method.training_columns`: random `image` and
`label`, and a random `healthy` image for a method that `needs_healthy`, the hybrids).
Achieved FLOP/s counts the FLOPs of one more training step (every network evaluation of the
method's loss, forward and backward) with torch's FlopCounterMode.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from lightwork.config import load_config
from lightwork.methods import get_method
from lightwork.models import build_model
from lightwork.training.loop import FoldTrainer

FULL = {"brain": ((80, 112, 80), 8), "cxr": ((256, 256), 50)}
REDUCED = {"brain": ((40, 56, 40), 2), "cxr": ((128, 128), 8)}  # half of each axis, smaller batch
# A method run (`--presets NAME`): its `method.name`, the preset and the overrides of its network.
# Reduced: batch 4, same size.
# - brain2d's own network and slices (80x112 axial slices of the 80x112x80 volumes, batch 32): the
#   synthetic-task default beside the autoencoder (Baur et al.'s study used 128x128 slices and
#   widths of its own, which lightwork does not copy: docs/method.md section 8) and its hybrid;
# - the diffusion methods and their hybrid: Behrendt et al.'s 96x96 slices, batch 32, unet_dim 128
#   with dim_mults [1, 2, 2] (docs/method.md section 8), beside the synthetic-task U-Net of those
#   widths at that size ("synthetic96", the U-Net half of hybrid_ddpm).
# METHOD_RUNS: entry -> (method.name, preset, overrides, slice shape).
BRAIN2D = ("brain2d", [], (80, 112))
DIFFUSION = ("brain2d", ["model.features=[128,256,256]"], (96, 96))
METHOD_RUNS = {name: (name, *BRAIN2D) for name in ("synthetic", "autoencoder", "hybrid")}
METHOD_RUNS.update({name: (name, *DIFFUSION) for name in ("ddpm", "pddpm", "cddpm", "hybrid_ddpm")})
METHOD_RUNS["synthetic96"] = ("synthetic", *DIFFUSION)
FULL.update({name: (run[3], 32) for name, run in METHOD_RUNS.items()})
REDUCED.update({name: (run[3], 4) for name, run in METHOD_RUNS.items()})


def run_config(name: str, overrides: list[str]):
    """The config of `--presets` entry `name` (a preset, or a run of METHOD_RUNS)."""
    if name not in METHOD_RUNS:
        return load_config(preset=name, overrides=overrides)
    method, preset, extra, _ = METHOD_RUNS[name]
    return load_config(preset=preset, overrides=[f"method.name={method}", *extra, *overrides])


def measure(
    preset: str,
    shape: tuple[int, ...],
    batch: int,
    precision: str,
    steps: int,
    warmup: int,
    device: str,
    threads: int,
    queue,
) -> None:
    """Run in a child process with `threads` torch CPU threads; puts one result row on `queue`."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = run_config(preset, [f"train.batch_size={batch}", f"train.mixed_precision={precision == 'bf16'}"])
    # Random batches have no orientation: a flip (the brain preset's) mirrors axis 0, the
    # left-right axis of RAS-prepared volumes, so that its cost is in the step time.
    flip_axis = 0 if config.train.flip_left_right else None
    method = get_method(config.method)
    trainer = FoldTrainer(
        build_model(config.model), config.train, torch.device(device), flip_axis=flip_axis, method=method
    )
    make = {
        "image": lambda: torch.randn(batch, 1, *shape),
        "label": lambda: torch.rand(batch, *shape),
        "healthy": lambda: torch.randn(batch, 1, *shape),
    }
    batches = [{column: make[column]() for column in method.training_columns} for _ in range(2)]
    val = [{"image": batches[0]["image"][:1], "label": batches[0]["label"][:1]}]
    trainer.run_epoch([batches[i % 2] for i in range(warmup)], val)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    requested: list[tuple[float, float]] = []  # (wall, process CPU) seconds

    def timed_batches():
        # A step ends when the loop asks for the next batch (train_step syncs on the loss value).
        for index in range(steps + 1):
            requested.append((time.perf_counter(), time.process_time()))
            if index < steps:
                yield batches[index % 2]

    result = trainer.run_epoch(timed_batches(), val)
    step, cpu = (statistics.median(b[k] - a[k] for a, b in zip(requested, requested[1:])) for k in (0, 1))
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    counter = FlopCounterMode(display=False)  # one more step, after the peak is read
    with counter:
        trainer.train_step(batches[0])
    flops = float(counter.get_total_flops())
    queue.put(
        {
            "preset": preset,
            "shape": "x".join(map(str, shape)),
            "batch": batch,
            "precision": precision,
            "device": device,
            "step_ms": step * 1e3,
            "cpu_ms": cpu * 1e3,
            "samples_s": batch / step,
            "peak_gib": peak,
            "data_wait": result.data_wait_share,
            "tflops": flops / step / 1e12,
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the paper's sizes and batches")
    parser.add_argument(
        "--precision", choices=["fp32", "bf16", "both"], default=None, help="default: both on GPU, fp32 on CPU"
    )
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--presets", default="brain,cxr")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, one per core)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precisions = {"fp32": ["fp32"], "bf16": ["bf16"], "both": ["bf16", "fp32"]}[
        args.precision or ("both" if device == "cuda" else "fp32")
    ]
    if device == "cpu" and "bf16" in precisions:
        parser.error("bf16 autocast is only used on CUDA; the CPU path is exact fp32")
    sizes = FULL if args.full else REDUCED
    context = multiprocessing.get_context("spawn")
    rows = []
    for preset in args.presets.split(","):
        shape, batch = sizes[preset]
        for precision in precisions:
            queue = context.Queue()
            child = context.Process(
                target=measure,
                args=(preset, shape, batch, precision, args.steps, args.warmup, device, torch.get_num_threads(), queue),
            )
            child.start()
            rows.append(queue.get())
            child.join()
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"training step on {name}; "
        f"sizes: {'paper (full)' if args.full else 'REDUCED (presets: half each axis, smaller batch; methods: b4)'}; "
        f"median of {args.steps} steps after {args.warmup} warm-up; peak memory = "
        f"{'max allocated on GPU' if device == 'cuda' else 'process max RSS'}; data from memory"
    )
    header = (
        f"{'preset':<12} {'shape':<10} {'batch':>5} {'prec':<5} {'step ms':>9} {'CPU ms':>9} {'samples/s':>10} "
        f"{'peak GiB':>9} {'data wait':>9} {'TFLOP/s':>8}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['preset']:<12} {r['shape']:<10} {r['batch']:>5} {r['precision']:<5} {r['step_ms']:>9.1f} "
            f"{r['cpu_ms']:>9.1f} "
            f"{r['samples_s']:>10.2f} {r['peak_gib']:>9.2f} {r['data_wait']:>9.2%} {r['tflops']:>8.3f}"
        )
    if len(precisions) == 2:
        for preset in args.presets.split(","):
            fast, slow = [r for r in rows if r["preset"] == preset]
            print(f"{preset}: bf16 / fp32 samples/s = {fast['samples_s'] / slow['samples_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
