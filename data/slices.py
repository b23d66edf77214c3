"""2D-slice training of 3D volumes: which slices are samples, and volumes cut into slices and back.

A run with `data.slice_axis` = a (0, 1 or 2) trains a 2D model on slices of its prepared 3D cases:
slice k of a case is `image[:, ..., k, ...]` (k on spatial axis a) with its foreground, float32
[C, *S'] and bool [*S'], S' being S without axis a.

Selection (`eligible_slices`): a slice is a sample when at least `data.min_slice_foreground` of its
pixels (and at least one) are foreground; with `data.lesion_free_slices`, a lesion case (a
manifest row with a lesion mask) adds its eligible slices that hold no lesion voxel; without it
lesion cases are left out, as they are when training on whole volumes (`training_rows`).

Each slice is its own sample: its id `slice_sample_id(case_id, a, k)` = `"case[a:k]"` seeds its
draws (`lightwork.anomalies.seeding.sample_generator`), so slices of one case never share draws.

Prediction covers every slice, eligible or not: `volume_slices` stacks a volume's slices as a batch
[N, C, *S'] and `reassemble` puts the model's [N, *S'] scores back into [*S]
(`lightwork.inference.ensemble.model_scores` runs the model over them). Pure numpy; the masks are
read with `lightwork.data.cases.load_masks` (no image decompressed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from lightwork.data import manifest
from lightwork.data.cases import load_masks

log = logging.getLogger(__name__)

WHOLE = -1  # the slice index of a sample that is a whole case
# Prepared 3D arrays are RAS (`lightwork.data.readers`): spatial axis 0 runs right (x), 1 anterior
# (y), 2 superior (z). AXIS_VIEWS names the slices taken along each axis; axial slices, the ones
# evaluation's slice level scores and the 2D presets train on, are those along axis 2.
AXIS_VIEWS = ("sagittal", "coronal", "axial")
AXIAL_AXIS = AXIS_VIEWS.index("axial")


class SampleRef(NamedTuple):
    """One sample source: a prepared case, or slice `slice` of it (WHOLE: the whole case)."""

    case_id: str
    array_uri: str
    slice: int = WHOLE


def slice_sample_id(case_id: str, axis: int, index: int) -> str:
    """The sample id of slice `index` along spatial axis `axis` of a case: `"case[axis:index]"`."""
    return f"{case_id}[{int(axis)}:{int(index)}]"


def slice_shape(shape: Sequence[int], axis: int) -> tuple[int, ...]:
    """The spatial shape of a slice along `axis` of a volume of spatial `shape`."""
    return tuple(int(n) for d, n in enumerate(shape) if d != axis)


def foreground_fractions(foreground: np.ndarray, axis: int) -> np.ndarray:
    """The foreground fraction of every slice along `axis`: bool [*S] -> float64 [S_axis] in [0, 1]."""
    moved = np.moveaxis(np.asarray(foreground, bool), axis, 0)
    return moved.reshape(moved.shape[0], -1).mean(axis=1, dtype=np.float64)


def eligible_slices(
    foreground: np.ndarray, axis: int, min_foreground: float, lesion: np.ndarray | None = None
) -> np.ndarray:
    """The indices (int64 [K], ascending) of the slices along `axis` of a volume that are samples:
    foreground on at least `min_foreground` of the slice's pixels and on at least one pixel, and,
    when a `lesion` mask ([*S], any dtype; non-zero = lesion) is given, no lesion voxel in the slice."""
    if foreground.ndim != 3:
        raise ValueError(f"slices are cut from 3D volumes, got a foreground of shape {foreground.shape}")
    fractions = foreground_fractions(foreground, axis)
    keep = (fractions >= min_foreground) & (fractions > 0)
    if lesion is not None:
        if lesion.shape != foreground.shape:
            raise ValueError(f"lesion shape {lesion.shape} != foreground shape {foreground.shape}")
        lesion_voxels = np.moveaxis(np.asarray(lesion) != 0, axis, 0).reshape(len(fractions), -1).any(axis=1)
        keep &= ~lesion_voxels
    return np.flatnonzero(keep).astype(np.int64)


def take_slice(image: np.ndarray, foreground: np.ndarray, axis: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice `index` along spatial `axis` of a case: (image [C, *S'] float32, foreground [*S'] bool),
    both contiguous copies."""
    if not 0 <= index < foreground.shape[axis]:
        raise ValueError(f"slice {index} is outside a volume of {foreground.shape[axis]} slices along axis {axis}")
    return (
        np.ascontiguousarray(np.take(image, index, axis=1 + axis), dtype=np.float32),
        np.ascontiguousarray(np.take(foreground, index, axis=axis), dtype=bool),
    )


def volume_slices(image: np.ndarray, axis: int) -> np.ndarray:
    """Every slice along spatial `axis` of a volume as one batch: [C, *S] -> [S_axis, C, *S'] (a view)."""
    if image.ndim != 4:
        raise ValueError(f"slices are cut from 3D volumes [C, *S], got an image of shape {image.shape}")
    return np.moveaxis(image, 1 + axis, 0)


