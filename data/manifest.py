"""The dataset manifest: one Parquet table per prepared dataset, one row per case.

Columns (pyarrow types):
    case_id        string      unique, sorted order defines the folds
    source_uri     string      where the raw case came from
    array_uri      string      the prepared `.npz` (see `lightwork.data.cases`); null if failed
    checksum       string      sha256 of the raw source file(s), for idempotent re-runs
    shape          list<int32> spatial shape on the model grid
    spacing        list<float> voxel spacing of the model grid, mm
    recipe         string      recipe name ("brain", "cxr", ...)
    recipe_version string
    recipe_options string      the recipe's options as canonical JSON (shape, spacing, ...)
    fold           int8        0-4: the NUM_FOLDS contiguous folds of the sorted usable case list; null if failed
    has_lesion     bool        a ground-truth lesion mask is stored in the case
    image_label    int8        1 anomalous, 0 normal, null unknown: from the lesion mask when one is
                               stored (any non-zero voxel), else from a label folder name (NORMAL,
                               PNEUMONIA, see `lightwork.data.discover`)
    status         string      "ok" or "failed"
    error          string      why a failed case failed; null when ok
    foreground_percentiles list<float>  the prepared image's (channel mean's) FOREGROUND_PERCENTILES
                               over its foreground, in the recipe's intensity units; null if failed
                               (and in manifests written before the column existed)

`intensity_mismatch` compares two sets' percentiles (a test set against the training set).
"""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lightwork.anomalies.registry import TASK_COUNT
from lightwork.data import storage

SCHEMA = pa.schema(
    [
        ("case_id", pa.string()),
        ("source_uri", pa.string()),
        ("array_uri", pa.string()),
        ("checksum", pa.string()),
        ("shape", pa.list_(pa.int32())),
        ("spacing", pa.list_(pa.float32())),
        ("recipe", pa.string()),
        ("recipe_version", pa.string()),
        ("recipe_options", pa.string()),
        ("fold", pa.int8()),
        ("has_lesion", pa.bool_()),
        ("image_label", pa.int8()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("foreground_percentiles", pa.list_(pa.float32())),
    ]
)
MANIFEST_NAME = "manifest.parquet"
NUM_FOLDS = TASK_COUNT  # one fold per task: fold i holds the images of task i (`lightwork.training.folds`)
FOREGROUND_PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
# Largest difference between two sets' median foreground percentiles that counts as the same intensity
# convention, in the recipe's units (z-scored brains: standard deviations; X-rays: of their [-1, 1]).
INTENSITY_TOLERANCE = 0.5


def contiguous_folds(case_ids: list[str], num_folds: int = NUM_FOLDS) -> dict[str, int]:
    """Fold of each case: the sorted list cut into `num_folds` contiguous, near-equal parts."""
    ordered = sorted(case_ids)
    n = len(ordered)
    return {case_id: min(index * num_folds // max(n, 1), num_folds - 1) for index, case_id in enumerate(ordered)}


def manifest_uri(dataset_uri: str) -> str:
    """The manifest of a prepared dataset folder, or `dataset_uri` itself if it names a file."""
    return dataset_uri if str(dataset_uri).endswith(".parquet") else storage.join(dataset_uri, MANIFEST_NAME)


def write_manifest(dataset_uri: str, rows: list[dict]) -> str:
    """Write the rows (dicts with SCHEMA's columns) sorted by case id; returns the manifest URI. A
    local `array_uri` is written absolute (`storage.normalise`: a relative one is the caller's
    working directory's), so that Ray workers and trial drivers, in other directories, find it."""
    rows = [{**row, "array_uri": row.get("array_uri") and storage.normalise(row["array_uri"])} for row in rows]
    table = pa.Table.from_pylist(sorted(rows, key=lambda row: row["case_id"]), schema=SCHEMA)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    uri = manifest_uri(dataset_uri)
    storage.write_bytes(uri, buffer.getvalue())
    return uri


def read_manifest(dataset_uri: str) -> list[dict]:
    """All rows of a manifest, sorted by case id. A relative local `array_uri` (a manifest written by
    hand or by another tool) is read as relative to the manifest's folder."""
    uri = manifest_uri(dataset_uri)
    try:
        # One thread: pyarrow 26 reading a Python file object with its thread pool left a thread
        # that aborted the interpreter at exit ("terminate called without an active exception",
        # 9 of 12 short `lightwork train` runs here), after a clean exit status had been decided.
        table = pq.read_table(io.BytesIO(storage.read_bytes(uri)), use_threads=False)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{uri}: no manifest there (run `lightwork prepare` first)") from error
    folder = uri.rsplit("/", 1)[0] if storage.is_remote(uri) else os.path.dirname(storage.normalise(uri))
    rows = table.to_pylist()
    for row in rows:
        case = row["array_uri"]
        if case and not storage.is_remote(case) and not os.path.isabs(os.path.expanduser(case)):
            row["array_uri"] = storage.join(folder, case)
    return sorted(rows, key=lambda row: row["case_id"])


def usable(rows: list[dict]) -> list[dict]:
    """The rows whose case was prepared successfully."""
    return [row for row in rows if row["status"] == "ok"]


def healthy(rows: list[dict]) -> list[dict]:
    """The usable rows a model may train on: no lesion mask and not labelled anomalous (image_label 1);
    an unknown label (null) counts as healthy."""
    return [row for row in usable(rows) if not row["has_lesion"] and row.get("image_label") != 1]


def foreground_percentiles(image: np.ndarray, foreground: np.ndarray) -> list[float]:
    """FOREGROUND_PERCENTILES of a prepared image [C, *S] (its channel mean) over foreground [*S] bool."""
    values = image.mean(axis=0)[foreground]
    return [float(value) for value in np.percentile(values, FOREGROUND_PERCENTILES)]


def intensity_mismatch(reference: list[dict], rows: list[dict], tolerance: float = INTENSITY_TOLERANCE) -> str | None:
    """How the usable `rows`' intensities differ from the `reference` rows' (e.g. a test set's from
    the training set's), or None when they agree: the median over each set's cases of every
    foreground percentile, compared; a difference above `tolerance` at any percentile is named.
    None too when either set has no recorded percentiles (manifests older than the column)."""
    medians = []
    for group in (reference, rows):
        recorded = [row["foreground_percentiles"] for row in usable(group) if row.get("foreground_percentiles")]
        if not recorded:
            return None
        medians.append(np.median(np.asarray(recorded, dtype=np.float64), axis=0))
    differences = medians[1] - medians[0]
    if np.abs(differences).max() <= tolerance:
        return None
    worst = int(np.abs(differences).argmax())
    return (
        f"foreground intensity percentiles differ from the training set's by up to {differences[worst]:+.2f} "
        f"(at percentile {FOREGROUND_PERCENTILES[worst]}: {medians[1][worst]:.2f} against {medians[0][worst]:.2f}; "
        f"tolerance {tolerance}): another contrast, scanner or preprocessing, which the model may score as anomalous"
    )
