"""Reference scores with no learning, scored like a model so the numbers mean something.

random      uniform [0, 1) noise from a numpy Generator seeded per case
intensity   the input intensity itself (channel 0, e.g. FLAIR), rescaled per case to [0, 1]
            between the 1st and 99.9th percentile of its foreground: hyperintense = anomalous
intensity_thresholded  the rescaled intensity where it is above INTENSITY_THRESHOLD, else 0
"""

from __future__ import annotations

import zlib

import numpy as np

INTENSITY_THRESHOLD = 0.9
BASELINES = ("random", "intensity", "intensity_thresholded")


def rescaled_intensity(image: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Channel 0 of image [C, *S] mapped to [0, 1] by its foreground 1st/99.9th percentiles; float32 [*S]."""
    channel = image[0].astype(np.float64)
    values = channel[foreground] if foreground.any() else channel.ravel()
    low, high = np.percentile(values, [1.0, 99.9])
    scaled = (channel - low) / max(high - low, 1e-8)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def baseline_scores(name: str, case_id: str, image: np.ndarray, foreground: np.ndarray, seed: int = 0) -> np.ndarray:
    """Scores float32 [*S] of baseline `name` for one case (deterministic in seed and case id)."""
    if name == "random":
        rng = np.random.default_rng([seed, zlib.crc32(case_id.encode())])
        return rng.random(image.shape[1:], dtype=np.float32)
    intensity = rescaled_intensity(image, foreground)
    if name == "intensity":
        return intensity
    if name == "intensity_thresholded":
        return np.where(intensity > INTENSITY_THRESHOLD, intensity, 0.0).astype(np.float32)
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
