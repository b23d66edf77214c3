"""`lightwork predict` and `lightwork export` with real fold models: one tiny 3D run per module,
trained through the real path (prepare_case -> manifest -> train_splits on Ray), and the session's
tiny 2D run of `lightwork train` (cli_2d_run).

Geometry: the maps of a NIfTI (oblique, LPS and RAS) and of a pydicom-written DICOM series in
shuffled file order have the input's exact shape and affine; where the tiny models are too weak to
find a blob, an injected model output (the prepared image itself as the score) shows that the top
voxel lands at the blob's world position, through the same recipe, resampling and writing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from lightwork.config import load_config
from lightwork.data import manifest
from lightwork.data.discover import CaseSource
from lightwork.data.prepare import prepare_case, with_folds
from lightwork.data.recipes import make_recipe
from lightwork.demo import smooth_noise
from lightwork.distributed.predict import predict
from lightwork.inference import predict as inference
from lightwork.inference.ensemble import Ensemble, run_ensemble
from lightwork.inference.package import export_package, load_ensemble

pytestmark = pytest.mark.slow

BRAIN_OPTIONS = {"skull_stripped": True, "spacing_mm": 3.0, "shape": [16, 16, 16], "downsample": 1}
SHAPE = (24, 28, 20)  # input volumes, 2 mm voxels


def brain_volume(seed: int, blob: tuple[int, int, int] | None = None) -> np.ndarray:
    """float32 SHAPE: smooth noise around 100 inside an ellipsoid, 0 outside; +60 in a 2-voxel
    radius ball around voxel `blob`."""
    rng = np.random.default_rng(seed)
    index = np.indices(SHAPE).astype(float)
    centre = (np.array(SHAPE) - 1) / 2
    inside = sum(((index[a] - centre[a]) / (0.42 * SHAPE[a])) ** 2 for a in range(3)) <= 1
    volume = np.where(inside, 100 + 10 * smooth_noise(rng, SHAPE, 2.0), 0).astype(np.float32)
    if blob is not None:
        ball = sum((index[a] - blob[a]) ** 2 for a in range(3)) <= 4
        volume[ball & inside] += 60
    return volume


def rotation(*degrees: float) -> np.ndarray:
    """Rotation about x, then y, then z by the given angles."""
    total = np.eye(3)
    for axis, angle in enumerate(np.radians(degrees)):
        c, s = np.cos(angle), np.sin(angle)
        plane = [a for a in range(3) if a != axis]
        step = np.eye(3)
        step[np.ix_(plane, plane)] = [[c, -s], [s, c]]
        total = step @ total
    return total


def oblique_affine(codes: str) -> np.ndarray:
    """2 mm voxels, rotated 12/8/20 degrees, axes pointing closest to RAS or LPS."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(12, 8, 20) * 2.0
    if codes == "LPS":
        affine[:3, :2] *= -1
    affine[:3, 3] = [-30.0, 25.0, -10.0]
    return affine


def train_run(tmp, ray_session, name: str, recipe: str, options: dict, images: list[tuple[str, bytes]]):
    """Prepare 3D `images` (file name, bytes) with the recipe, train split 1/4 with the tiny config."""
    from lightwork.distributed.train import train_splits
    from lightwork.training.resolve import resolve_run

    raw, prepared = tmp / f"{name}-raw", tmp / f"{name}-prepared"
    raw.mkdir()
    rows = []
    for file_name, payload in images:
        (raw / file_name).write_bytes(payload)
        result = prepare_case(
            CaseSource(file_name.split(".")[0], str(raw / file_name)), make_recipe(recipe, **options), str(prepared)
        )
        assert result.row["status"] == "ok", result.row["error"]
        rows.append(result.row)
    data = manifest.write_manifest(str(prepared), with_folds(rows))
    overrides = [
        f"name={name}",
        f"storage_path={tmp / 'runs'}",
        f"data.manifest={data}",
        "model.spatial_dims=3",
        "model.features=[4,8]",
        "train.batch_size=2",
        "train.val_batch_size=4",
        "train.max_epochs=1",
        "train.warmup_steps=1",
        "resources.cpus_per_worker=0.5",
        "resources.max_concurrent_trials=2",
    ]
    # Two of the split's five folds (the prediction paths are those of any ensemble; fewer Train runs).
    records = train_splits(resolve_run(load_config(preset="tiny", overrides=overrides), "1/4"), folds=[0, 3])
    assert [record.index for record in records] == [0, 3]
    assert all(record.status == "done" for record in records), [record.error for record in records]
    return str(tmp / "runs" / name)


