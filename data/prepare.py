"""Prepare one case: raw files -> recipe -> checks -> `DST/cases/<case_id>.npz` and its manifest row.

Pure library code (no Ray): `lightwork.distributed.prepare` runs `prepare_cases` (a list of
cases, one after another) as Ray tasks. A case that cannot be prepared never raises here: its
row says status "failed" and why, so that a run over many cases goes on.

Idempotence: the row's checksum is the sha256 of the raw files (role, file name and bytes, in a
fixed order). A case whose previous row is "ok" with the same checksum, recipe, recipe version
and options, and whose `.npz` still exists, is not prepared again.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightwork.data import readers, storage
from lightwork.data.cases import PreparedCase, save_case
from lightwork.data.discover import CaseSource
from lightwork.data.manifest import contiguous_folds, foreground_percentiles
from lightwork.data.recipes import RECIPE_VERSION, Recipe, recipe_options
from lightwork.errors import UserError, failure_message

CASES_FOLDER = "cases"


@dataclass
class CaseResult:
    """What preparing one case gave: its manifest row (fold still None), whether an earlier run's
    result was reused, and the seconds it took."""

    row: dict
    skipped: bool
    seconds: float


def array_uri(dst: str, case_id: str) -> str:
    return storage.join(dst, CASES_FOLDER, f"{case_id}.npz")


def check_destination(dst: str) -> None:
    """Raise UserError naming `dst` when prepared cases cannot be written there (a local path at or
    under a regular file, a folder without write permission, a bucket refusing writes); run before
    any case is prepared. Creates `dst` when it is missing."""
    if not storage.is_remote(dst):
        for folder in (dst, *map(str, Path(dst).parents)):
            if os.path.exists(folder):
                if not os.path.isdir(folder):
                    raise UserError(f"{dst}: cannot be the destination folder, {folder} is a file")
                break
    probe = storage.join(dst, ".lightwork-write-check")
    try:
        storage.write_bytes(probe, b"")
        fs, path = storage.filesystem(probe)
        fs.rm_file(path)
    except OSError as error:
        raise UserError(f"{dst}: cannot write the prepared cases there ({type(error).__name__}: {error})") from error


def checksum(files: dict[str, dict[str, bytes]]) -> str:
    """sha256 over role -> {uri: bytes}: roles in sorted order, files by base name (so a copy of the
    data elsewhere, e.g. in a bucket, has the same checksum)."""
    digest = hashlib.sha256()
    for role in sorted(files):
        for uri, payload in sorted(files[role].items(), key=lambda item: item[0].rstrip("/").rsplit("/", 1)[-1]):
            digest.update(f"{role}\0{uri.rstrip('/').rsplit('/', 1)[-1]}\0{len(payload)}\0".encode())
            digest.update(payload)
    return digest.hexdigest()


def validate(case: PreparedCase) -> None:
    """Raise ValueError naming the case when its arrays are unusable for training or evaluation."""
    name = f"case {case.case_id}"
    if case.image.ndim not in (3, 4) or case.image.dtype != np.float32:
        raise ValueError(
            f"{name}: prepared image must be float32 [C, *S] with 2 or 3 spatial dims, "
            f"got {case.image.dtype} {case.image.shape}"
        )
    if not np.isfinite(case.image).all():
        raise ValueError(f"{name}: NaN/inf values in the prepared image")
    if not case.foreground.any():
        raise ValueError(f"{name}: empty foreground after preprocessing")
    if case.lesion is not None and not np.isin(case.lesion, (0, 1)).all():
        raise ValueError(f"{name}: lesion mask is not binary after preprocessing")


def base_row(source: CaseSource, recipe: Recipe) -> dict:
    return {
        "case_id": source.case_id,
        "source_uri": source.image,
        "array_uri": None,
        "checksum": None,
        "shape": None,
        "spacing": None,
        "recipe": recipe.name,
        "recipe_version": RECIPE_VERSION,
        "recipe_options": recipe_options(recipe),
        "fold": None,
        "has_lesion": None,
        "image_label": source.image_label,
        "status": "failed",
        "error": None,
        "foreground_percentiles": None,
    }


def reusable(previous: dict | None, row: dict) -> bool:
    """True when `previous` is an ok row made from the same files with the same recipe, and its array exists."""
    if not previous or previous.get("status") != "ok":
        return False
    same = all(previous.get(key) == row[key] for key in ("checksum", "recipe", "recipe_version", "recipe_options"))
    return same and bool(previous.get("array_uri")) and storage.exists(previous["array_uri"])


def prepare_case(source: CaseSource, recipe: Recipe, dst: str, previous: dict | None = None) -> CaseResult:
    """Prepare one case into `dst` (see the module docstring); never raises for a bad case."""
    clock = time.perf_counter()
    row = base_row(source, recipe)
    try:
        if source.problem:
            raise ValueError(f"case {source.case_id}: {source.problem}")
        roles = {"image": source.image, "brain_mask": source.brain_mask, "lesion": source.lesion}
        files = {role: readers.fetch(uri) for role, uri in roles.items() if uri}
        row["checksum"] = checksum(files)
        if reusable(previous, row):
            return CaseResult(dict(previous, fold=None), True, time.perf_counter() - clock)
        loaded = {role: readers.read_image(roles[role], payload) for role, payload in files.items()}
        case = recipe(source.case_id, loaded["image"], loaded.get("brain_mask"), loaded.get("lesion"))
        validate(case)
        row["array_uri"] = array_uri(dst, source.case_id)
        save_case(row["array_uri"], case)
        spatial = case.image.shape[1:]
        row.update(
            shape=list(spatial),
            spacing=list(readers.voxel_spacing(case.affine, len(spatial))),
            has_lesion=case.lesion is not None,
            status="ok",
            foreground_percentiles=foreground_percentiles(case.image, case.foreground),
        )
        if case.lesion is not None:
            row["image_label"] = int(case.lesion.any())
    except Exception as error:  # a bad case is recorded, never fatal to the run
        row["error"] = failure_message(error, f"case {source.case_id}")
        row["array_uri"] = None
    return CaseResult(row, False, time.perf_counter() - clock)


def prepare_cases(sources: list[CaseSource], recipe: Recipe, dst: str, previous: list[dict | None]) -> list[CaseResult]:
    """`prepare_case` for each source in turn (`previous[i]` is the earlier row of `sources[i]`)."""
    return [prepare_case(source, recipe, dst, row) for source, row in zip(sources, previous)]


def with_folds(rows: list[dict]) -> list[dict]:
    """The rows with `fold` set: 5 contiguous folds of the sorted ok cases; None for failed ones."""
    folds = contiguous_folds([row["case_id"] for row in rows if row["status"] == "ok"])
    return [dict(row, fold=folds.get(row["case_id"])) for row in rows]
