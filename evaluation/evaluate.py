"""Score stored predictions and baselines over a test set and write the report (no Ray here).

Cases are read one at a time (bounded memory): each case is loaded once, every model's stored
model-grid prediction for it is scored by that model's SetScorer, and the baselines are computed
from its image. Montages show the ensemble's highest-scoring cases and its worst cases (lowest
per-case pixel AP among cases with a lesion). Several runs (an ablation across methods) are scored
in one pass, the baselines once, into one report that puts them side by side (`evaluate_run_predictions`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightwork.data.cases import load_case
from lightwork.data.manifest import intensity_mismatch, read_manifest, usable
from lightwork.errors import UserError
from lightwork.evaluation import baselines, outputs, report
from lightwork.evaluation.metrics import SetScorer
from lightwork.training.folds import ENSEMBLE, parse_model_key

MONTAGE_CASES = 4


def read_test_set(data_uri: str) -> tuple[list[dict], str | None]:
    """The usable rows of the test manifest at `data_uri`, and a line naming its failed rows (how
    many, which, why; None when there are none) for the report and the console.

    Raises:
        UserError: no manifest at `data_uri`, no row is usable, or no usable case has a lesion mask
            or an image label (there would be nothing to score the predictions against).
    """
    try:
        rows = read_manifest(data_uri)
    except FileNotFoundError as error:
        raise UserError(str(error)) from None
    cases = usable(rows)
    failed = [row for row in rows if row["status"] != "ok"]
    if not cases:
        raise UserError(f"{data_uri}: no usable case to evaluate ({len(failed)} rows, all failed in prepare)")
    if not any(row.get("has_lesion") or row.get("image_label") is not None for row in cases):
        raise UserError(
            f"{data_uri}: none of the {len(cases)} usable cases has a lesion mask or an image label, "
            "so there is nothing to score against (prepare a test set with lesion masks or label folders)"
        )
    note = None
    if failed:
        note = f"Not evaluated, failed in prepare ({len(failed)}): " + "; ".join(
            f"{row['case_id']} ({row.get('error') or 'no error recorded'})" for row in failed
        )
    return cases, note


def intensity_warning(training_manifest: str, cases: list[dict]) -> str | None:
    """A line for the console and the report when the test `cases` (manifest rows) are on another
    intensity scale than the training set at `training_manifest` (`intensity_mismatch`), or when
    that cannot be checked; None when they agree."""
    try:
        reference = read_manifest(training_manifest)
    except FileNotFoundError:
        return f"Intensity convention not checked: the training manifest {training_manifest} is gone."
    mismatch = intensity_mismatch(reference, cases)
    return None if mismatch is None else f"Warning: the test set's {mismatch}."


def evaluate_predictions(
    cases: list[dict],
    prediction_uris: dict[str, dict[str, str]],
    out_dir: str | Path,
    dice_threshold: float | None = None,
    with_baselines: bool = True,
    seed: int = 0,
    notes: list[str] | None = None,
) -> dict:
    """Score every model and baseline, write the report into out_dir; returns the metrics dict.

    cases: manifest rows (case_id, array_uri, optional image_label). prediction_uris: model key
    (`split<a-b>/<name>` or `split<a-b>/ensemble`) -> case_id -> model-grid .npy URI.
    A prediction whose shape differs from the case's ground truth raises, naming the case.
    Every summary holds the pixel level over all voxels and over the foreground (`SetScorer`).
    """
    run = RunPredictions(prediction_uris, dice_threshold)
    return evaluate_run_predictions(cases, {"": run}, out_dir, dice_threshold, with_baselines, seed, notes)


@dataclass(frozen=True)
class RunPredictions:
    """One training run's stored predictions: `uris` (model key -> case_id -> model-grid .npy URI,
    as `evaluate_predictions` takes them), the Dice threshold of its masks (None: oracle Dice only)
    and its `method` (method.name), which the report names beside the run."""

    uris: dict[str, dict[str, str]]
    dice_threshold: float | None = None
    method: str = "synthetic"


def evaluate_run_predictions(
    cases: list[dict],
    runs: dict[str, RunPredictions],
    out_dir: str | Path,
    baseline_threshold: float | None = None,
    with_baselines: bool = True,
    seed: int = 0,
    notes: list[str] | None = None,
) -> dict:
    """`evaluate_predictions` of one or several runs (an ablation across methods), by the label the
    report gives each (its run's name), in one pass over the cases, with the baselines computed once
    (their Dice at `baseline_threshold`); writes one report into out_dir and returns the metrics
    dict. One run: `evaluate_predictions`' metrics (`report.write_report`'s layout). Several:
    {"runs": {label: {"method": str, "splits": ...}}, "baselines": ..., "unscored_cases": [...]},
    curves and montages named `{label} {key}`, and the report puts the runs' ensembles side by side
    with the baselines before each run's own table."""
    scorers = {
        label: {key: SetScorer(dice_threshold=run.dice_threshold) for key in run.uris} for label, run in runs.items()
    }
    baseline_scorers = {
        name: SetScorer(dice_threshold=baseline_threshold) for name in (baselines.BASELINES if with_baselines else ())
    }
    notes = list(notes or [])
    unscorable = []
    for row in cases:
        case = load_case(row["array_uri"])
        label = row.get("image_label")
        if case.lesion is None and label is None:
            unscorable.append(case.case_id)
            continue
        for run_label, run in runs.items():
            for key, uris in run.uris.items():
                if row["case_id"] not in uris:
                    raise ValueError(f"case {row['case_id']}: no prediction from model {key}")
                prediction = outputs.read_prediction(uris[row["case_id"]])
                scorers[run_label][key].add_case(case.case_id, prediction, case.lesion, case.foreground, label)
        for name, scorer in baseline_scorers.items():
            scores = baselines.baseline_scores(name, case.case_id, case.image, case.foreground, seed)
            scorer.add_case(case.case_id, scores, case.lesion, case.foreground, label)
    several = len(runs) > 1

    def named(run_label: str, name: str) -> str:
        return f"{run_label} {name}" if several else name

    splits = {run_label: _splits(run_scorers) for run_label, run_scorers in scorers.items()}
    if several:
        metrics = {"runs": {name: {"method": run.method, "splits": splits[name]} for name, run in runs.items()}}
    else:
        metrics = {"splits": next(iter(splits.values()))}
    metrics["baselines"] = {name: scorer.summary() for name, scorer in baseline_scorers.items()}
    histograms = {
        named(run_label, key): scorer.pixels
        for run_label, run_scorers in scorers.items()
        for key, scorer in run_scorers.items()
        if parse_model_key(key)[1] == ENSEMBLE
    }
    histograms.update({f"baseline {name}": s.pixels for name, s in baseline_scorers.items()})
    if unscorable:
        notes.append(f"Not scored, no lesion mask and no image label ({len(unscorable)}): " + ", ".join(unscorable))
    metrics["unscored_cases"] = unscorable
    montages = {
        named(run_label, name).replace(" ", "_"): panels
        for run_label, run in runs.items()
        for name, panels in _montages(cases, run.uris, scorers[run_label]).items()
    }
    report.write_report(out_dir, metrics, histograms, montages, notes)
    return metrics