def nifti(volume: np.ndarray, affine: np.ndarray) -> bytes:
    return nib.Nifti1Image(volume, affine).to_bytes()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def brain_run(tmp_path_factory, ray_session) -> str:
    """A 3D run folder: brain recipe (skull-stripped, 3 mm, 16^3), split 1/4, folds 0 and 3, 1 epoch."""
    brains = [(f"brain{i:02d}.nii", nifti(brain_volume(i), oblique_affine("RAS"))) for i in range(10)]
    return train_run(tmp_path_factory.mktemp("brain-run"), ray_session, "brain", "brain", BRAIN_OPTIONS, brains)


@pytest.fixture(scope="module")
def cxr_run(cli_2d_run) -> str:
    """A 2D run folder: the session's tiny run of `lightwork train` (cxr recipe at 24x24, split
    1/4, 5 folds, 1 epoch)."""
    assert cli_2d_run.returncode == 0, cli_2d_run.console[-3000:]
    return str(cli_2d_run.run)


@pytest.fixture
def runs(request) -> dict:
    """Lazily {"brain": ..., "cxr": ...}: a run is trained only when a test asks for it."""

    class Runs(dict):
        def __missing__(self, key):
            return self.setdefault(key, request.getfixturevalue(f"{key}_run"))

    return Runs()


