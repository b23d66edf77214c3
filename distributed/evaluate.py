"""Ray Data batch inference: every fold model of a run over the test cases of a manifest.

Ray Data tasks (`TaskPoolStrategy`, up to `workers` at once, one case each); each worker process
loads every fold model once (`process_cached`, `lightwork.models.load_model`), then for each case
runs whole-image inference with each model (slice by slice for the 2D models of a run
trained on slices, `lightwork.inference.ensemble.model_scores`), stores each raw output and, per split, the
ensemble (mean of the raw outputs of the split's fold models), on the model grid and in the
input's geometry (see `lightwork.evaluation.outputs`). Tasks take a GPU fraction when the cluster
has GPUs, CPU otherwise; every stage asks for a fraction of a CPU so that inference cannot starve
other stages (see shared/ray-notes.md). Tasks, not an actor pool: Ray (2.60) restarts a lost task
on another process, while a Ray Data actor pool's restarts depend on constructor arguments it keeps
in the object store, which it warns about on the console (ray-project/ray#53727).

Several runs (`evaluate_run` of several: an ablation across methods, a run per method) are predicted one
after the other on the same cluster, each into `predictions/{run name}`, and scored in one report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import ray

from lightwork.config import MethodSection, RunConfig, load_config
from lightwork.data import storage
from lightwork.data.cases import load_case
from lightwork.data.slices import describe_run
from lightwork.distributed.cluster import connected
from lightwork.errors import UserError, failure_message
from lightwork.evaluation import outputs
from lightwork.inference.ensemble import model_scores, validation_threshold
from lightwork.methods import get_method
from lightwork.training import runs
from lightwork.training.folds import ENSEMBLE, model_key

TASK_CPUS = 0.25
# This worker process's loaded models: (what, their sources) -> the models; only the last kept.
_LOADED: dict[tuple, object] = {}


def process_cached(key: tuple, load: Callable[[], object]) -> object:
    """`load()`, once per Ray worker process for `key`: Ray Data tasks run in pooled worker
    processes that outlive a task (`max_calls=0`, GPU tasks included), so a process loads a run's
    models for its first case only. The previous key's value is dropped."""
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = load()
    return _LOADED[key]


def inference_options(workers: int) -> dict:
    """map_batches options of inference tasks: a CPU share, the GPU share of each of `workers`
    when the cluster has GPUs (`task_gpus`), and reused worker processes (Ray makes a GPU task's
    process exit after one call unless told, which would load the models again per case)."""
    return {
        "compute": ray.data.TaskPoolStrategy(size=workers),
        "num_cpus": TASK_CPUS,
        "num_gpus": task_gpus(workers),
        "max_calls": 0,
    }


@dataclass(frozen=True)
class FoldModel:
    """One trained fold model of a run: its split, name, best checkpoint URI and, when training
    recorded one (`val_dice_threshold` in folds.json), the score threshold chosen on its synthetic
    validation samples (`train.threshold_fpr`); `slice_axis`: the run's data.slice_axis (2D models of slices);
    `method`, `seed`: the run's method section and seed, which make the model's map."""

    split: str
    name: str
    checkpoint: str
    val_dice_threshold: float | None = None
    slice_axis: int | None = None
    method: MethodSection = field(default_factory=MethodSection)
    seed: int = 0

    @property
    def key(self) -> str:
        return model_key(self.split, self.name)


def run_fold_models(run_uri: str) -> list[FoldModel]:
    """The fold models of training run `run_uri` that have a best checkpoint, in file order
    (UserError when it is not a run or has none; see `lightwork.training.runs.read_trained_folds`)."""
    return fold_models(runs.read_trained_folds(run_uri), _run_config(run_uri))


def fold_models(records: list[runs.FoldRecord], config: RunConfig | None) -> list[FoldModel]:
    """The FoldModels of trained fold `records` of a run whose saved RunConfig is `config` (None:
    a run folder without one, whose models see whole cases)."""
    axis = config.data.slice_axis if config is not None else None
    method, seed = (config.method, config.seed) if config is not None else (MethodSection(), 0)
    return [
        FoldModel(record.split, record.name, record.best_checkpoint, record.val_dice_threshold, axis, method, seed)
        for record in records
    ]


def _run_config(run_uri: str) -> RunConfig | None:
    """The saved RunConfig of a run (None for a run folder without one)."""
    uri = storage.join(run_uri, runs.CONFIG_FILE)
    return load_config(uri) if storage.exists(uri) else None


