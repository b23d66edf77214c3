"""Prediction through real Ray Data with real (untrained, tiny) lightwork U-Net checkpoints loaded by
`lightwork.models.load_model`, then scoring and the report."""

import nibabel as nib
import numpy as np
import pytest
import torch

from lightwork.data.cases import PreparedCase, load_case, save_case
from lightwork.data.manifest import read_manifest, write_manifest
from lightwork.distributed.evaluate import evaluate_run, predict_cases, prediction_table, run_fold_models
from lightwork.errors import UserError
from lightwork.evaluation import outputs
from lightwork.evaluation.evaluate import evaluate_predictions
from lightwork.models import PRESETS, UNet, save_model
from lightwork.training import runs
from lightwork.training.folds import ENSEMBLE, model_key, parse_model_key, plan_split


def tiny_unet(seed: int) -> UNet:
    """The `tiny` 3D preset with seeded random weights: [B, 1, *S] -> raw scores [B, 1, *S]."""
    torch.manual_seed(seed)
    return UNet(PRESETS["tiny"]).eval()


def _dataset(tmp_path, failed: int = 0, labels: bool = True):
    """Three 4x12x12 cases (case0 and case1 with a lesion mask unless `labels` is False, case2 with
    none) and `failed` rows that failed in prepare, as manifest rows."""
    rows = []
    rng = np.random.default_rng(0)
    for index in range(3):
        image = rng.normal(0, 1, (1, 4, 12, 12)).astype(np.float32)
        lesion = np.zeros((4, 12, 12), np.uint8)
        lesion[1:3, 3:6, 3:6] = index != 1
        image[0][lesion != 0] += 3
        source_affine = np.diag([2.0, 2.0, 2.0, 1.0])
        case = PreparedCase(
            f"case{index}",
            image,
            np.ones((4, 12, 12), bool),
            None if index == 2 or not labels else lesion,
            affine=np.eye(4),
            source_affine=source_affine,
            source_shape=(2, 6, 6),
        )
        uri = str(tmp_path / "data" / f"case{index}.npz")
        save_case(uri, case)
        rows.append(
            {
                "case_id": case.case_id,
                "array_uri": uri,
                "fold": index,
                "has_lesion": index != 2 and labels,
                "status": "ok",
            }
        )
    rows += [
        {"case_id": f"bad{index}", "status": "failed", "error": f"case bad{index}: not a readable NIfTI"}
        for index in range(failed)
    ]
    write_manifest(str(tmp_path / "data"), rows)
    return [row for row in read_manifest(str(tmp_path / "data")) if row["status"] == "ok"]


def _run(tmp_path) -> str:
    """A training run folder: folds 0 and 1 of split 1/4 with tiny checkpoints, fold 4 failed."""
    records = [runs.FoldRecord.from_plan(plan) for plan in plan_split("1/4")]
    for index in range(2):
        path = tmp_path / "run" / f"fold{index}"
        save_model(tiny_unet(index), str(path))
        records[index].best_checkpoint, records[index].status = str(path), "done"
        records[index].val_dice_threshold = 0.4 + 0.1 * index
    records[4].status = "failed"
    runs.write_folds(str(tmp_path / "run"), [records[0], records[1], records[4]])
    return str(tmp_path / "run")


def test_predict_ensemble_and_report(ray_session, tmp_path, capfd):
    cases = _dataset(tmp_path)
    models = run_fold_models(_run(tmp_path))
    assert [m.name for m in models] == ["split1-4_tasks0", "split1-4_tasks1"]
    assert [m.val_dice_threshold for m in models] == [0.4, 0.5]

    out = str(tmp_path / "predictions")
    bad = {"case_id": "broken", "array_uri": str(tmp_path / "missing.npz")}
    rows = predict_cases(models, cases + [bad], out, workers=1)
    # Inference runs as Ray Data tasks: no actor pool, so no Ray C++ warning about actor restarts
    # whose constructor arguments sit in the object store (ray-project/ray#53727) on the console.
    assert "core_worker" not in capfd.readouterr().err
    uris, errors = prediction_table(rows)
    assert errors == [f"{bad['array_uri']}: prepared case not found"]  # the file and the problem, no type name
    ensemble_key = model_key("1/4", ENSEMBLE)
    assert set(uris) == {m.key for m in models} | {ensemble_key}

    case = load_case(cases[0]["array_uri"])
    with torch.inference_mode():
        fold_outputs = [tiny_unet(i)(torch.from_numpy(case.image[None])).numpy()[0, 0] for i in range(2)]
    ensemble = outputs.read_prediction(uris[ensemble_key]["case0"])
    np.testing.assert_allclose(outputs.read_prediction(uris[models[0].key]["case0"]), fold_outputs[0], atol=1e-5)
    np.testing.assert_allclose(ensemble, np.mean(fold_outputs, axis=0), atol=1e-5)
    nifti = nib.load(str(tmp_path / "predictions" / "split1-4" / "ensemble" / "source" / "case0.nii.gz"))
    assert nifti.shape == (2, 6, 6)
    np.testing.assert_allclose(nifti.affine, np.diag([2.0, 2.0, 2.0, 1.0]))
    # source voxel j sits at model voxel 2j: linear resampling hits grid points exactly
    np.testing.assert_allclose(nifti.get_fdata()[1, 2, 3], ensemble[2, 4, 6], atol=1e-5)

    cases[2]["image_label"] = False  # maskless case with an image-level label
    unlabelled = dict(cases[1], case_id="case1_unlabelled")
    uris = {key: dict(by_case, case1_unlabelled=by_case["case1"]) for key, by_case in uris.items()}
    no_mask = tmp_path / "data" / "nomask.npz"
    save_case(str(no_mask), PreparedCase("case1_unlabelled", case.image, case.foreground))
    unlabelled["array_uri"] = str(no_mask)
    metrics = evaluate_predictions(cases + [unlabelled], uris, tmp_path / "report", dice_threshold=0.5)
    assert metrics["unscored_cases"] == ["case1_unlabelled"]
    assert metrics["splits"]["1/4"]["ensemble"]["maskless_cases"] == ["case2"]
    assert set(metrics["splits"]["1/4"]["folds"]) == {"split1-4_tasks0", "split1-4_tasks1"}
    assert set(metrics["baselines"]) == {"random", "intensity", "intensity_thresholded"}
    assert metrics["baselines"]["intensity"]["pixel_auroc"] > 0.9
    text = (tmp_path / "report" / "report.md").read_text()
    assert "no lesion mask and no image label (1): case1_unlabelled" in text
    assert "| **1/4 / ensemble** |" in text and "sample level only (1): case2" in text
    assert (tmp_path / "report" / "montage_worst_split1-4_ensemble.png").exists()