class ImageAsScore(torch.nn.Module):
    """An injected model output: the prepared image's first channel as the score."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image[:, :1] + self.anchor


def image_as_score(ensemble: Ensemble) -> Ensemble:
    return Ensemble(
        ensemble.split,
        ["image"],
        [ImageAsScore(ensemble.networks[0].config)],
        ensemble.recipe_name,
        ensemble.recipe_options,
        ensemble.threshold,
        "injected",
    )


def top_voxel_world(path) -> np.ndarray:
    image = nib.load(str(path))
    index = np.unravel_index(np.argmax(image.get_fdata()), image.shape)
    return (image.affine @ [*index, 1.0])[:3]


def read_scores(out) -> list[dict]:
    with open(out / "scores.csv") as handle:
        return list(csv.DictReader(handle))


def test_the_run_records_its_recipe_and_its_threshold(runs):
    config = load_config(os.path.join(runs["brain"], "config.yaml"))
    assert config.data.recipe == "brain" and config.data.recipe_options["spacing_mm"] == 3.0
    ensemble = run_ensemble(runs["brain"])
    records = json.loads(open(os.path.join(runs["brain"], "folds.json")).read())
    done = [record for record in records if record["status"] == "done"]
    assert [record["status"] for record in records] == ["done", "pending", "pending", "done", "pending"]
    assert ensemble.split == "1/4" and ensemble.names == [record["name"] for record in done]  # the folds done
    assert ensemble.threshold == pytest.approx(np.mean([record["val_dice_threshold"] for record in done]))


@pytest.mark.parametrize("codes", ["RAS", "LPS"])
def test_nifti_map_and_mask_on_the_inputs_oblique_grid(runs, tmp_path, codes):
    affine = oblique_affine(codes)
    blob = (15, 10, 8)
    path = tmp_path / f"scan_{codes}.nii.gz"
    nib.save(nib.Nifti1Image(brain_volume(99, blob), affine), path)
    assert "".join(nib.aff2axcodes(affine)) == codes
    out = tmp_path / "out"
    [result] = predict(str(path), str(out), runs["brain"])
    assert result.row["status"] == "ok", result.row["error"]
    case = f"scan_{codes}"
    scores, mask = nib.load(str(out / f"{case}.nii.gz")), nib.load(str(out / f"{case}_mask.nii.gz"))
    for image in (scores, mask):
        assert image.shape == SHAPE
        np.testing.assert_allclose(image.affine, affine, atol=1e-5)
    assert scores.get_data_dtype() == np.float32 and mask.get_data_dtype() == np.uint8
    threshold = result.row["threshold"]
    np.testing.assert_array_equal(mask.get_fdata() > 0, scores.get_fdata() >= threshold)
    [row] = read_scores(out)
    assert row["case"] == case and row["status"] == "ok" and int(row["anomalous_voxels"]) == int(mask.get_fdata().sum())
    assert float(row["anomalous_ml"]) == pytest.approx(int(row["anomalous_voxels"]) * 8 / 1000)
    assert row["models"] == " ".join(run_ensemble(runs["brain"]).names) and float(row["threshold"]) == threshold

    injected = image_as_score(run_ensemble(runs["brain"]))
    source = inference.find_inputs(str(path), volumes=True)[0]
    assert inference.predict_case(injected, source, str(tmp_path / "injected")).row["status"] == "ok"
    top = top_voxel_world(tmp_path / "injected" / f"{case}.nii.gz")
    assert np.linalg.norm(top - (affine @ [*blob, 1.0])[:3]) <= 4.0  # within 2 input voxels (the blob's radius)


def dicom_series(folder, volume: np.ndarray, affine_lps: np.ndarray, rng, dicom_bytes) -> None:
    """Write volume [column, row, slice] as one DICOM file per slice, geometry from `affine_lps`
    (voxel (c, r, k) -> LPS mm), in a shuffled file-name order."""
    from pydicom.uid import generate_uid

    folder.mkdir()
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    orientation = (*(affine_lps[:3, 0] / spacing[0]), *(affine_lps[:3, 1] / spacing[1]))  # along a row, a column
    series = generate_uid()
    for k, name in enumerate(rng.permutation(volume.shape[2])):
        (folder / f"{name:03d}.dcm").write_bytes(
            dicom_bytes(
                volume[:, :, k].T,
                series,
                position=affine_lps[:3] @ [0, 0, k, 1.0],
                instance=k + 1,
                spacing=(spacing[1], spacing[0]),
                orientation=orientation,
            )
        )


def test_dicom_series_map_on_the_series_own_grid(runs, tmp_path, dicom_bytes):
    """Shuffled files of an oblique series: the map's shape is (columns, rows, slices) and its
    affine gives every voxel the world position the DICOM tags give it."""
    blob = (8, 17, 11)
    affine_lps = oblique_affine("RAS")  # any rotation: used as the LPS geometry of the slices
    dicom_series(tmp_path / "series", brain_volume(7, blob), affine_lps, np.random.default_rng(3), dicom_bytes)
    out = tmp_path / "out"
    [result] = predict(str(tmp_path / "series"), str(out), runs["brain"])
    assert result.row["status"] == "ok", result.row["error"]
    expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps  # LPS -> RAS (NIfTI world)
    for name in ("series.nii.gz", "series_mask.nii.gz"):
        image = nib.load(str(out / name))
        assert image.shape == SHAPE
        np.testing.assert_allclose(image.affine, expected, atol=1e-4)
    injected = image_as_score(run_ensemble(runs["brain"]))
    inference.predict_case(injected, CaseSource("series", str(tmp_path / "series")), str(tmp_path / "injected"))
    top = top_voxel_world(tmp_path / "injected" / "series.nii.gz")
    assert np.linalg.norm(top - (expected @ [*blob, 1.0])[:3]) <= 4.0


def test_png_heat_map_overlay_and_mask_on_the_pictures_grid(runs, tmp_path):
    rng = np.random.default_rng(5)
    picture = (128 + 40 * smooth_noise(rng, (40, 30), 3.0)).clip(0, 255).astype(np.uint8)
    (tmp_path / "xray.png").write_bytes(png(picture))
    out = tmp_path / "out"
    [result] = predict(str(tmp_path / "xray.png"), str(out), runs["cxr"])
    assert result.row["status"] == "ok", result.row["error"]
    heat, overlay = np.asarray(Image.open(out / "xray.png")), np.asarray(Image.open(out / "xray_overlay.png"))
    mask = np.asarray(Image.open(out / "xray_mask.png"))
    assert heat.shape == overlay.shape == (40, 30, 3) and mask.shape == (40, 30)
    assert set(np.unique(mask)) <= {0, 255}
    [row] = read_scores(out)
    assert int(row["anomalous_voxels"]) == int((mask == 255).sum()) and row["anomalous_ml"] == ""
    assert row["slice_score_max"] == "" and 0 <= float(row["sample_score"]) <= 1


def test_real_brats_case_end_to_end(runs, tmp_path, real_data):
    case = real_data("brain", "lesion_brats2015", "brats_2013_pat0001_1")
    out = tmp_path / "out"
    [result] = predict(str(case), str(out), runs["brain"], modality="flair")
    assert result.row["status"] == "ok", result.row["error"]
    flair = nib.load(str(case / "Flair_subtrMeanDivStd.nii.gz"))
    scores = nib.load(str(out / "brats_2013_pat0001_1.nii.gz"))
    assert scores.shape == flair.shape == (240, 240, 155)
    np.testing.assert_allclose(scores.affine, flair.affine, atol=1e-5)
    assert np.isfinite(scores.get_fdata()).all()
    assert nib.load(str(out / "brats_2013_pat0001_1_mask.nii.gz")).shape == flair.shape


def test_export_then_predict_from_the_package_alone_in_a_fresh_process(runs, tmp_path):
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(brain_volume(42, (12, 14, 10)), oblique_affine("LPS")), scan)
    predict(str(scan), str(tmp_path / "from_run"), runs["brain"])
    package = tmp_path / "elsewhere" / "model.lwpkg"
    package.parent.mkdir()
    exported = subprocess.run(
        [sys.executable, "-m", "lightwork.cli", "export", runs["brain"], "--split", "1/4", "--out", str(package)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert exported.returncode == 0, exported.stderr
    hidden = runs["brain"] + "-hidden"
    os.rename(runs["brain"], hidden)  # nothing of the run is left to read
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "lightwork.cli",
                "predict",
                "-i",
                str(scan),
                "-o",
                str(tmp_path / "from_package"),
                "--models",
                str(package),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path / "elsewhere",
        )
    finally:
        os.rename(hidden, runs["brain"])
    assert done.returncode == 0, done.stderr
    from_run, from_package = run_ensemble(runs["brain"]), load_ensemble(str(package))
    assert from_package.names == from_run.names and from_package.threshold == from_run.threshold
    for ours, theirs in zip(from_run.networks, from_package.networks):
        weights = theirs.state_dict()
        assert weights.keys() == ours.state_dict().keys()
        for key, value in ours.state_dict().items():
            assert torch.equal(value, weights[key]), key  # the very weights, bit for bit
    # Another process may run torch with another thread count, so float32 sums can end a rounding
    # apart (measured up to 1.6e-7 on CI); the maps agree to that, and the mask wherever the map is
    # not within it of the threshold.
    maps = [nib.load(str(tmp_path / out / "scan.nii.gz")) for out in ("from_run", "from_package")]
    masks = [nib.load(str(tmp_path / out / "scan_mask.nii.gz")) for out in ("from_run", "from_package")]
    np.testing.assert_allclose(maps[1].get_fdata(), maps[0].get_fdata(), rtol=1e-5, atol=1e-6)
    clear = np.abs(maps[0].get_fdata() - from_run.threshold) > 1e-5
    np.testing.assert_array_equal(masks[1].get_fdata()[clear], masks[0].get_fdata()[clear])
    for image in maps[1:] + masks:
        np.testing.assert_array_equal(image.affine, maps[0].affine)
    assert float(read_scores(tmp_path / "from_package")[0]["sample_score"]) == pytest.approx(
        float(read_scores(tmp_path / "from_run")[0]["sample_score"]), rel=1e-5, abs=1e-7
    )


def test_damaged_truncated_or_foreign_packages_are_one_clear_error(runs, tmp_path):
    package = tmp_path / "model.lwpkg"
    export_package(runs["brain"], None, str(package))
    payload = package.read_bytes()
    with zipfile.ZipFile(package) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}

    def rewrite(name: str, changed: dict) -> str:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as archive:
            for key, value in {**members, **changed}.items():
                archive.writestr(key, value)
        return str(path)

    (tmp_path / "truncated.lwpkg").write_bytes(payload[: len(payload) // 2])
    flipped = bytearray(payload)
    flipped[len(payload) // 3] ^= 0xFF
    (tmp_path / "flipped.lwpkg").write_bytes(bytes(flipped))
    weights = next(name for name in members if name.endswith(".pt"))
    tensors = torch.load(io.BytesIO(members[weights]), weights_only=True)
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    description = json.loads(members["package.json"])
    foreign = json.dumps({**description, "lightwork_version": "0.0.1"}).encode()
    sums = json.loads(members["SHA256SUMS"])
    import hashlib

    resummed = json.dumps({**sums, "package.json": hashlib.sha256(foreign).hexdigest()}).encode()
    cases = {
        str(tmp_path / "truncated.lwpkg"): "damaged or truncated",
        str(tmp_path / "flipped.lwpkg"): "damaged",
        rewrite("tampered.lwpkg", {weights: buffer.getvalue()}): f"checksum mismatch in {weights}",
        rewrite("foreign.lwpkg", {"package.json": foreign, "SHA256SUMS": resummed}): "a package of lightwork 0.0.1",
    }
    for path, message in cases.items():
        with pytest.raises(ValueError, match=message) as error:
            load_ensemble(path)
        assert path in str(error.value) and "\n" not in str(error.value)
    assert load_ensemble(str(package)).names == run_ensemble(runs["brain"]).names


def test_bad_inputs_are_one_line_naming_the_file(runs, tmp_path):
    (tmp_path / "notes.nii.gz").write_bytes(b"not an image")
    (tmp_path / "notes.dcm").write_bytes(b"patient notes\n" * 30)
    (tmp_path / "flat.png").write_bytes(png(np.full((32, 32), 100, np.uint8)))
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), tmp_path / "empty.nii.gz")
    nib.save(nib.Nifti1Image(brain_volume(3), np.eye(4)), tmp_path / "volume.nii.gz")
    cases = [
        ("notes.nii.gz", "brain", "not a readable NIfTI"),
        ("notes.dcm", "brain", "not a DICOM file"),
        ("flat.png", "brain", "a 2D image of shape \\(32, 32\\), but the models .* take 3D volumes"),
        ("volume.nii.gz", "cxr", "a 3D volume of shape .* take 2D images"),
        ("empty.nii.gz", "brain", "empty foreground"),
    ]
    for name, run, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            predict(str(tmp_path / name), str(tmp_path / "out"), runs[run])
        assert str(tmp_path / name) in str(error.value) and "\n" not in str(error.value)
    skull_on = run_ensemble(runs["brain"])
    skull_on.recipe_options = {**skull_on.recipe_options, "skull_stripped": False}
    row = inference.predict_case(skull_on, CaseSource("v", str(tmp_path / "volume.nii.gz")), str(tmp_path / "out")).row
    assert (
        row["status"] == "failed"
        and "needs a brain mask" in row["error"]
        and str(tmp_path / "volume.nii.gz") in row["error"]
    )
    with pytest.raises(ValueError, match="not a lightwork run"):
        predict(str(tmp_path / "volume.nii.gz"), str(tmp_path / "out"), str(tmp_path))


def test_a_folder_runs_through_ray_data_and_lists_its_failed_case(runs, tmp_path):
    folder = tmp_path / "cases"
    folder.mkdir()
    for index in range(2):
        nib.save(nib.Nifti1Image(brain_volume(20 + index), oblique_affine("RAS")), folder / f"good{index}.nii.gz")
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    out = tmp_path / "out"
    results = predict(str(folder), str(out), runs["brain"], workers=2)
    assert [result.row["case"] for result in results] == ["broken", "good0", "good1"]
    rows = {row["case"]: row for row in read_scores(out)}
    assert rows["broken"]["status"] == "failed" and "not a readable NIfTI" in rows["broken"]["error"]
    assert rows["good0"]["status"] == rows["good1"]["status"] == "ok"
    assert json.loads((out / "scores.json").read_text())[0]["sample_score"] is None  # the failed case, NaN as null
    # The Ray path's map is the in-process one (up to float rounding: an actor runs torch on one thread).
    predict(str(folder / "good0.nii.gz"), str(tmp_path / "alone"), runs["brain"])
    np.testing.assert_allclose(
        nib.load(str(out / "good0.nii.gz")).get_fdata(),
        nib.load(str(tmp_path / "alone" / "good0.nii.gz")).get_fdata(),
        rtol=0,
        atol=1e-6,
    )
