"""A generated case and the generator it is drawn from (one per cohort seed and case id)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lightwork.anomalies.seeding import stable_id


def case_generator(seed: int, case_id: str) -> np.random.Generator:
    """The generator of one phantom case: a function of the cohort seed and the case id only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), stable_id(case_id)]))


@dataclass
class PhantomCase:
    """A generated case.

    image: float32 [*S] intensities (>= 0; zero outside the body); foreground: bool [*S] (brain for
    volumes, body for chests); lesion: uint8 [*S] or None for healthy cases; affine: float64
    [4, 4] voxel -> world mm (for 2D the third axis is unused); spacing_mm: voxel size.
    """

    case_id: str
    image: np.ndarray
    foreground: np.ndarray
    lesion: np.ndarray | None
    affine: np.ndarray
    spacing_mm: float
