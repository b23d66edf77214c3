"""The report files and their tables."""

import json

import numpy as np

from lightwork.evaluation import metrics, report


def _scorer(seed: int, separation: float) -> metrics.SetScorer:
    rng = np.random.default_rng(seed)
    scorer = metrics.SetScorer(dice_threshold=0.5)
    foreground = np.zeros((3, 24, 24), bool)
    foreground[:, 4:20, 4:20] = True
    for index in range(3):
        lesion = np.zeros((3, 24, 24), np.uint8)
        lesion[1, 8:14, 8:14] = 1
        # outside the foreground the scores are high: the two pixel figures differ
        prediction = np.clip(rng.normal(np.where(foreground, 0.2, 0.6) + separation * lesion, 0.1), 0, 1)
        scorer.add_case(f"case{index}", prediction, lesion, foreground)
    scorer.add_case("nomask", np.full((3, 24, 24), 0.3), None, None, image_label=False)
    return scorer


def test_report_files_and_tables(tmp_path):
    folds = {f"fold{i}": _scorer(i, 0.4 + 0.1 * i) for i in range(2)}
    ensemble = _scorer(9, 0.6)
    random_baseline = _scorer(5, 0.0)
    results = {
        "splits": {"1/4": {"folds": {k: s.summary() for k, s in folds.items()}, "ensemble": ensemble.summary()}},
        "baselines": {"random": random_baseline.summary()},
    }
    image = np.random.default_rng(0).random((1, 3, 24, 24))
    lesion = np.zeros((3, 24, 24), np.uint8)
    lesion[1, 8:14, 8:14] = 1
    panels = [report.panel_for_case("case0", image, lesion * 0.9, lesion)]
    path = report.write_report(
        tmp_path,
        results,
        {"ensemble": ensemble.pixels, "random": random_baseline.pixels},
        {"highest_scoring": panels, "worst": panels},
    )
    text = open(path).read()
    assert "| 1/4 / fold mean ± std |" in text and "| **1/4 / ensemble** |" in text and "| baseline: random |" in text
    assert "oracle" in text and "Pixel AP/AUROC: exact" in text
    assert "| pixel AP, all voxels (paper) |" in text and "| pixel AP, foreground |" in text
    assert "| pixel AUROC, all voxels (paper) |" in text and "| pixel AUROC, foreground |" in text
    assert "Slice level: axial slices (spatial axis 2)" in text
    summary = results["splits"]["1/4"]["ensemble"]
    assert summary["pixel_ap"] < summary["pixel_ap_foreground"]
    row = " | ".join(
        f"{100 * summary[key]:.1f}"
        for key in ("pixel_ap", "pixel_ap_chunked", "pixel_auroc", "pixel_ap_foreground", "pixel_auroc_foreground")
    )
    assert f"| **1/4 / ensemble** | {row} |" in text
    assert "sample level only (1): nomask" in text
    assert "(axial slice 8)" in panels[0].title
    for name in ("metrics.json", "curves.png", "montage_highest_scoring.png", "montage_worst.png"):
        assert (tmp_path / name).stat().st_size > 1000
    stored = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("pixel_ap", "pixel_ap_foreground", "pixel_auroc_foreground", "slice_axis"):
        assert stored["splits"]["1/4"]["ensemble"][key] == summary[key]
    ap_values = [s.summary()["pixel_ap"] for s in folds.values()]
    assert f"{100 * np.mean(ap_values):.1f} ± {100 * np.std(ap_values):.1f}" in text


def test_report_to_s3(s3_server, tmp_path):
    from lightwork.data import storage

    scorer = _scorer(0, 0.5)
    uri = report.write_report(
        f"s3://{s3_server['bucket']}/report",
        {"splits": {"1/4": {"ensemble": scorer.summary()}}},
        {"ensemble": scorer.pixels},
        {},
    )
    assert uri.endswith("/report/report.md")
    assert b"| **1/4 / ensemble** |" in storage.read_bytes(uri)
    assert storage.exists(f"s3://{s3_server['bucket']}/report/curves.png")


def test_metrics_json_is_strict_json(tmp_path):
    """A metric that is undefined (sample AUROC when every case has a lesion) is stored as null, not NaN."""
    scorer = metrics.SetScorer()
    lesion = np.zeros((3, 24, 24), np.uint8)
    lesion[1, 8:14, 8:14] = 1
    scorer.add_case("case0", lesion * 0.8, lesion, None)
    summary = scorer.summary()
    assert np.isnan(summary["sample_auroc"])
    report.write_report(tmp_path, {"splits": {"1/4": {"ensemble": summary}}}, {"ensemble": scorer.pixels}, {})

    def reject(constant):
        raise ValueError(f"metrics.json holds {constant}")

    stored = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=reject)
    assert stored["splits"]["1/4"]["ensemble"]["sample_auroc"] is None
    assert stored["splits"]["1/4"]["ensemble"]["pixel_ap"] == summary["pixel_ap"]