def test_prediction_shape_mismatch_names_case(tmp_path):
    cases = _dataset(tmp_path)
    uri = str(tmp_path / "wrong.npy")
    np.save(uri, np.zeros((4, 12, 11), np.float32))
    with pytest.raises(ValueError, match="case case0: prediction shape"):
        evaluate_predictions(cases[:1], {"split1-4/ensemble": {"case0": uri}}, tmp_path / "report")


def test_2d_prediction_written_in_source_geometry(tmp_path):
    image = np.zeros((1, 8, 8), np.float32)
    case = PreparedCase(
        "cxr0",
        image,
        np.ones((8, 8), bool),
        affine=np.diag([0.5, 0.5, 1.0, 1.0]),
        source_affine=np.eye(4),
        source_shape=(4, 4),
    )
    prediction = np.arange(64, dtype=np.float32).reshape(8, 8) / 64
    uri = outputs.write_prediction(str(tmp_path), "split1-4/ensemble", case, prediction)
    np.testing.assert_array_equal(outputs.read_prediction(uri), prediction)
    source = np.load(tmp_path / "split1-4" / "ensemble" / "source" / "cxr0.npy")
    assert source.shape == (4, 4)
    np.testing.assert_allclose(source[1, 3], prediction[2, 6])  # source voxel j = model voxel 2j
    assert (tmp_path / "split1-4" / "ensemble" / "source" / "cxr0.png").stat().st_size > 0


def test_evaluate_run_names_the_failed_manifest_rows(ray_session, tmp_path, capsys):
    _dataset(tmp_path, failed=2)
    assert evaluate_run(_run(tmp_path), str(tmp_path / "data"), str(tmp_path / "report"), with_baselines=False) == 0
    line = (
        "Not evaluated, failed in prepare (2): bad0 (case bad0: not a readable NIfTI); "
        "bad1 (case bad1: not a readable NIfTI)"
    )
    console = capsys.readouterr()
    assert line in console.err.splitlines() and "1/4 ensemble: pixel AP" in console.out
    assert line in (tmp_path / "report" / "report.md").read_text()


def test_evaluate_run_refuses_what_it_cannot_score(tmp_path):
    """Each refusal comes before any prediction: no Ray is needed."""
    _dataset(tmp_path, labels=False)
    with pytest.raises(
        UserError, match=f"^{tmp_path}/data: none of the 3 usable cases has a lesion mask or an image label"
    ):
        evaluate_run(_run(tmp_path), str(tmp_path / "data"), str(tmp_path / "report"))
    assert not (tmp_path / "report").exists()  # refused before any prediction
    with pytest.raises(UserError, match=f"^{tmp_path}/absent/manifest.parquet: no manifest there"):
        evaluate_run(_run(tmp_path), str(tmp_path / "absent"), str(tmp_path / "report"))
    _dataset(tmp_path)
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(
        UserError, match=f"^{tmp_path}/not-a-run: not a lightwork training run \\(no folds.json there\\)$"
    ):
        evaluate_run(str(tmp_path / "not-a-run"), str(tmp_path / "data"), str(tmp_path / "report"))
    runs.write_folds(str(tmp_path / "untrained"), [runs.FoldRecord.from_plan(plan_split("1/4")[0])])
    with pytest.raises(UserError, match="untrained/folds.json: no fold has a best checkpoint yet"):
        evaluate_run(str(tmp_path / "untrained"), str(tmp_path / "data"), str(tmp_path / "report"))
    write_manifest(str(tmp_path / "failed"), [{"case_id": "bad0", "status": "failed", "error": "case bad0: empty"}])
    with pytest.raises(UserError, match="failed: no usable case to evaluate \\(1 rows, all failed in prepare\\)"):
        evaluate_run(_run(tmp_path), str(tmp_path / "failed"), str(tmp_path / "report"))


def test_model_keys_are_made_and_parsed_in_one_place():
    plan = plan_split("2/3")[9]
    assert plan.name == "split2-3_tasks3-4" and model_key(plan.split, plan.name) == "split2-3/split2-3_tasks3-4"
    assert parse_model_key(model_key(plan.split, plan.name)) == ("2/3", plan.name)
    assert parse_model_key(model_key("4/1", ENSEMBLE)) == ("4/1", "ensemble")
