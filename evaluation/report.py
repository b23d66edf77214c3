"""The evaluation report: metrics.json, report.md with tables, PR/ROC curves and overlay montages.

Input layout (`metrics` argument of `write_report`):
    {"splits": {split: {"folds": {fold_name: summary}, "ensemble": summary}},
     "baselines": {name: summary}}
or, for several runs side by side (an ablation across methods), their splits by run name:
    {"runs": {run_name: {"method": method_name, "splits": {...as above}}}, "baselines": {name: summary}}
where each summary is `SetScorer.summary()`: the pixel level over all voxels (the paper's) and over
the foreground, the slice level along its `slice_axis`. Figures use matplotlib's Agg backend.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lightwork.data import storage  # noqa: E402
from lightwork.data.slices import AXIAL_AXIS, AXIS_VIEWS  # noqa: E402
from lightwork.evaluation.metrics import (  # noqa: E402
    PAPER_SAMPLE_SCORE,
    SAMPLE_SCORES,
    SLICE_ANOMALY_FRACTION,
    ScoreHistogram,
)

MASKLESS_NAMED = 20  # maskless cases named in report.md; metrics.json lists them all
COLUMNS = (
    ("pixel_ap", "pixel AP, all voxels (paper)"),
    ("pixel_ap_chunked", "pixel AP, all voxels, 20-vol chunks (paper)"),
    ("pixel_auroc", "pixel AUROC, all voxels (paper)"),
    ("pixel_ap_foreground", "pixel AP, foreground"),
    ("pixel_auroc_foreground", "pixel AUROC, foreground"),
    ("slice_ap", "slice AP"),
    ("slice_auroc", "slice AUROC"),
    ("sample_ap", "sample AP"),
    ("sample_auroc", "sample AUROC"),
    ("dice", "Dice (val. threshold)"),
    ("oracle_dice", "Dice (oracle threshold)"),
)


@dataclass
class MontagePanel:
    """One 2D view of a case: image float [H, W], prediction float [H, W] in [0, 1], lesion [H, W] or None."""

    title: str
    image: np.ndarray
    prediction: np.ndarray
    lesion: np.ndarray | None


def representative_slice(prediction: np.ndarray, lesion: np.ndarray | None) -> int:
    """The axial slice (index along AXIAL_AXIS) of a 3D RAS volume to show: most lesion voxels, else
    the highest summed score."""
    chosen = lesion != 0 if lesion is not None and lesion.any() else prediction
    return int(np.argmax(np.moveaxis(chosen, AXIAL_AXIS, 0).reshape(chosen.shape[AXIAL_AXIS], -1).sum(axis=1)))


def axial_view(volume: np.ndarray, index: int) -> np.ndarray:
    """Axial slice `index` of a RAS volume [X, Y, Z] as an image [Y, X] with anterior at the top."""
    return np.take(volume, index, axis=AXIAL_AXIS).T[::-1]


def panel_for_case(title: str, image: np.ndarray, prediction: np.ndarray, lesion: np.ndarray | None) -> MontagePanel:
    """A MontagePanel from a case (image [C, *S], prediction and lesion [*S]); 3D takes one axial slice."""
    image2d, prediction2d, lesion2d = image[0], prediction, lesion
    if prediction.ndim == 3:
        index = representative_slice(prediction, lesion)
        image2d, prediction2d = axial_view(image[0], index), axial_view(prediction, index)
        lesion2d = axial_view(lesion, index) if lesion is not None else None
        title = f"{title} (axial slice {index})"
    return MontagePanel(title, image2d, np.clip(prediction2d, 0, 1), lesion2d)


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _mean_std(values: list[float]) -> str:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return "n/a"
    return f"{100 * np.mean(finite):.1f} ± {100 * np.std(finite):.1f}"


def _header() -> list[str]:
    return ["| model | " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 1)]


def _row(name: str, summary: dict) -> str:
    return f"| {name} | " + " | ".join(_fmt(summary.get(key)) for key, _ in COLUMNS) + " |"


def metrics_table(metrics: dict) -> str:
    """Markdown table: per split, every fold, the fold mean ± std and the ensemble; then baselines."""
    lines = _header()
    for split, entry in metrics.get("splits", {}).items():
        folds = entry.get("folds", {})
        for fold_name, summary in folds.items():
            lines.append(_row(f"{split} / {fold_name}", summary))
        if folds:
            lines.append(
                f"| {split} / fold mean ± std | "
                + " | ".join(_mean_std([s.get(key, float("nan")) for s in folds.values()]) for key, _ in COLUMNS)
                + " |"
            )
        if "ensemble" in entry:
            lines.append(_row(f"**{split} / ensemble**", entry["ensemble"]))
    lines += [_row(f"baseline: {name}", summary) for name, summary in metrics.get("baselines", {}).items()]
    return "\n".join(lines)


def _ensembles(metrics: dict) -> list[tuple[str, dict]]:
    """(row name, summary) of every split ensemble of the report: `{split} / ensemble`, or with
    several runs `{run} ({method}) / {split} ensemble`."""
    if "runs" not in metrics:
        splits = metrics.get("splits", {}).items()
        return [(f"{split} / ensemble", entry["ensemble"]) for split, entry in splits if "ensemble" in entry]
    return [
        (f"{name} ({run['method']}) / {split} ensemble", entry["ensemble"])
        for name, run in metrics["runs"].items()
        for split, entry in run["splits"].items()
        if "ensemble" in entry
    ]


def comparison_table(metrics: dict) -> str:
    """Markdown table of several runs side by side: every run's split ensembles, then the baselines."""
    lines = _header() + [_row(f"**{name}**", summary) for name, summary in _ensembles(metrics)]
    lines += [_row(f"baseline: {name}", summary) for name, summary in metrics.get("baselines", {}).items()]
    return "\n".join(lines)