def test_a_long_list_of_maskless_cases_is_cut_in_the_report(tmp_path):
    scorer = metrics.SetScorer()
    for index in range(25):
        scorer.add_case(
            f"xray{index:02d}", np.full((16, 16), 0.1 * (index % 2)), None, None, image_label=bool(index % 2)
        )
    path = report.write_report(tmp_path, {"splits": {"1/4": {"ensemble": scorer.summary()}}}, {}, {})
    text = open(path).read()
    assert "sample level only (25): xray00, xray01," in text and "xray19 and 5 more (all in metrics.json)" in text
    assert "xray20" not in text
    assert len(json.loads((tmp_path / "metrics.json").read_text())["splits"]["1/4"]["ensemble"]["maskless_cases"]) == 25


def test_the_report_tabulates_every_sample_score_only_where_normal_and_anomalous_cases_are_scored(tmp_path):
    scorer = metrics.SetScorer()
    focal = np.full((20, 20), 0.05)
    focal[:3, :3] = 0.9  # 2% of the image: above its 99th percentile too
    scorer.add_case("normal", np.full((20, 20), 0.2), None, image_label=False)
    scorer.add_case("pneumonia", focal, None, image_label=True)
    intensity = metrics.SetScorer()
    intensity.add_case("normal", np.full((20, 20), 0.5), None, image_label=False)
    intensity.add_case("pneumonia", np.full((20, 20), 0.6), None, image_label=True)
    summaries = {"splits": {"1/4": {"ensemble": scorer.summary()}}, "baselines": {"intensity": intensity.summary()}}
    text = open(report.write_report(tmp_path / "both", summaries, {}, {})).read()
    assert "## Sample-level scores" in text
    assert "| model | mean (the paper's): AP / AUROC | max: AP / AUROC | p99: AP / AUROC | top1%: AP / AUROC |" in text
    assert "| 1/4 / ensemble | 50.0 / 0.0 | 100.0 / 100.0 | 100.0 / 100.0 | 100.0 / 100.0 |" in text
    assert "| baseline: intensity | 100.0 / 100.0 |" in text
    stored = json.loads((tmp_path / "both" / "metrics.json").read_text())
    assert stored["splits"]["1/4"]["ensemble"]["sample_scores"]["max"] == {"ap": 1.0, "auroc": 1.0}
    lesion = np.zeros((16, 16), np.uint8)
    lesion[4:8, 4:8] = 1
    brains = metrics.SetScorer()
    brains.add_case("lesioned", lesion * 0.7, lesion)  # every case anomalous: no sample AUROC
    text = open(
        report.write_report(tmp_path / "lesions", {"splits": {"1/4": {"ensemble": brains.summary()}}}, {}, {})
    ).read()
    assert "Sample-level scores" not in text


def test_intensity_warning_compares_the_test_set_with_the_training_manifest(tmp_path):
    from lightwork.data.manifest import write_manifest
    from lightwork.evaluation.evaluate import intensity_warning

    def row(case_id: str, percentiles: list[float]) -> dict:
        return {"case_id": case_id, "status": "ok", "foreground_percentiles": percentiles}

    training = [row("t0", [-2.0, -1.6, -0.6, 0.0, 0.6, 1.6, 2.0]), row("t1", [-2.1, -1.6, -0.7, 0.0, 0.7, 1.6, 2.1])]
    write_manifest(str(tmp_path / "train"), training)
    alike = [row("a", [-2.0, -1.5, -0.6, 0.0, 0.6, 1.7, 2.1])]
    darker_rim = [row("b", [-4.2, -2.9, -0.8, 0.1, 0.7, 1.5, 2.0])]
    assert intensity_warning(str(tmp_path / "train"), alike) is None
    warning = intensity_warning(str(tmp_path / "train"), darker_rim)
    assert warning.startswith("Warning: the test set's foreground intensity percentiles differ from the training")
    assert "by up to -2.15 (at percentile 1: -4.20 against -2.05; tolerance 0.5)" in warning
    gone = intensity_warning(str(tmp_path / "nowhere"), alike)
    assert gone == f"Intensity convention not checked: the training manifest {tmp_path / 'nowhere'} is gone."


def test_a_3d_case_is_shown_by_its_axial_slice_with_the_most_lesion_anterior_up():
    image = np.zeros((1, 6, 8, 5), np.float32)
    image[0, :, 7, :] = 1.0  # the most anterior row (y = 7) is bright
    lesion = np.zeros((6, 8, 5), np.uint8)
    lesion[2:4, 3:5, 3] = 1  # axial slice z = 3 holds the lesion
    lesion[1, 1, 1] = 1
    panel = report.panel_for_case("case", image, lesion * 0.5, lesion)
    assert panel.title == "case (axial slice 3)"
    assert panel.image.shape == (8, 6) and panel.image[0].all() and not panel.image[1:].any()  # [Y, X], anterior up
    np.testing.assert_array_equal(panel.lesion, lesion[:, :, 3].T[::-1])
