"""One scan through a split's ensemble and back onto its own grid; the outputs and scores table.

Inputs (`find_inputs`): one image file (NIfTI, PNG/JPEG, a DICOM file), one DICOM series folder,
one case folder (an image beside its brain mask, named as `lightwork prepare` reads them), or a
folder / s3:// prefix of such cases (`lightwork.data.discover` rules). The 2D models of a run trained
on slices (`data.slice_axis`) take volumes: they predict every slice and the map is reassembled
on the model grid (`lightwork.inference.ensemble.model_scores`) before it goes back to the input's grid.

Outputs of a case under OUT (`CASE` is its id):
    volumes  CASE.nii.gz (float32 map) and CASE_mask.nii.gz (uint8, map >= threshold), on the
             input's own grid: its shape and affine (a DICOM series: its (column, row, slice) grid)
    2D       CASE.png (heat map), CASE_overlay.png (heat over the image) and CASE_mask.png (0/255),
             on the input's pixel grid
    OUT/scores.csv and OUT/scores.json: one row per case (SCORE_COLUMNS): the sample score (mean
             clipped score on the model grid, as evaluation scores samples), the slice scores'
             max and mean (3D: the model grid's axial slices, as evaluation's), the voxels at or above
             the threshold on the input grid and their volume in ml (3D), the threshold, the
             models, and for a failed case its error (the other cases go on).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass, field

import numpy as np

from lightwork.data import discover, readers, storage
from lightwork.data.discover import CaseSource
from lightwork.data.recipes import BrainRecipe
from lightwork.errors import UserError, failure_message
from lightwork.evaluation import outputs
from lightwork.evaluation.metrics import clip_scores, slice_labels_and_scores
from lightwork.inference.ensemble import Ensemble

SCORE_COLUMNS = (
    "case",
    "status",
    "sample_score",
    "slice_score_max",
    "slice_score_mean",
    "anomalous_voxels",
    "anomalous_ml",
    "threshold",
    "models",
    "source",
    "error",
)
SCORES_FILE = "scores"
STAGES = ("preprocess", "inference", "write")


@dataclass
class CaseResult:
    """One case's scores row (SCORE_COLUMNS) and seconds spent per stage (STAGES)."""

    row: dict
    seconds: dict = field(default_factory=dict)


def find_inputs(uri: str, volumes: bool, modality: str | None = None) -> list[CaseSource]:
    """The cases at `uri` (see the module docstring), sorted by id. `volumes`: the models are 3D
    (the DICOM files of a folder form one series). Raises ValueError when there is nothing there."""
    fs, path = storage.filesystem(uri)
    if not fs.isdir(path):
        if not fs.exists(path):
            raise UserError(f"{uri}: no such file or folder")
        name = str(uri).rstrip("/").rsplit("/", 1)[-1]
        suffix = readers.suffix_of(name)
        return [CaseSource(discover.case_id_of(name[: len(name) - len(suffix)] if suffix else name), str(uri))]
    files = [name for name in discover.list_files(uri) if readers.suffix_of(name) and not name.startswith(".")]
    top = [name for name in files if "/" not in name]
    name = discover.case_id_of(str(uri).rstrip("/").rsplit("/", 1)[-1])
    if top and len(top) == len(files):
        if volumes and all(readers.is_dicom_name(file) for file in top):
            return [CaseSource(name, str(uri))]  # one DICOM series
        if any(discover.role_of(_stem(file)) != "image" for file in top):
            return [_case_folder(uri, name, top, modality)]
    cases = discover.discover_cases(uri, modality, volumes=volumes)
    if not cases:
        raise UserError(f"{uri}: no images found" + (f" matching modality {modality!r}" if modality else ""))
    return cases


def _stem(name: str) -> str:
    return name[: len(name) - len(readers.suffix_of(name))]


def _case_folder(uri: str, case_id: str, names: list[str], modality: str | None) -> CaseSource:
    """One case folder: its image (by modality when it holds several) and its mask files."""
    images = [
        n
        for n in names
        if discover.role_of(_stem(n)) == "image" and discover.matches_modality(discover.name_tokens(_stem(n)), modality)
    ]
    roles = {role: [n for n in names if discover.role_of(_stem(n)) == role] for role in ("brain_mask", "lesion")}
    problem = None
    if len(images) != 1:
        problem = (
            f"several images ({', '.join(images)}): choose one with --modality"
            if images
            else f"no image{f' matching modality {modality!r}' if modality else ''} beside the mask files"
        )
    elif len(roles["brain_mask"]) > 1:
        problem = f"several brain mask files: {', '.join(roles['brain_mask'])}"
    join = lambda found: storage.join(uri, found[0]) if found else None  # noqa: E731
    return CaseSource(
        case_id, join(images) or str(uri), join(roles["brain_mask"]), join(roles["lesion"]), None, problem
    )


def _failed_row(source: CaseSource, ensemble: Ensemble, error: Exception) -> dict:
    message = failure_message(error, source.image)
    return {
        "case": source.case_id,
        "status": "failed",
        "sample_score": math.nan,
        "slice_score_max": math.nan,
        "slice_score_mean": math.nan,
        "anomalous_voxels": -1,
        "anomalous_ml": math.nan,
        "threshold": ensemble.threshold,
        "models": " ".join(ensemble.names),
        "source": source.image,
        "error": message,
    }


