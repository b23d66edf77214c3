"""Deterministic generators: every random draw in lightwork comes from one of these.

A sample's generator depends only on (run seed, epoch, case id, task id), never on which actor
or process draws it, so a run is reproducible whatever the number of synthesis processes.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_id(text: str) -> int:
    """A 64-bit integer from a string, identical on every machine and Python process.

    Python's built-in `hash` of a string is salted per process, so it cannot seed anything.
    """
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def sample_generator(run_seed: int, epoch: int, case_id: str, task_id: int) -> np.random.Generator:
    """The generator for one synthetic sample.

    Args:
        run_seed: the run's seed (non-negative int).
        epoch: the epoch (or validation round) index, >= 0.
        case_id: the case's identifier from the manifest.
        task_id: the anomaly task id (0-4), or -1 for draws that belong to no task.
    """
    if run_seed < 0 or epoch < 0:
        raise ValueError(f"run_seed and epoch must be non-negative, got {run_seed} and {epoch}")
    entropy = [int(run_seed), int(epoch), stable_id(case_id), int(task_id) + 1]
    return np.random.default_rng(np.random.SeedSequence(entropy))