def _splits(scorers: dict[str, SetScorer]) -> dict:
    """{split: {"folds": {fold name: summary}, "ensemble": summary}} of one run's scorers by model key."""
    splits: dict[str, dict] = {}
    for key, scorer in scorers.items():
        split, name = parse_model_key(key)
        entry = splits.setdefault(split, {"folds": {}})
        if name == ENSEMBLE:
            entry["ensemble"] = scorer.summary()
        else:
            entry["folds"][name] = scorer.summary()
    return splits


def _montages(cases: list[dict], prediction_uris: dict[str, dict[str, str]], scorers: dict[str, SetScorer]) -> dict:
    ensembles = sorted(key for key in scorers if parse_model_key(key)[1] == ENSEMBLE) or sorted(scorers)
    if not ensembles:
        return {}
    key = ensembles[0]
    case_scores = scorers[key].case_scores
    by_uri = {row["case_id"]: row["array_uri"] for row in cases}
    highest = sorted(case_scores, key=lambda c: -case_scores[c]["score"])[:MONTAGE_CASES]
    with_ap = [c for c in case_scores if not math.isnan(case_scores[c].get("pixel_ap", math.nan))]
    worst = sorted(with_ap, key=lambda c: case_scores[c]["pixel_ap"])[:MONTAGE_CASES]

    def panels(case_ids: list[str], label: str) -> list[report.MontagePanel]:
        result = []
        for case_id in case_ids:
            case = load_case(by_uri[case_id])
            prediction = np.clip(outputs.read_prediction(prediction_uris[key][case_id]), 0, 1)
            value = case_scores[case_id][label]
            result.append(report.panel_for_case(f"{case_id}\n{label}={value:.3g}", case.image, prediction, case.lesion))
        return result

    return {
        f"highest_scoring_{key.replace('/', '_')}": panels(highest, "score"),
        f"worst_{key.replace('/', '_')}": panels(worst, "pixel_ap"),
    }