def predict_fold_models(batch: dict[str, np.ndarray], models: list[FoldModel], out_uri: str) -> dict[str, list]:
    """Ray Data task: every fold model (loaded once per process, `process_cached`) over a batch of cases.

    Batch in: {"case_id": str[B], "array_uri": str[B]}. Batch out: one row per (case, model) with
    columns case_id, model (storage key), uri (model-grid .npy), error (empty when it worked).
    A case that fails (unreadable, wrong channels) yields an error row and the run goes on.
    """
    networks = process_cached(("fold models", tuple(model.checkpoint for model in models)), lambda: _load(models))
    rows: dict[str, list] = {"case_id": [], "model": [], "uri": [], "error": []}
    for case_id, array_uri in zip(batch["case_id"], batch["array_uri"]):
        try:
            case = load_case(str(array_uri))
            per_split: dict[str, list[np.ndarray]] = {}
            for model, network in zip(models, networks):
                prediction = model_scores(
                    network, case.image, model.slice_axis, method=get_method(model.method), seed=model.seed
                )
                per_split.setdefault(model.split, []).append(prediction)
                rows_add(rows, case_id, model.key, outputs.write_prediction(out_uri, model.key, case, prediction))
            for split, predictions in per_split.items():
                key = model_key(split, ENSEMBLE)
                mean = np.mean(predictions, axis=0)
                rows_add(rows, case_id, key, outputs.write_prediction(out_uri, key, case, mean))
        except Exception as error:  # one bad case never kills the run
            rows_add(rows, case_id, "", "", failure_message(error, f"{case_id} ({array_uri})", str(array_uri)))
    return rows


def _load(models: list[FoldModel]) -> list:
    """The fold models' networks, in eval mode, on this process's GPU when it has one."""
    import torch

    from lightwork.models import load_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return [load_model(model.checkpoint).to(device).eval() for model in models]


def rows_add(rows: dict[str, list], case_id: str, model: str, uri: str, error: str = "") -> None:
    rows["case_id"].append(str(case_id))
    rows["model"].append(model)
    rows["uri"].append(uri)
    rows["error"].append(error)


def task_gpus(workers: int) -> float:
    """The GPU share of each of `workers` inference tasks at once: the cluster's GPUs spread over
    them (at most one each), 0 on a CPU-only cluster."""
    gpus = ray.cluster_resources().get("GPU", 0)
    return min(1.0, gpus / workers) if gpus else 0


