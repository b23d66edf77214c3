"""Anomaly-localisation metrics (docs/method.md section 5), numpy + scikit-learn.

Scores are float predictions, ground truth is `lesion != 0` on the model grid. Levels:
    pixel   every voxel of the test set (the paper's: `pixel_ap`, `pixel_auroc`, and the paper's
            chunked `pixel_ap_chunked`), and beside it the foreground voxels only
            (`pixel_ap_foreground`, `pixel_auroc_foreground`)
    slice   3D only: axial slices (spatial axis AXIAL_AXIS = 2 of the RAS grid,
            `lightwork.data.slices`); anomalous when more than SLICE_ANOMALY_FRACTION of its pixels
            are lesion; score = mean prediction over all pixels of the slice
    sample  one per case: anomalous when any voxel is lesion (or from an image-level label
            when the case has no mask); score = mean prediction over all voxels (the paper's), and
            beside it the image scores of SAMPLE_SCORES used elsewhere in the field (maximum, 99th
            percentile, mean of the top 1%)
Dice (at the validation threshold and the oracle's) is over all voxels too.

`ScoreHistogram` accumulates pixel scores per class in bounded memory (fixed bins on [0, 1]
after clipping) and gives AP/AUROC from the histograms; `SetScorer` also keeps every score while a
test set is small, for the exact scikit-learn path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from lightwork.data.slices import AXIAL_AXIS

SLICE_ANOMALY_FRACTION = 5 / 128**2
TOP_FRACTION = 0.01  # the "top k%" image score's k


def _top_fraction_mean(values: np.ndarray) -> float:
    count = max(1, math.ceil(TOP_FRACTION * values.size))
    return float(np.mean(np.partition(values, values.size - count)[values.size - count :], dtype=np.float64))


# Image-level scores of one case's (clipped) map, float64 [N] -> float. "mean" is the paper's and
# the one `sample_ap` / `sample_auroc` use; the others are reported beside it.
SAMPLE_SCORES = {
    "mean": lambda values: float(np.mean(values, dtype=np.float64)),
    "max": lambda values: float(np.max(values)),
    "p99": lambda values: float(np.percentile(values, 99)),
    "top1%": _top_fraction_mean,
}
PAPER_SAMPLE_SCORE = "mean"
PAPER_CHUNK_VOLUMES = 20
PAPER_CHUNK_SHUFFLES = 10
DEFAULT_BINS = 100_000


def clip_scores(scores: np.ndarray) -> np.ndarray:
    """Scores as float64 clipped to [0, 1] (raw network outputs can leave that range)."""
    return np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)


def ap_auroc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(AP, AUROC) by scikit-learn; NaN for a metric that is undefined (one class only)."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.size == 0 or not labels.any():
        return float("nan"), float("nan")
    ap = float(average_precision_score(labels, scores))
    auroc = float(roc_auc_score(labels, scores)) if not labels.all() else float("nan")
    return ap, auroc


def slice_labels_and_scores(
    prediction: np.ndarray, lesion: np.ndarray, axis: int = AXIAL_AXIS
) -> tuple[np.ndarray, np.ndarray]:
    """Per-slice (anomalous bool [N], mean score float64 [N]) of one 3D volume: prediction float
    [*S] and lesion [*S] (any dtype; non-zero = lesion), N = S[axis] slices along spatial `axis`
    (default the axial one of the RAS grid).

    A slice is anomalous when more than SLICE_ANOMALY_FRACTION of its pixels are lesion; its score
    is the mean prediction over all its pixels.
    """
    if prediction.ndim != 3:
        raise ValueError(f"slice metrics need 3D volumes, got shape {prediction.shape}")
    slices = prediction.shape[axis]
    lesion_fraction = np.moveaxis(lesion != 0, axis, 0).reshape(slices, -1).mean(axis=1)
    labels = lesion_fraction > SLICE_ANOMALY_FRACTION
    return labels, np.moveaxis(prediction, axis, 0).reshape(slices, -1).mean(axis=1, dtype=np.float64)


def sample_label_and_scores(
    prediction: np.ndarray, lesion: np.ndarray | None, image_label: bool | None = None
) -> tuple[bool, dict[str, float]]:
    """(anomalous, {SAMPLE_SCORES name: image score over all voxels}) of one case, prediction float
    [*S]: anomalous when any voxel of `lesion` ([*S]) is non-zero, else `image_label`."""
    if lesion is not None:
        label = bool((lesion != 0).any())
    elif image_label is not None:
        label = bool(image_label)
    else:
        raise ValueError("a sample needs a lesion mask or an image-level label")
    values = prediction.ravel()
    return label, {name: score(values) for name, score in SAMPLE_SCORES.items()}


@dataclass
class ScoreHistogram:
    """Bounded-memory accumulator of scores per class: `bins` equal bins on [0, 1] after clipping.

    AP and AUROC are computed treating each bin as one tied score (ties handled as scikit-learn
    does: a threshold step per distinct score), so they match the exact values up to the bin width.
    """

    bins: int = DEFAULT_BINS
    positive: np.ndarray = field(init=False)
    negative: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.positive = np.zeros(self.bins, dtype=np.int64)
        self.negative = np.zeros(self.bins, dtype=np.int64)

    def add(self, labels: np.ndarray, scores: np.ndarray) -> None:
        """Count scores (any shape) with their bool labels (same shape)."""
        labels = np.asarray(labels).astype(bool).ravel()
        index = np.minimum((clip_scores(scores).ravel() * self.bins).astype(np.int64), self.bins - 1)
        self.positive += np.bincount(index[labels], minlength=self.bins)
        self.negative += np.bincount(index[~labels], minlength=self.bins)

    def merge(self, other: "ScoreHistogram") -> None:
        """Add another accumulator's counts (same number of bins)."""
        if other.bins != self.bins:
            raise ValueError(f"cannot merge histograms of {other.bins} and {self.bins} bins")
        self.positive += other.positive
        self.negative += other.negative

    def curves(self) -> dict[str, np.ndarray]:
        """Thresholds (bin lower edges, descending) with cumulative TP/FP counts at each."""
        tp = np.cumsum(self.positive[::-1])
        fp = np.cumsum(self.negative[::-1])
        thresholds = np.arange(self.bins)[::-1] / self.bins
        occupied = (self.positive + self.negative)[::-1] > 0
        return {"threshold": thresholds[occupied], "tp": tp[occupied], "fp": fp[occupied]}

    def ap_auroc(self) -> tuple[float, float]:
        """(AP, AUROC) from the histograms; NaN when undefined."""
        total_pos, total_neg = int(self.positive.sum()), int(self.negative.sum())
        if total_pos == 0:
            return float("nan"), float("nan")
        c = self.curves()
        tp, fp = c["tp"].astype(np.float64), c["fp"].astype(np.float64)
        recall = tp / total_pos
        precision = tp / (tp + fp)
        ap = float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))
        if total_neg == 0:
            return ap, float("nan")
        tpr = np.concatenate([[0.0], recall])
        fpr = np.concatenate([[0.0], fp / total_neg])
        return ap, float(np.trapezoid(tpr, fpr))

    def pr_roc_points(self) -> dict[str, np.ndarray]:
        """Precision/recall and FPR/TPR arrays for plotting."""
        c = self.curves()
        tp, fp = c["tp"].astype(np.float64), c["fp"].astype(np.float64)
        pos, neg = max(self.positive.sum(), 1), max(self.negative.sum(), 1)
        return {"recall": tp / pos, "precision": tp / np.maximum(tp + fp, 1), "fpr": fp / neg, "tpr": tp / pos}


