"""2D-slice training of volumes end to end on the tiny config: NIfTI volumes (three with lesion
masks) prepared with the brain recipe, split 1/4 trained on their axial slices (lesion-free slices
of the lesion cases on) through the real stream, Train and Tune; then a new oblique scan predicted
slice by slice into a map on its own grid, and the run evaluated into 3D outputs and a report
that says how it was trained."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from lightwork.config import load_config
from lightwork.data import manifest, readers
from lightwork.data.cases import load_case
from lightwork.data.discover import CaseSource
from lightwork.data.prepare import prepare_case, with_folds
from lightwork.data.recipes import make_recipe
from lightwork.data.slices import training_samples
from lightwork.demo import smooth_noise
from lightwork.training.folds import steps_per_epoch

pytestmark = pytest.mark.slow

OPTIONS = {"skull_stripped": True, "spacing_mm": 3.0, "shape": [16, 20, 16], "downsample": 1}
RAW = (24, 28, 20)  # input volumes, 2 mm voxels
AXIS = 2
BATCH = 4
LESION_CASES = ("vol01", "vol04", "vol07")


def oblique_affine() -> np.ndarray:
    """2 mm voxels rotated 15 degrees about z, shifted."""
    angle = np.radians(15)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]) * 2
    affine[:3, 3] = [-20.0, 12.0, -8.0]
    return affine


def volume(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(float32 RAW: smooth noise around 100 in an ellipsoid, 0 outside; uint8 lesion ball, +50 inside)."""
    rng = np.random.default_rng(seed)
    index = np.indices(RAW).astype(float)
    centre = (np.array(RAW) - 1) / 2
    inside = sum(((index[a] - centre[a]) / (0.42 * RAW[a])) ** 2 for a in range(3)) <= 1
    image = np.where(inside, 100 + 10 * smooth_noise(rng, RAW, 2.0), 0).astype(np.float32)
    lesion = (sum((index[a] - (centre[a] + 2)) ** 2 for a in range(3)) <= 9) & inside
    return image, lesion.astype(np.uint8)


@pytest.fixture(scope="module")
def sliced_run(tmp_path_factory, ray_session):
    """(run folder, prepared data folder, train_splits records, the console): 10 volumes, split 1/4."""
    from lightwork.distributed.train import train_splits
    from lightwork.training.resolve import resolve_run

    tmp = tmp_path_factory.mktemp("slices")
    raw, prepared = tmp / "raw", tmp / "prepared"
    raw.mkdir()
    rows = []
    for index in range(10):
        case_id = f"vol{index:02d}"
        image, lesion = volume(index)
        nib.save(nib.Nifti1Image(image, oblique_affine()), raw / f"{case_id}.nii.gz")
        lesion_uri = None
        if case_id in LESION_CASES:
            nib.save(nib.Nifti1Image(lesion, oblique_affine()), raw / f"{case_id}_seg.nii.gz")
            lesion_uri = str(raw / f"{case_id}_seg.nii.gz")
        source = CaseSource(case_id, str(raw / f"{case_id}.nii.gz"), lesion=lesion_uri)
        result = prepare_case(source, make_recipe("brain", **OPTIONS), str(prepared))
        assert result.row["status"] == "ok", result.row["error"]
        rows.append(result.row)
    data = manifest.write_manifest(str(prepared), with_folds(rows))
    overrides = [
        "name=sliced",
        f"storage_path={tmp / 'runs'}",
        f"data.manifest={data}",
        "model.spatial_dims=2",
        "model.features=[4,8]",
        f"data.slice_axis={AXIS}",
        "data.min_slice_foreground=0.2",
        "data.lesion_free_slices=true",
        f"train.batch_size={BATCH}",
        "train.val_batch_size=8",
        "train.max_epochs=1",
        "train.warmup_steps=1",
        "resources.cpus_per_worker=0.5",
        "resources.max_concurrent_trials=2",
    ]
    config = load_config(preset="tiny", overrides=overrides)
    records = train_splits(resolve_run(config, "1/4"), folds=[0, 2])  # two folds: the slicing is every fold's
    return str(tmp / "runs" / "sliced"), str(prepared), records