def reassemble(slices: np.ndarray, axis: int) -> np.ndarray:
    """The volume of per-slice maps: [S_axis, *S'] -> [*S] (slice k of the result along `axis` is
    `slices[k]`), contiguous; the inverse of `volume_slices` on a one-channel map."""
    if slices.ndim != 3:
        raise ValueError(f"reassembly takes slice maps [N, H, W], got shape {slices.shape}")
    return np.ascontiguousarray(np.moveaxis(slices, 0, axis))


def training_rows(rows: list[dict], lesion_free_slices: bool) -> list[dict]:
    """The usable manifest rows a model learns from: the healthy ones (`manifest.healthy`), plus,
    with `lesion_free_slices`, every usable row with a lesion mask (its lesion-free slices)."""
    healthy = manifest.healthy(rows)
    if not lesion_free_slices:
        return healthy
    chosen = {row["case_id"] for row in healthy}
    return [row for row in manifest.usable(rows) if row["case_id"] in chosen or row["has_lesion"]]


@dataclass
class TrainingSamples:
    """The samples of a run's image sets by fold (`training_samples`), in case order then slice order.

    by_fold: fold -> SampleRefs. axis: the slice axis (None: whole cases). slices_seen: slices of the
    cases read; lesion_case_slices: samples that came from lesion cases; unreadable: one line per
    case whose masks could not be read (left out).
    """

    by_fold: dict[int, list[SampleRef]]
    axis: int | None = None
    cases: int = 0
    slices_seen: int = 0
    lesion_cases: int = 0
    lesion_case_slices: int = 0
    unreadable: list[str] = field(default_factory=list)

    def refs(self, folds: Sequence[int]) -> list[SampleRef]:
        """The samples of `folds`, in case order (the folds are contiguous in case order)."""
        return [ref for fold in sorted(folds) for ref in self.by_fold.get(fold, [])]

    def count(self, folds: Sequence[int]) -> int:
        return sum(len(self.by_fold.get(fold, [])) for fold in folds)

    def fold_counts(self) -> dict[int, int]:
        return {fold: len(refs) for fold, refs in self.by_fold.items()}

    def describe(self, min_foreground: float) -> str:
        """One line on what slicing selected (for the console and logs)."""
        samples = sum(self.fold_counts().values())
        line = (
            f"2D slices along axis {self.axis}: {samples} of {self.slices_seen} slices of {self.cases} cases "
            f"(slices with foreground on less than {min_foreground:.0%} of their pixels left out)"
        )
        if self.lesion_cases:
            line += f"; {self.lesion_case_slices} lesion-free slices of {self.lesion_cases} lesion cases"
        if self.unreadable:
            line += f"; {len(self.unreadable)} unreadable cases left out ({'; '.join(self.unreadable)})"
        return line


def training_samples(
    rows: list[dict], axis: int | None, min_foreground: float = 0.1, lesion_free_slices: bool = False
) -> TrainingSamples:
    """The samples of the usable manifest `rows` (see `training_rows`) by fold.

    `axis` None: one SampleRef per case (no file read). Else the eligible slices of each case
    (`eligible_slices`; a lesion case's lesion voxels exclude their slices), read from its masks;
    a case whose masks cannot be read is logged and left out (one bad volume never stops a run).
    """
    chosen = [row for row in training_rows(rows, lesion_free_slices) if row.get("fold") is not None]
    samples = TrainingSamples({}, axis)
    for row in chosen:
        refs = samples.by_fold.setdefault(int(row["fold"]), [])
        if axis is None:
            refs.append(SampleRef(row["case_id"], row["array_uri"]))
            samples.cases += 1
            continue
        try:
            foreground, lesion = load_masks(row["array_uri"])
            if row["has_lesion"] and lesion is None:
                raise ValueError(f"{row['array_uri']}: the manifest says it has a lesion mask, the case has none")
            indices = eligible_slices(foreground, axis, min_foreground, lesion if row["has_lesion"] else None)
        except ValueError as error:
            log.warning("case %s left out of slicing: %s", row["case_id"], error)
            samples.unreadable.append(f"{row['case_id']}: {error}")
            continue
        samples.cases += 1
        samples.slices_seen += foreground.shape[axis]
        if row["has_lesion"]:
            samples.lesion_cases += 1
            samples.lesion_case_slices += len(indices)
        refs.extend(SampleRef(row["case_id"], row["array_uri"], int(index)) for index in indices)
    return samples


def describe_run(axis: int | None, min_foreground: float, lesion_free_slices: bool) -> str | None:
    """What a report says about a run trained on slices (None for a run on whole cases)."""
    if axis is None:
        return None
    return (
        f"2D models trained on slices along axis {axis} of the 3D volumes (slices with foreground on less than "
        f"{min_foreground:.0%} of their pixels left out; lesion-free slices of lesion cases as extra healthy "
        f"training data: {'on' if lesion_free_slices else 'off'}); every volume was predicted slice by slice "
        "and reassembled."
    )
