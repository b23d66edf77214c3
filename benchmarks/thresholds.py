"""Which rule for the mask's score threshold, set on synthetic validation samples only, gives real
lesions a good mask: each rule's threshold and the Dice it gives a trained run's 1/4 ensemble on
the run's test cases, beside the oracle threshold's (the best any threshold could do).

    lightwork pipeline --out runs/demo                          # the README's demo, or any run
    python benchmarks/thresholds.py runs/demo                   # (a pipeline's run folder)

Per fold model (its kept checkpoint), its validation samples are drawn again as the training
stream draws them: the run seed, the fold's held-out tasks and validation folds, versions 0 to
data.val_per_case - 1, slices of the run's slice axis (`lightwork.synthesis.samples.Synthesiser`).
Rules, as `FoldTrainer.validate` applies them: `dice`, the threshold maximising Dice against the
synthetic anomaly masks (label > 0; `train.threshold_fpr` null), and `fpr R`, the lowest at which
at most a share R of the normal voxels (label 0, the healthy images included) score at or above it
(`train.threshold_fpr` R). Each fold's threshold is a bin start of 0.01 (`training.loop.DICE_BINS`),
the ensemble's the mean of its folds' (as `lightwork evaluate` does), and its Dice is pooled over
all voxels of the test cases.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

from lightwork.config import load_config
from lightwork.data import manifest
from lightwork.data.cases import load_case
from lightwork.data.slices import training_samples
from lightwork.inference.ensemble import model_scores
from lightwork.models import load_model
from lightwork.synthesis.samples import Synthesiser
from lightwork.training import runs
from lightwork.training.loop import DICE_BINS, FoldTrainer

RATES = (0.01, 0.001, 0.0001)
STARTS = np.arange(DICE_BINS) / DICE_BINS


def pooled_dice(scores: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    """Dice of `scores >= threshold` against the boolean `truth`, both flat over every voxel."""
    flagged = scores >= threshold
    return float(2 * np.sum(flagged & truth) / max(flagged.sum() + truth.sum(), 1))


def fold_thresholds(network, config, record, samples, external: list[str]) -> dict[str, float]:
    """The threshold of each rule on the synthetic validation samples of fold `record`, chosen by
    the library's own validation (`FoldTrainer.validate`, with each rule's `train.threshold_fpr`)."""
    refs = samples.refs(record.val_folds)
    synthesiser = Synthesiser(
        config.seed, record.val_tasks, refs, external, config.task_max_push, slice_axis=config.data.slice_axis
    )
    batches = []
    for ref in refs:
        for version in range(config.data.val_per_case):
            try:
                sample = synthesiser.validation_sample(ref.case_id, ref.array_uri, version, ref.slice)
            except ValueError:
                continue  # a task that cannot place an anomaly on this sample, as in the stream
            batches.append({key: getattr(sample, key)[None] for key in ("image", "label", "healthy")})
    chosen = {}
    for rule, rate in (("dice", None), *((f"fpr {rate:g}", rate) for rate in RATES)):
        settings = dataclasses.replace(config.train, threshold_fpr=rate)
        trainer = FoldTrainer(network, settings, torch.device("cpu"), flip_axis=config.data.left_right_axis)
        chosen[rule] = trainer.validate(batches).dice_threshold
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a `lightwork pipeline` run folder (train/, prepared/healthy, prepared/test)")
    parser.add_argument("--split", default="1/4")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    run = Path(args.run)
    if not (run / "train" / runs.CONFIG_FILE).is_file():
        print(f"{run}: not a pipeline run folder (no train/{runs.CONFIG_FILE})", file=sys.stderr)
        return 2
    config = load_config(str(run / "train" / runs.CONFIG_FILE))
    rows = manifest.usable(manifest.read_manifest(config.data.manifest))
    samples = training_samples(rows, config.data.slice_axis, config.data.min_slice_foreground)
    external = []
    if config.data.external_manifest:
        external = [row["array_uri"] for row in manifest.usable(manifest.read_manifest(config.data.external_manifest))]
    test_rows = manifest.usable(manifest.read_manifest(str(run / "prepared" / "test")))
    test = [load_case(row["array_uri"]) for row in test_rows]
    truth = np.concatenate([(case.lesion != 0).ravel() for case in test])
    folds = [record for record in runs.read_trained_folds(str(run / "train")) if record.split == args.split]
    thresholds, maps = [], []
    for record in folds:
        network = load_model(record.best_checkpoint)
        thresholds.append(fold_thresholds(network, config, record, samples, external))
        maps.append([np.clip(model_scores(network, case.image, config.data.slice_axis), 0, 1) for case in test])
        print(f"  {record.name}: " + ", ".join(f"{rule} {value:.2f}" for rule, value in thresholds[-1].items()))
    ensemble = np.concatenate([np.mean([fold[index] for fold in maps], axis=0).ravel() for index in range(len(test))])
    oracle = max(STARTS, key=lambda start: pooled_dice(ensemble, truth, start))
    print(f"\n{run}: split {args.split}, {len(folds)} fold models, {len(test)} test cases; Dice %")
    print(f"{'rule':<12} {'threshold':>9} {'Dice':>6}")
    for rule in thresholds[0]:
        threshold = float(np.mean([chosen[rule] for chosen in thresholds]))
        print(f"{rule:<12} {threshold:>9.3f} {100 * pooled_dice(ensemble, truth, threshold):>6.1f}")
    print(f"{'oracle':<12} {oracle:>9.3f} {100 * pooled_dice(ensemble, truth, oracle):>6.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