def test_a_split_trains_2d_models_on_the_slices_of_volumes(sliced_run, capsys):
    run, prepared, records = sliced_run
    assert all(record.status == "done" for record in records), [record.error for record in records]
    samples = training_samples(manifest.usable(manifest.read_manifest(prepared)), AXIS, 0.2, lesion_free_slices=True)
    assert samples.lesion_cases == len(LESION_CASES) and 0 < samples.lesion_case_slices
    for record in records:
        # an epoch goes over the fold's training slices, not its cases
        assert record.steps == steps_per_epoch(samples.count(record.train_folds), BATCH) > 3
        config = json.loads(open(f"{record.best_checkpoint}/model.json").read())
        assert config["spatial_dims"] == 2
    saved = load_config(f"{run}/config.yaml")
    assert saved.data.slice_axis == AXIS and saved.data.lesion_free_slices and saved.model.spatial_dims == 2


def test_a_new_scan_is_predicted_slice_by_slice_into_its_own_geometry(sliced_run, tmp_path):
    from lightwork.distributed.predict import predict
    from lightwork.inference.ensemble import run_ensemble
    from lightwork.inference.package import export_package, load_ensemble

    run, _, _ = sliced_run
    image, _ = volume(42)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image, oblique_affine()), scan)
    out = tmp_path / "out"
    [result] = predict(str(scan), str(out), run)
    assert result.row["status"] == "ok", result.row["error"]
    for name in ("scan.nii.gz", "scan_mask.nii.gz"):
        written = nib.load(str(out / name))
        assert written.shape == RAW
        np.testing.assert_allclose(written.affine, oblique_affine(), atol=1e-5)
    assert np.isfinite(nib.load(str(out / "scan.nii.gz")).get_fdata()).all()
    assert result.row["slice_score_max"] >= result.row["slice_score_mean"] >= 0

    # The ensemble's map on the model grid is its 2D models' maps of each slice, put back in place.
    ensemble = run_ensemble(run)
    assert ensemble.slice_axis == AXIS and ensemble.input_dims == 3
    case = ensemble.recipe("scan", readers.read_image(str(scan)))
    scores = ensemble.predict(case.image)
    assert scores.shape == tuple(OPTIONS["shape"])
    with torch.inference_mode():
        by_hand = [
            np.stack(
                [
                    network(torch.from_numpy(np.ascontiguousarray(case.image[:, :, :, k]))[None])[0, 0].numpy()
                    for k in range(case.image.shape[1 + AXIS])
                ],
                axis=AXIS,
            )
            for network in ensemble.networks
        ]
    np.testing.assert_allclose(scores, np.mean(by_hand, axis=0), rtol=0, atol=1e-5)
    # a package carries the slice axis: its ensemble predicts the same map
    package = tmp_path / "model.lwpkg"
    export_package(run, None, str(package))
    packaged = load_ensemble(str(package))
    assert packaged.slice_axis == AXIS
    np.testing.assert_array_equal(packaged.predict(case.image), scores)


def test_the_evaluation_keeps_every_3d_output_and_says_how_the_run_trained(sliced_run, tmp_path):
    """Through `lightwork evaluate` (on the session's Ray, which the job attaches to)."""
    from lightwork.cli import main

    run, prepared, _ = sliced_run
    out = tmp_path / "report"
    assert main(["evaluate", "--models", run, "--data", prepared, "--out", str(out), "--no-baselines"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    ensemble = metrics["splits"]["1/4"]["ensemble"]
    assert 0 <= ensemble["pixel_ap"] <= 1 and 0 <= ensemble["slice_auroc"] <= 1
    report = (out / "report.md").read_text()
    assert f"2D models trained on slices along axis {AXIS}" in report
    assert "lesion-free slices of lesion cases as extra healthy training data: on" in report
    uris = {row["case_id"]: row["array_uri"] for row in manifest.read_manifest(prepared)}
    for case_id in ("vol00", LESION_CASES[0]):
        case = load_case(uris[case_id])
        grid = np.load(out / "predictions" / "split1-4" / "ensemble" / "grid" / f"{case_id}.npy")
        assert grid.shape == tuple(OPTIONS["shape"])
        source = nib.load(str(out / "predictions" / "split1-4" / "ensemble" / "source" / f"{case_id}.nii.gz"))
        assert source.shape == case.source_shape == RAW
        np.testing.assert_allclose(source.affine, case.source_affine, atol=1e-5)
    assert list(out.glob("montage_*.png")) and (out / "curves.png").exists()