def check_input(image: readers.Loaded, brain_mask: readers.Loaded | None, ensemble: Ensemble) -> None:
    """Raise ValueError naming the file when the scan cannot go through the ensemble's recipe:
    the wrong number of dimensions, or no brain mask where the recipe needs one."""
    uri = image.provenance.get("uri", "<image>")
    dims = image.array.ndim
    if dims != ensemble.input_dims:
        kind = "a 3D volume" if dims == 3 else "a 2D image"
        raise UserError(
            f"{uri}: {kind} of shape {image.array.shape}, but the models of {ensemble.source} take "
            f"{ensemble.input_dims}D {'volumes' if ensemble.input_dims == 3 else 'images'} "
            f"(recipe {ensemble.recipe_name})"
        )
    recipe = ensemble.recipe
    if isinstance(recipe, BrainRecipe) and not recipe.skull_stripped and brain_mask is None:
        raise UserError(
            f"{uri}: the run's recipe (brain, skull on) needs a brain mask and none was found: put the "
            "scan in a case folder beside its brain mask (e.g. brainmask.nii.gz)"
        )


def predict_case(ensemble: Ensemble, source: CaseSource, out: str) -> CaseResult:
    """Prepare one case with the ensemble's recipe, predict, write its maps and mask under `out`
    (see the module docstring) and return its scores row; never raises for a bad case."""
    seconds = dict.fromkeys(STAGES, 0.0)
    clock = time.perf_counter()
    try:
        if source.problem:
            raise UserError(f"{source.image}: {source.problem}")
        image = readers.read_image(source.image)
        brain_mask = readers.read_image(source.brain_mask) if source.brain_mask else None
        check_input(image, brain_mask, ensemble)
        case = ensemble.recipe(source.case_id, image, brain_mask)
        seconds["preprocess"] = time.perf_counter() - clock
        prediction = ensemble.predict(case.image)
        seconds["inference"] = time.perf_counter() - clock - seconds["preprocess"]
        row = write_case(out, case, image, prediction, ensemble, source.image)
    except Exception as error:  # a bad case is a row with its error; the others go on
        row = _failed_row(source, ensemble, error)
    seconds["write"] = time.perf_counter() - clock - seconds["preprocess"] - seconds["inference"]
    return CaseResult(row, seconds)


def write_case(
    out: str, case, image: readers.Loaded, prediction: np.ndarray, ensemble: Ensemble, source_uri: str
) -> dict:
    """Write one case's map and mask on the input grid (module docstring); its scores row.

    case: the PreparedCase (model grid and source grid), image: the input as read, prediction:
    float32 [*S] on the model grid."""
    source_map = outputs.to_source_geometry(prediction, case)
    mask = source_map >= ensemble.threshold
    base = storage.join(out, case.case_id)
    clipped = clip_scores(prediction)
    slices = slice_labels_and_scores(clipped, np.zeros(clipped.shape, np.uint8))[1] if clipped.ndim == 3 else None
    if source_map.ndim == 3:
        storage.write_bytes(f"{base}.nii.gz", outputs.nifti_bytes(source_map.astype(np.float32), case.source_affine))
        storage.write_bytes(f"{base}_mask.nii.gz", outputs.nifti_bytes(mask.astype(np.uint8), case.source_affine))
        voxel_ml = abs(float(np.linalg.det(np.asarray(case.source_affine, float)[:3, :3]))) / 1000.0
    else:
        storage.write_bytes(f"{base}.png", outputs.png_bytes(outputs.heat_pixels(source_map)))
        storage.write_bytes(f"{base}_overlay.png", outputs.png_bytes(outputs.overlay_pixels(image.array, source_map)))
        storage.write_bytes(f"{base}_mask.png", outputs.png_bytes(mask.astype(np.uint8) * 255))
        voxel_ml = math.nan
    count = int(mask.sum())
    return {
        "case": case.case_id,
        "status": "ok",
        "sample_score": float(clipped.mean()),
        "slice_score_max": float(slices.max()) if slices is not None else math.nan,
        "slice_score_mean": float(slices.mean()) if slices is not None else math.nan,
        "anomalous_voxels": count,
        "anomalous_ml": count * voxel_ml,
        "threshold": ensemble.threshold,
        "models": " ".join(ensemble.names),
        "source": source_uri,
        "error": "",
    }


def predict_in_process(
    ensemble: Ensemble, sources: list[CaseSource], out: str, progress: bool = True
) -> list[CaseResult]:
    """`predict_case` for each case in this process (a progress bar when there are several)."""
    from tqdm import tqdm

    bar = tqdm(sources, desc="predict", unit="case", disable=not progress or len(sources) < 2)
    return [predict_case(ensemble, source, out) for source in bar]


def write_scores(out: str, rows: list[dict]) -> str:
    """OUT/scores.csv (NaN as empty cells) and OUT/scores.json (NaN as null), rows sorted by case;
    returns the CSV's URI."""
    rows = sorted(rows, key=lambda row: row["case"])
    clean = [
        {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in row.items()}
        for row in rows
    ]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SCORE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(clean)
    uri = storage.join(out, f"{SCORES_FILE}.csv")
    storage.write_bytes(uri, text.getvalue().encode())
    storage.write_bytes(storage.join(out, f"{SCORES_FILE}.json"), json.dumps(clean, indent=1).encode())
    return uri