def sample_score_table(metrics: dict) -> str | None:
    """Markdown table of sample-level AP / AUROC under every image score of SAMPLE_SCORES, for each
    split's ensemble and the baselines; None when no test set holds both normal and anomalous cases."""
    rows = _ensembles(metrics) + [
        (f"baseline: {name}", summary) for name, summary in metrics.get("baselines", {}).items()
    ]
    rows = [(name, summary) for name, summary in rows if _fmt(summary.get("sample_auroc")) != "n/a"]
    if not rows:
        return None
    titles = [f"{name} (the paper's)" if name == PAPER_SAMPLE_SCORE else name for name in SAMPLE_SCORES]
    lines = ["| model | " + " | ".join(f"{title}: AP / AUROC" for title in titles) + " |"]
    lines.append("|" + "---|" * (len(titles) + 1))
    for name, summary in rows:
        cells = []
        for score in SAMPLE_SCORES:
            value = summary.get("sample_scores", {}).get(score, {})
            cells.append(f"{_fmt(value.get('ap'))} / {_fmt(value.get('auroc'))}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(histograms: dict[str, ScoreHistogram], path: Path) -> None:
    """Pixel-level PR and ROC curves of each named histogram, side by side, into one PNG."""
    figure, (pr_axis, roc_axis) = plt.subplots(1, 2, figsize=(11, 4.8))
    for name, histogram in histograms.items():
        points = histogram.pr_roc_points()
        ap, auroc = histogram.ap_auroc()
        pr_axis.plot(points["recall"], points["precision"], label=f"{name} (AP {_fmt(ap)})")
        roc_axis.plot(
            np.concatenate([[0], points["fpr"]]),
            np.concatenate([[0], points["tpr"]]),
            label=f"{name} (AUROC {_fmt(auroc)})",
        )
    pr_axis.set(xlabel="recall", ylabel="precision", title="pixel-level precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    roc_axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc_axis.set(
        xlabel="false positive rate", ylabel="true positive rate", title="pixel-level ROC", xlim=(0, 1), ylim=(0, 1.02)
    )
    for axis in (pr_axis, roc_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right" if axis is roc_axis else "upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_montage(panels: list[MontagePanel], path: Path, title: str) -> None:
    """Grid of image (grey) + prediction heat map (alpha) + ground-truth contour (green) into one PNG.
    The heat map's colour scale runs from 0 to the largest score shown (weak models score far below
    1 and would show nothing on a fixed 0-1 scale); scores under 5% of it are transparent."""
    top = max([float(panel.prediction.max()) for panel in panels] + [1e-3])
    columns = min(4, max(len(panels), 1))
    rows = max(math.ceil(len(panels) / columns), 1)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.6 * rows + 0.4), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, panel in zip(axes.ravel(), panels):
        axis.imshow(panel.image, cmap="gray", interpolation="nearest")
        heat = axis.imshow(
            np.ma.masked_less(panel.prediction, 0.05 * top),
            cmap="inferno",
            vmin=0,
            vmax=top,
            alpha=0.6,
            interpolation="nearest",
        )
        if panel.lesion is not None and panel.lesion.any():
            axis.contour(panel.lesion != 0, levels=[0.5], colors="lime", linewidths=1.2)
        axis.set_title(panel.title, fontsize=9)
    figure.suptitle(f"{title}  (heat: prediction, green: ground truth)", fontsize=10)
    figure.colorbar(heat, ax=axes.ravel().tolist(), shrink=0.7, label="score")
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def write_report(
    out_dir: str | Path,
    metrics: dict,
    histograms: dict[str, ScoreHistogram],
    montages: dict[str, list[MontagePanel]],
    notes: list[str] | None = None,
) -> str:
    """Write metrics.json, curves.png, montage_<name>.png and report.md into out_dir (a local path
    or a storage URI such as s3://...); returns the URI of report.md."""
    if not storage.is_remote(str(out_dir)):
        return str(_write_report_locally(Path(out_dir), metrics, histograms, montages, notes))
    with tempfile.TemporaryDirectory() as local:
        _write_report_locally(Path(local), metrics, histograms, montages, notes)
        for path in sorted(Path(local).iterdir()):
            storage.write_bytes(storage.join(str(out_dir), path.name), path.read_bytes())
    return storage.join(str(out_dir), "report.md")


def _json_safe(value):
    """`value` with NaN/inf floats as None (JSON null: strict readers reject NaN) and numpy scalars as
    Python numbers."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _write_report_locally(
    out: Path,
    metrics: dict,
    histograms: dict[str, ScoreHistogram],
    montages: dict[str, list[MontagePanel]],
    notes: list[str] | None,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(_json_safe(metrics), indent=2, allow_nan=False))
    lines = ["# lightwork evaluation report", ""]
    lines += [
        "Scores are clipped to [0, 1]; AP/AUROC/Dice in %. Pixel AP/AUROC are given twice: over all voxels",
        "of the model grid (the paper's) and over the foreground voxels only. The chunked pixel AP, both",
        "Dice columns and the sample level are over all voxels.",
        "Ensemble = mean of the raw outputs of all fold models of a split. Dice (val. threshold) uses the",
        "threshold given from synthetic validation data; Dice (oracle threshold) picks the best threshold",
        "on the test set itself and is an optimistic upper bound, not a result.",
        "",
    ]
    summaries = list(_all_summaries(metrics))
    slice_axes = sorted({entry["slice_axis"] for entry in summaries if "slice_axis" in entry})
    if slice_axes:
        lines += [
            "Slice level: "
            + " and ".join(f"{AXIS_VIEWS[axis]} slices (spatial axis {axis})" for axis in slice_axes)
            + f"; a slice is anomalous when more than {SLICE_ANOMALY_FRACTION:.4%} of its pixels are",
            "lesion, its score is the mean prediction over all its pixels.",
            "",
        ]
    scored = [entry for entry in summaries if entry.get("cases_with_mask")]
    if scored:
        exact = all(entry.get("pixel_exact") for entry in scored)
        lines += [
            "Pixel AP/AUROC: "
            + (
                "exact (scikit-learn over every voxel)."
                if exact
                else "from per-class score histograms (bounded memory; within ~1e-3 of the exact values)."
            ),
            "",
        ]
    if "runs" in metrics:
        lines += [
            "## Methods side by side",
            "",
            "Each run's ensembles beside the baselines, on the same cases; each run's Dice (val. threshold) is at",
            "its own threshold. Each run's folds follow in its own table.",
            "",
            comparison_table(metrics),
            "",
        ]
        for name, run in metrics["runs"].items():
            lines += [f"## Metrics: {name} ({run['method']})", "", metrics_table(run), ""]
    else:
        lines += ["## Metrics", "", metrics_table(metrics), ""]
    samples = sample_score_table(metrics)
    if samples is not None:
        lines += [
            "## Sample-level scores",
            "",
            "A case's score is one number from its map: the mean (the paper's, used for the sample columns",
            "above), the maximum, the 99th percentile, or the mean of its highest 1% of scores.",
            "",
            samples,
            "",
        ]
    maskless = sorted({case for entry in summaries for case in entry.get("maskless_cases", [])})
    if maskless:
        named = ", ".join(maskless[:MASKLESS_NAMED]) + (
            f" and {len(maskless) - MASKLESS_NAMED} more (all in metrics.json)"
            if len(maskless) > MASKLESS_NAMED
            else ""
        )
        lines += [f"Cases without a lesion mask, scored at sample level only ({len(maskless)}): {named}", ""]
    for note in notes or []:
        lines += [note, ""]
    if histograms:
        plot_curves(histograms, out / "curves.png")
        lines += ["## Pixel-level curves (all voxels)", "", "![PR and ROC curves](curves.png)", ""]
    for name, panels in montages.items():
        if panels:
            plot_montage(panels, out / f"montage_{name}.png", name.replace("_", " "))
            lines += [f"## {name.replace('_', ' ')}", "", f"![{name}](montage_{name}.png)", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def _all_summaries(metrics: dict):
    for run in metrics["runs"].values() if "runs" in metrics else [metrics]:
        for entry in run.get("splits", {}).values():
            yield from entry.get("folds", {}).values()
            if "ensemble" in entry:
                yield entry["ensemble"]
    yield from metrics.get("baselines", {}).values()
