"""SetScorer over whole cases, baselines, maskless cases and shape mismatches."""

import numpy as np
import pytest

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
    assert summary["pixel_ap_chunked"] == pytest.approx(exact_ap, abs=2e-3)  # 4 volumes: one chunk
    assert summary["sample_ap"] == pytest.approx(1.0)  # the lesion-free volume has the lowest mean
    assert summary["cases"] == 4 and summary["maskless_cases"] == []
    assert summary["slice_ap"] == pytest.approx(1.0)
    assert 0.8 < summary["dice"] <= summary["oracle_dice"]


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