def dice(prediction_mask: np.ndarray, lesion: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    a, b = np.asarray(prediction_mask).astype(bool), np.asarray(lesion) != 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


@dataclass
class DiceAccumulator:
    """Set-level Dice at many thresholds at once, in bounded memory (intersection/size counts).

    Dice over the whole set (all voxels pooled) at threshold t = 2 TP(t) / (P + TP(t) + FP(t)),
    computed from a ScoreHistogram with thresholds at bin edges.
    """

    histogram: ScoreHistogram = field(default_factory=lambda: ScoreHistogram(bins=1000))

    def add(self, labels: np.ndarray, scores: np.ndarray) -> None:
        self.histogram.add(labels, scores)

    def dice_at(self, threshold: float) -> float:
        """Pooled Dice of `score >= threshold` (threshold rounded down to a bin edge)."""
        h = self.histogram
        start = int(np.clip(np.floor(threshold * h.bins), 0, h.bins))
        tp, fp = h.positive[start:].sum(), h.negative[start:].sum()
        denominator = h.positive.sum() + tp + fp
        return 1.0 if denominator == 0 else float(2 * tp / denominator)

    def best_threshold(self) -> tuple[float, float]:
        """(threshold, Dice) maximising pooled Dice over the bin edges."""
        h = self.histogram
        tp = np.cumsum(h.positive[::-1])[::-1]
        fp = np.cumsum(h.negative[::-1])[::-1]
        dices = 2 * tp / np.maximum(h.positive.sum() + tp + fp, 1)
        best = int(np.argmax(dices))
        return best / h.bins, float(dices[best])


CHUNK_HISTOGRAM_BINS = 10_000
EXACT_VOXEL_LIMIT = 4_000_000


class SetScorer:
    """All metrics of one model (or baseline) over a test set, fed one case at a time.

    Each case adds to both pixel figures in one pass: over all its voxels (`pixel_ap`,
    `pixel_auroc`, the paper's; histogram `pixels`) and over its foreground voxels
    (`pixel_ap_foreground`, `pixel_auroc_foreground`; histogram `pixels_foreground`; a case given
    without a foreground counts every voxel there). Every other level is over all voxels: the
    chunked pixel AP, Dice, the slices along `slice_axis` (default the axial axis) and the samples.

    Memory is bounded: pixel scores go to histograms (two for the set, one small one per volume
    for the chunked AP); slices and samples keep one number each. While the set holds at most
    `exact_voxel_limit` scored voxels, their scores, labels and foreground masks are also kept and
    both pixel figures come from the exact scikit-learn path (`pixel_exact` in the summary says
    which was used). Cases without a lesion mask count at sample level only (from their
    image-level label) and are listed in `maskless_cases`.
    """

    def __init__(
        self,
        dice_threshold: float | None = None,
        bins: int = DEFAULT_BINS,
        exact_voxel_limit: int = EXACT_VOXEL_LIMIT,
        slice_axis: int = AXIAL_AXIS,
    ):
        self.exact_voxel_limit = exact_voxel_limit
        # (lesion bool [V], score float32 [V], foreground bool [V]) of each case while kept
        self.exact: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = []
        self.dice_threshold = dice_threshold
        self.slice_axis = slice_axis
        self.pixels = ScoreHistogram(bins)
        self.pixels_foreground = ScoreHistogram(bins)
        self.dice = DiceAccumulator()
        self.volume_histograms: list[ScoreHistogram] = []
        self.slice_labels: list[np.ndarray] = []
        self.slice_scores: list[np.ndarray] = []
        self.sample_labels: list[bool] = []
        self.sample_scores: dict[str, list[float]] = {name: [] for name in SAMPLE_SCORES}
        self.case_scores: dict[str, dict] = {}
        self.maskless_cases: list[str] = []

    def add_case(
        self,
        case_id: str,
        prediction: np.ndarray,
        lesion: np.ndarray | None,
        foreground: np.ndarray | None = None,
        image_label: bool | None = None,
    ) -> None:
        """Score one case. prediction float [*S] (clipped to [0, 1] here), lesion uint8 [*S] or None,
        foreground bool [*S] or None (None: every voxel is foreground)."""
        prediction = clip_scores(prediction)
        for name, array in (("ground truth", lesion), ("foreground", foreground)):
            if array is not None and array.shape != prediction.shape:
                raise ValueError(f"case {case_id}: prediction shape {prediction.shape} != {name} shape {array.shape}")
        if lesion is None and image_label is None:
            raise ValueError(f"case {case_id}: neither a lesion mask nor an image-level label to score against")
        label, scores = sample_label_and_scores(prediction, lesion, image_label)
        self.sample_labels.append(label)
        for name, score in scores.items():
            self.sample_scores[name].append(score)
        self.case_scores[case_id] = {"anomalous": label, "score": scores[PAPER_SAMPLE_SCORE]}
        if lesion is None:
            self.maskless_cases.append(case_id)
            return
        truth = lesion != 0
        inside = np.ones(truth.shape, bool) if foreground is None else foreground.astype(bool)
        self.pixels.add(truth, prediction)
        self.pixels_foreground.add(truth[inside], prediction[inside])
        self.dice.add(truth, prediction)
        if self.exact is not None:
            self.exact.append((truth.ravel(), prediction.ravel().astype(np.float32), inside.ravel()))
            if sum(part.size for part, _, _ in self.exact) > self.exact_voxel_limit:
                self.exact = None
        volume = ScoreHistogram(CHUNK_HISTOGRAM_BINS)
        volume.add(truth, prediction)
        self.volume_histograms.append(volume)
        self.case_scores[case_id]["pixel_ap"] = volume.ap_auroc()[0]
        if prediction.ndim == 3:
            slice_labels, slice_scores = slice_labels_and_scores(prediction, lesion, self.slice_axis)
            self.slice_labels.append(slice_labels)
            self.slice_scores.append(slice_scores)
        if self.dice_threshold is not None:
            self.case_scores[case_id]["dice"] = dice(prediction >= self.dice_threshold, truth)

    def chunked_pixel_ap(
        self, chunk_volumes: int = PAPER_CHUNK_VOLUMES, shuffles: int = PAPER_CHUNK_SHUFFLES, seed: int = 0
    ) -> float:
        """The paper's pixel AP from the per-volume histograms: the mean AP over chunks of
        `chunk_volumes` volumes, for `shuffles` orders. Each shuffle permutes the volumes (numpy
        Generator seeded by `seed`) and cuts them into consecutive chunks (the last may be shorter);
        chunks without any lesion voxel are skipped. NaN if none has one."""
        rng = np.random.default_rng(seed)
        aps = []
        for _ in range(shuffles):
            order = rng.permutation(len(self.volume_histograms))
            for start in range(0, len(order), chunk_volumes):
                merged = ScoreHistogram(CHUNK_HISTOGRAM_BINS)
                for index in order[start : start + chunk_volumes]:
                    merged.merge(self.volume_histograms[index])
                ap, _ = merged.ap_auroc()
                if not np.isnan(ap):
                    aps.append(ap)
        return float(np.mean(aps)) if aps else float("nan")

    def summary(self) -> dict:
        """Metric name -> value (NaN where undefined), plus counts, the maskless case ids and, with
        slice metrics, `slice_axis` (the spatial axis the slices were taken along)."""
        result: dict = {
            "cases": len(self.sample_labels),
            "cases_with_mask": len(self.volume_histograms),
            "maskless_cases": list(self.maskless_cases),
        }
        result["pixel_exact"] = bool(self.exact)
        if self.exact:
            labels, scores, inside = (np.concatenate(parts) for parts in zip(*self.exact))
            result["pixel_ap"], result["pixel_auroc"] = ap_auroc(labels, scores)
            result["pixel_ap_foreground"], result["pixel_auroc_foreground"] = ap_auroc(labels[inside], scores[inside])
        else:
            result["pixel_ap"], result["pixel_auroc"] = self.pixels.ap_auroc()
            result["pixel_ap_foreground"], result["pixel_auroc_foreground"] = self.pixels_foreground.ap_auroc()
        result["pixel_ap_chunked"] = self.chunked_pixel_ap()
        if self.slice_labels:
            result["slice_axis"] = self.slice_axis
            result["slice_ap"], result["slice_auroc"] = ap_auroc(
                np.concatenate(self.slice_labels), np.concatenate(self.slice_scores)
            )
        by_score = {
            name: dict(zip(("ap", "auroc"), ap_auroc(np.array(self.sample_labels), np.array(scores))))
            for name, scores in self.sample_scores.items()
        }
        paper = by_score[PAPER_SAMPLE_SCORE]
        result["sample_ap"], result["sample_auroc"] = paper["ap"], paper["auroc"]
        result["sample_scores"] = by_score
        if self.volume_histograms:
            result["dice_threshold"] = self.dice_threshold
            result["dice"] = self.dice.dice_at(self.dice_threshold) if self.dice_threshold is not None else float("nan")
            result["oracle_threshold"], result["oracle_dice"] = self.dice.best_threshold()
        return result
