"""A prepared dataset of smooth noise cases: the training path without real data or a prepare step
(tests and benchmarks of scale-out, where what is learnt does not matter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from lightwork.data import manifest
from lightwork.data.cases import PreparedCase, save_case


def write_noise_dataset(
    root: str | Path, shape: tuple[int, ...] = (24, 24), count: int = 10, seed: int = 0, recipe: str = "cxr"
) -> str:
    """Write `count` cases of smoothed Gaussian noise around 1.0 (float32 [1, *shape]; foreground:
    all but a 2-voxel border) under `root`, and their manifest (five contiguous folds, as `prepare`
    writes them, recorded as prepared by `recipe`); returns the manifest's URI."""
    rng = np.random.default_rng(seed)
    ids = [f"case{i:02d}" for i in range(count)]
    folds = manifest.contiguous_folds(ids)
    foreground = np.zeros(shape, bool)
    foreground[tuple(slice(2, -2) for _ in shape)] = True
    rows = []
    for case_id in ids:
        noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape), 2.0)
        image = (1.0 + 0.2 * noise / max(float(noise.std()), 1e-6)).astype(np.float32)[None]
        uri = str(Path(root) / f"{case_id}.npz")
        save_case(uri, PreparedCase(case_id, image, foreground))
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
                "fold": folds[case_id],
                "has_lesion": False,
                "status": "ok",
                "error": None,
            }
        )
    return manifest.write_manifest(str(root), rows)