def predict_cases(
    models: list[FoldModel],
    cases: list[dict],
    out_uri: str,
    workers: int = 1,
    batch_size: int = 1,
    label: str = "",
) -> list[dict]:
    """Predict every case (manifest rows with case_id, array_uri) with every model via Ray Data.

    Returns the output rows (case_id, model, uri, error); prints a progress line about every
    tenth of the cases, led by `label` (the run's name when several are predicted). Needs a
    connected Ray cluster.
    """
    dataset = ray.data.from_items(
        [{"case_id": c["case_id"], "array_uri": c["array_uri"]} for c in cases],
        override_num_blocks=max(1, min(len(cases), 4 * workers)),
    )
    predicted = dataset.map_batches(
        predict_fold_models,
        fn_kwargs={"models": models, "out_uri": out_uri},
        batch_size=batch_size,
        **inference_options(workers),
    )
    rows, seen, step = [], set(), max(1, len(cases) // 10)
    for row in predicted.iter_rows():
        rows.append(row)
        if row["case_id"] not in seen:
            seen.add(row["case_id"])
            if len(seen) % step == 0 or len(seen) == len(cases):
                print(f"{label}{' ' if label else ''}predicting: {len(seen)} of {len(cases)} cases", flush=True)
    return rows


def prediction_table(rows: list[dict]) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Output rows -> (model key -> case_id -> grid URI, error messages)."""
    uris: dict[str, dict[str, str]] = {}
    errors = []
    for row in rows:
        if row["error"]:
            errors.append(row["error"])
        else:
            uris.setdefault(row["model"], {})[row["case_id"]] = row["uri"]
    return uris, errors


@dataclass(frozen=True)
class _TrainedRun:
    """A training run to evaluate: its folder `uri`, its `name` (the folder's, which the report and
    the predictions' folder give it beside other runs), its trained fold `records`, saved `config`
    (None for a run folder without one) and their `models`."""

    uri: str
    name: str
    records: list[runs.FoldRecord]
    config: RunConfig | None
    models: list[FoldModel]


def _trained_run(uri: str) -> _TrainedRun:
    records, config = runs.read_trained_folds(uri), _run_config(uri)
    return _TrainedRun(uri, uri.rstrip("/").rsplit("/", 1)[-1], records, config, fold_models(records, config))


def _threshold(run: _TrainedRun, given: float | None) -> tuple[float | None, str]:
    """The Dice threshold of a run's masks, and the report's line saying where it comes from."""
    recorded = validation_threshold([model.val_dice_threshold for model in run.models])
    if given is not None:
        return given, f"Dice threshold {given:.4f}: given on the command line."
    if recorded is not None:
        return recorded, (
            f"Dice threshold {recorded:.4f}: mean of the fold models' thresholds chosen on their "
            "synthetic validation samples (held-out tasks; train.threshold_fpr)."
        )
    return None, "No validation Dice threshold recorded by training: only the oracle Dice is shown."


def evaluate_run(
    models_uri: str | Sequence[str],
    data_uri: str,
    out: str,
    predictions_uri: str | None = None,
    dice_threshold: float | None = None,
    workers: int = 1,
    with_baselines: bool = True,
    num_cpus: int | None = None,
    verbose: bool = False,
) -> int:
    """Predict the usable cases of a test manifest with every fold model of a training run, score
    folds, ensembles and baselines, and write the report to `out`; returns the exit status (0 ok,
    2 some predictions failed: they are listed in the report). The predictions run on Ray
    (`lightwork.distributed.cluster.connected`: the connected cluster, or a local one of
    `num_cpus` started for them and stopped after). Raises UserError, before Ray is asked for
    anything, when `models_uri` is not a run or the test set is missing or has nothing to score
    against; rows that failed in prepare are named on stderr and in the report.

    The Dice threshold, unless given, is the mean of the fold models' thresholds chosen on their
    synthetic validation samples (honest: no test data involved).

    Several runs (`models_uri` a sequence: an ablation across methods) go into one report: their
    ensembles side by side with the baselines, computed once, then each run's folds
    (`lightwork.evaluation.evaluate.evaluate_run_predictions`), scored on the cases every run
    predicted. A run is then named by its folder's name (its predictions under
    `predictions/{name}`; two runs of one name are a UserError), each has its own Dice threshold,
    and the baselines' Dice at the validation threshold is given only at a given `dice_threshold`.
    """
    import sys

    from lightwork.evaluation.evaluate import RunPredictions, evaluate_run_predictions, intensity_warning, read_test_set

    cases, failed_note = read_test_set(data_uri)
    trained = [_trained_run(uri) for uri in ([models_uri] if isinstance(models_uri, str) else models_uri)]
    names = [run.name for run in trained]
    several = len(trained) > 1
    for name in names:
        if names.count(name) > 1:
            raise UserError(f"--models: two runs are named {name!r}: the report names each run by its folder's name")
    notes = [failed_note] + [
        intensity_warning(run.config.data.manifest, cases) for run in trained if run.config and run.config.data.manifest
    ]
    notes = list(dict.fromkeys(note for note in notes if note))  # each line once (runs on the same data)
    for note in notes:
        print(note, file=sys.stderr)
    predictions = predictions_uri or storage.join(out, "predictions")
    with connected(num_cpus, verbose):
        rows = {
            run.name: predict_cases(
                run.models,
                cases,
                storage.join(predictions, run.name) if several else predictions,
                workers=workers,
                label=run.name if several else "",
            )
            for run in trained
        }
    tables = {name: prediction_table(run_rows) for name, run_rows in rows.items()}
    errors = [error for _, run_errors in tables.values() for error in run_errors]
    for error in errors:
        print(f"prediction failed: {error}", file=sys.stderr)
    failed = {row["case_id"] for run_rows in rows.values() for row in run_rows if row["error"]}
    scored = [case for case in cases if case["case_id"] not in failed]  # the cases every run predicted
    notes += [f"Not scored, prediction failed: {error}" for error in errors]
    scoring = {}
    for run in trained:
        threshold, threshold_note = _threshold(run, dice_threshold)
        run_notes = [threshold_note]
        if run.config is not None:
            data = run.config.data
            run_notes.append(runs.describe_training(run.records, run.config.train.batch_size))
            run_notes.append(describe_run(data.slice_axis, data.min_slice_foreground, data.lesion_free_slices))
        notes += [f"{run.name}: {note}" if several else note for note in run_notes if note]
        method = (run.config.method if run.config is not None else MethodSection()).name
        scoring[run.name] = RunPredictions(tables[run.name][0], threshold, method)
    baseline_threshold = dice_threshold if several else scoring[names[0]].dice_threshold
    if several:
        notes.append(
            "Baselines: only their oracle Dice is shown (the runs' validation thresholds differ)."
            if dice_threshold is None
            else f"Baselines: Dice at the given threshold {dice_threshold:.4f}."
        )
    metrics = evaluate_run_predictions(scored, scoring, out, baseline_threshold, with_baselines, notes=notes)
    for name in names:
        prefix, splits = (f"{name} ", metrics["runs"][name]["splits"]) if several else ("", metrics["splits"])
        for split, entry in splits.items():
            ensemble = entry.get("ensemble", {})
            print(
                f"{prefix}{split} ensemble: pixel AP {ensemble.get('pixel_ap', float('nan')):.4f} "
                f"AUROC {ensemble.get('pixel_auroc', float('nan')):.4f} (all voxels); "
                f"foreground AP {ensemble.get('pixel_ap_foreground', float('nan')):.4f} "
                f"AUROC {ensemble.get('pixel_auroc_foreground', float('nan')):.4f}"
            )
    print(f"report: {storage.join(out, 'report.md')}")
    return 0 if not errors else 2
