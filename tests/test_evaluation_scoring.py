"""SetScorer over whole cases, baselines, maskless cases and shape mismatches."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from lightwork.evaluation import baselines, metrics


def _volume(seed: int, with_lesion: bool = True):
    rng = np.random.default_rng(seed)
    lesion = np.zeros((4, 16, 16), np.uint8)
    if with_lesion:
        lesion[1:3, 4:8, 4:8] = 1
    prediction = np.clip(rng.normal(0.2 + 0.5 * lesion, 0.1), 0, 1).astype(np.float32)
    foreground = np.ones_like(lesion, bool)
    return prediction, lesion, foreground


@pytest.mark.parametrize("exact_voxel_limit", [10**6, 100])
def test_set_scorer_matches_exact_metrics(exact_voxel_limit):
    scorer = metrics.SetScorer(dice_threshold=0.45, exact_voxel_limit=exact_voxel_limit)
    cases = [_volume(seed, with_lesion=seed != 2) for seed in range(4)]
    for index, (prediction, lesion, foreground) in enumerate(cases):
        scorer.add_case(f"c{index}", prediction, lesion, foreground)
    summary = scorer.summary()
    assert summary["pixel_exact"] is (exact_voxel_limit > 4 * 16 * 16 * 4)
    labels = np.concatenate([lesion.ravel() for _, lesion, _ in cases])
    scores = np.concatenate([prediction.ravel() for prediction, _, _ in cases])
    exact_ap, exact_auroc = metrics.ap_auroc(labels, scores)
    assert summary["pixel_ap"] == pytest.approx(exact_ap, abs=1e-3)
    assert summary["pixel_auroc"] == pytest.approx(exact_auroc, abs=1e-3)
    # every voxel is foreground here: the foreground figures are the all-voxel ones
    assert summary["pixel_ap_foreground"] == pytest.approx(summary["pixel_ap"], abs=1e-12)
    assert summary["pixel_auroc_foreground"] == pytest.approx(summary["pixel_auroc"], abs=1e-12)
    assert summary["pixel_ap_chunked"] == pytest.approx(exact_ap, abs=2e-3)  # 4 volumes: one chunk
    assert summary["sample_ap"] == pytest.approx(1.0)  # the lesion-free volume has the lowest mean
    assert summary["cases"] == 4 and summary["maskless_cases"] == []
    assert summary["slice_axis"] == 2 and summary["slice_ap"] == pytest.approx(1.0)
    assert 0.8 < summary["dice"] <= summary["oracle_dice"]


@pytest.mark.parametrize("exact_voxel_limit", [10**6, 100])
def test_pixel_level_over_all_voxels_and_over_the_foreground(exact_voxel_limit):
    """Background outside the foreground scores high (0.9), above the lesion (0.7): over all voxels
    it outranks every lesion voxel, over the foreground the lesion ranks first."""
    foreground = np.zeros((6, 6, 4), bool)
    foreground[1:5, 1:5, :] = True  # 64 of 144 voxels
    lesion = np.zeros((6, 6, 4), np.uint8)
    lesion[2:4, 2:4, 1:3] = 1  # 8 voxels, inside the foreground
    prediction = np.where(foreground, 0.3, 0.9)
    prediction[lesion != 0] = 0.7
    scorer = metrics.SetScorer(dice_threshold=0.5, exact_voxel_limit=exact_voxel_limit)
    scorer.add_case("bright_background", prediction, lesion, foreground)
    summary = scorer.summary()
    assert summary["pixel_exact"] is (exact_voxel_limit > prediction.size)
    truth = lesion.ravel() != 0
    expected_ap = average_precision_score(truth, prediction.ravel())
    expected_auroc = roc_auc_score(truth, prediction.ravel())
    assert expected_ap == pytest.approx(8 / 88) and expected_auroc == pytest.approx(56 / 136)  # 80 above, 56 below
    inside = foreground.ravel()
    assert average_precision_score(truth[inside], prediction.ravel()[inside]) == 1.0
    assert roc_auc_score(truth[inside], prediction.ravel()[inside]) == 1.0
    tolerance = 1e-12 if summary["pixel_exact"] else 1e-3
    assert summary["pixel_ap"] == pytest.approx(expected_ap, abs=tolerance)
    assert summary["pixel_auroc"] == pytest.approx(expected_auroc, abs=tolerance)
    assert summary["pixel_ap_foreground"] == pytest.approx(1.0, abs=tolerance)
    assert summary["pixel_auroc_foreground"] == pytest.approx(1.0, abs=tolerance)
    assert summary["pixel_ap_chunked"] == pytest.approx(expected_ap, abs=1e-3)  # all voxels, one volume
    # Dice over all voxels: the 80 bright background voxels count as false positives at 0.5
    assert summary["dice"] == pytest.approx(2 * 8 / (8 + 88), abs=1e-3)


def test_maskless_case_is_scored_at_sample_level_only():
    scorer = metrics.SetScorer()
    prediction, lesion, foreground = _volume(0)
    scorer.add_case("with_mask", prediction, lesion, foreground)
    scorer.add_case("no_mask", np.full((4, 16, 16), 0.9, np.float32), None, foreground, image_label=True)
    summary = scorer.summary()
    assert summary["maskless_cases"] == ["no_mask"]
    assert summary["cases"] == 2 and summary["cases_with_mask"] == 1
    assert int(scorer.pixels.positive.sum() + scorer.pixels.negative.sum()) == prediction.size
    with pytest.raises(ValueError, match="no_label"):
        scorer.add_case("no_label", prediction, None, foreground)


def test_shape_mismatch_names_the_case():
    scorer = metrics.SetScorer()
    with pytest.raises(ValueError, match="case brats_007.*prediction shape"):
        scorer.add_case("brats_007", np.zeros((4, 16, 15)), np.zeros((4, 16, 16), np.uint8))


def test_baselines_computed():
    image = np.zeros((1, 4, 16, 16), np.float32)
    image[0, 1:3, 4:8, 4:8] = 5.0  # hyperintense lesion
    image[0] += np.random.default_rng(0).normal(0, 0.1, image.shape[1:]).astype(np.float32)
    lesion = (image[0] > 2).astype(np.uint8)
    foreground = np.ones(image.shape[1:], bool)
    results = {}
    for name in baselines.BASELINES:
        scores = baselines.baseline_scores(name, "case", image, foreground)
        assert scores.shape == lesion.shape and scores.min() >= 0 and scores.max() <= 1
        results[name] = metrics.ap_auroc(lesion, scores)[0]
    assert results["intensity"] == pytest.approx(1.0)
    assert results["random"] < 0.2  # lesion fraction is 32/1024
    np.testing.assert_array_equal(
        baselines.baseline_scores("random", "case", image, foreground),
        baselines.baseline_scores("random", "case", image, foreground),
    )
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.baseline_scores("nope", "case", image, foreground)
