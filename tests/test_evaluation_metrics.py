"""Metric numbers against hand-computed values on tiny arrays."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from lightwork.data.slices import AXIAL_AXIS
from lightwork.evaluation import metrics


def test_ap_auroc_hand_values():
    labels = np.array([0, 1, 1, 0])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    ap, auroc = metrics.ap_auroc(labels, scores)
    # ranking: 0.8(neg) 0.4(pos) 0.35(pos) 0.1(neg): precision at the positives 1/2, 2/3
    assert ap == pytest.approx((0.5 + 2 / 3) / 2)
    # positive-negative pairs ranked right: (0.4>0.1),(0.35>0.1) of 4
    assert auroc == pytest.approx(0.5)
    assert np.isnan(metrics.ap_auroc(np.zeros(3), np.ones(3))[0])


def test_slice_rule_threshold_is_more_than_5_of_128_squared():
    lesion = np.zeros((128, 128, 3), np.uint8)  # RAS: three axial slices of 128x128
    lesion[0, :5, 1] = 1  # exactly 5 pixels: not anomalous
    lesion[0, :6, 2] = 1  # 6 pixels: anomalous
    prediction = np.zeros((128, 128, 3), np.float32)
    prediction[:, :, 2] = 0.5
    labels, scores = metrics.slice_labels_and_scores(prediction, lesion)
    assert labels.tolist() == [False, False, True]
    assert scores.tolist() == pytest.approx([0.0, 0.0, 0.5])


def test_slices_are_axial_a_lesion_in_one_axial_slice_marks_that_slice_only():
    """RAS volume 8x10x6: a 4x4 lesion in axial slice z=4 makes slice 4 (and no other) anomalous, with
    the highest score; the old rule (slices along axis 0) would have marked the 4 sagittal slices
    x=2..5 that the lesion crosses."""
    assert AXIAL_AXIS == 2
    lesion = np.zeros((8, 10, 6), np.uint8)
    lesion[2:6, 3:7, 4] = 1
    prediction = np.full((8, 10, 6), 0.1, np.float32)
    prediction[lesion != 0] = 0.9
    labels, scores = metrics.slice_labels_and_scores(prediction, lesion)
    assert labels.tolist() == [False, False, False, False, True, False]
    assert int(np.argmax(scores)) == 4
    # slice 4: 16 of its 80 pixels at 0.9, the rest at 0.1; the other slices all 0.1
    assert scores.tolist() == pytest.approx([0.1, 0.1, 0.1, 0.1, (16 * 0.9 + 64 * 0.1) / 80, 0.1])
    sagittal_labels, _ = metrics.slice_labels_and_scores(prediction, lesion, axis=0)
    assert int(sagittal_labels.sum()) == 4 and int(labels.sum()) == 1
    scorer = metrics.SetScorer()
    scorer.add_case("one_axial_lesion", prediction, lesion)
    summary = scorer.summary()
    assert summary["slice_axis"] == 2
    assert summary["slice_ap"] == pytest.approx(1.0) and summary["slice_auroc"] == pytest.approx(1.0)


def test_sample_rule_any_pixel_or_image_label():
    prediction = np.array([[0.2, 0.4], [0.0, 0.2]])
    label, scores = metrics.sample_label_and_scores(prediction, np.array([[0, 0], [0, 1]]))
    assert label is True and scores["mean"] == pytest.approx(0.2)
    assert metrics.sample_label_and_scores(prediction, np.zeros((2, 2)))[0] is False
    assert metrics.sample_label_and_scores(prediction, None, image_label=True)[0] is True
    with pytest.raises(ValueError):
        metrics.sample_label_and_scores(prediction, None)


def test_sample_scores_mean_max_percentile_and_top_fraction():
    values = np.arange(1000, dtype=np.float64) / 1000  # 0.000 ... 0.999
    label, scores = metrics.sample_label_and_scores(values.reshape(10, 100), None, image_label=False)
    assert scores["mean"] == pytest.approx(0.4995)
    assert scores["max"] == pytest.approx(0.999)
    assert scores["p99"] == pytest.approx(np.percentile(values, 99))
    assert scores["top1%"] == pytest.approx(np.mean(values[-10:]))  # the highest 10 of 1000


def test_a_focal_anomaly_ranks_by_max_where_the_mean_ranks_it_below_a_bright_normal():
    """The mean rewards maps that are high everywhere; the maximum and top 1% a small hot spot."""
    scorer = metrics.SetScorer()
    normal = np.full((50, 50), 0.2)
    focal = np.full((50, 50), 0.05)
    focal[:5, :5] = 0.9  # 1% of the image
    scorer.add_case("normal", normal, None, image_label=False)
    scorer.add_case("pneumonia", focal, None, image_label=True)
    summary = scorer.summary()
    assert summary["sample_auroc"] == pytest.approx(0.0)  # the paper's mean: 0.0585 < 0.2
    assert summary["sample_scores"]["mean"]["auroc"] == pytest.approx(0.0)
    assert summary["sample_scores"]["max"]["auroc"] == pytest.approx(1.0)
    assert summary["sample_scores"]["top1%"]["auroc"] == pytest.approx(1.0)
    assert scorer.case_scores["pneumonia"]["score"] == pytest.approx(0.0585)


def test_chunked_ap_averages_chunks_and_skips_lesion_free_chunks():
    scorer = metrics.SetScorer()
    scorer.add_case("perfect", np.array([0.9, 0.1]), np.array([1, 0], np.uint8))
    scorer.add_case("half", np.array([0.1, 0.9]), np.array([1, 0], np.uint8))  # AP 0.5
    scorer.add_case("healthy", np.array([0.3, 0.3]), np.array([0, 0], np.uint8))
    # one chunk per volume: mean of per-volume APs, the healthy one skipped
    assert scorer.chunked_pixel_ap(chunk_volumes=1, shuffles=3) == pytest.approx(0.75)
    # two volumes a chunk: {perfect, half} gives the pooled AP of the two, {perfect, healthy} 1.0
    # with {half} 0.5, {half, healthy} 0.5 with {perfect} 1.0: each order's chunks, averaged
    two = metrics.ap_auroc(np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.1, 0.9]))[0]
    assert scorer.chunked_pixel_ap(chunk_volumes=2, shuffles=1, seed=0) in (pytest.approx(two), pytest.approx(0.75))
    # one chunk of everything: the pooled AP
    pooled = metrics.ap_auroc(np.array([1, 0, 1, 0, 0, 0]), np.array([0.9, 0.1, 0.1, 0.9, 0.3, 0.3]))[0]
    assert scorer.chunked_pixel_ap(chunk_volumes=20, shuffles=2) == pytest.approx(pooled)
    assert scorer.summary()["pixel_ap_chunked"] == pytest.approx(pooled)  # the paper's 20 volumes a chunk


def test_histogram_agrees_with_exact_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.random(200_000) < 0.02
    scores = np.clip(rng.normal(0.3 + 0.3 * labels, 0.15), -0.2, 1.2)
    histogram = metrics.ScoreHistogram()
    for part in np.array_split(np.arange(labels.size), 7):
        histogram.add(labels[part], scores[part])
    ap, auroc = histogram.ap_auroc()
    clipped = np.clip(scores, 0, 1)
    assert ap == pytest.approx(average_precision_score(labels, clipped), abs=1e-3)
    assert auroc == pytest.approx(roc_auc_score(labels, clipped), abs=1e-3)
    other = metrics.ScoreHistogram()
    other.merge(histogram)
    assert other.ap_auroc() == (ap, auroc)


def test_dice_threshold_and_oracle():
    lesion = np.array([1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.6, 0.7, 0.1, 0.0])
    assert metrics.dice(scores >= 0.5, lesion) == pytest.approx(2 * 2 / (2 + 3))
    accumulator = metrics.DiceAccumulator()
    accumulator.add(lesion, scores)
    assert accumulator.dice_at(0.5) == pytest.approx(0.8)
    threshold, best = accumulator.best_threshold()
    assert best == pytest.approx(0.8)  # 0.8 at any threshold in (0.1, 0.6]
    assert 0.1 < threshold <= 0.6
