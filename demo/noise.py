"""A prepared dataset of smooth noise cases: the training path without real data or a prepare step
(tests and benchmarks of the stream, training and scale-out, where what is learnt does not matter)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lightwork.data import manifest
from lightwork.data.cases import PreparedCase, save_case
from lightwork.demo import smooth_noise


def write_noise_dataset(
    root: str | Path,
    shape: tuple[int, ...] = (24, 24),
    count: int = 10,
    seed: int = 0,
    recipe: str = "cxr",
    channels: int = 1,
    recipe_options: dict | None = None,
) -> str:
    """Write `count` cases of smoothed Gaussian noise (sigma 2 voxels) around 1.0 (std 0.2; float32
    [channels, *shape]; foreground: all but a 2-voxel border) under `root`, and their manifest (five
    contiguous folds, as `prepare` writes them, recorded as prepared by `recipe` with
    `recipe_options`); returns the manifest's URI."""
    rng = np.random.default_rng(seed)
    ids = [f"case{i:02d}" for i in range(count)]
    folds = manifest.contiguous_folds(ids)
    foreground = np.zeros(shape, bool)
    foreground[tuple(slice(2, -2) for _ in shape)] = True
    rows = []
    for case_id in ids:
        image = np.stack([smooth_noise(rng, shape, 2.0) for _ in range(channels)]) * 0.2 + 1.0
        uri = f"{root}/{case_id}.npz"
        save_case(uri, PreparedCase(case_id, image.astype(np.float32), foreground))
        rows.append(
            {
                "case_id": case_id,
                "source_uri": uri,
                "array_uri": uri,
                "checksum": case_id,
                "shape": list(shape),
                "spacing": [1.0] * len(shape),
                "recipe": recipe,
                "recipe_version": "1",
                "recipe_options": None if recipe_options is None else json.dumps(recipe_options),
                "fold": folds[case_id],
                "has_lesion": False,
                "status": "ok",
                "error": None,
            }
        )
    return manifest.write_manifest(str(root), rows)
