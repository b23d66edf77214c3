"""Readers: real NIfTI/JPEG files in canonical RAS with world coordinates kept, DICOM written here
(series order, rescale, window, MONOCHROME1), and clear errors naming the file."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from lightwork.data import readers


def assert_same_world_values(loaded: readers.Loaded, path, samples: int = 50) -> None:
    """Every sampled canonical voxel holds the original file's value at the same world point."""
    original = nib.load(str(path))
    data = np.asanyarray(original.dataobj).astype(np.float32)
    rng = np.random.default_rng(0)
    index = np.stack([rng.integers(0, n, samples) for n in loaded.array.shape])
    world = loaded.affine @ np.vstack([index, np.ones(samples)])
    source = np.round(np.linalg.inv(original.affine) @ world)[:3].astype(int)
    np.testing.assert_array_equal(loaded.array[tuple(index)], data[tuple(source)])


@pytest.mark.parametrize(
    "parts, shape, spacing, original",
    [
        (("brain", "healthy_ixi_t1", "IXI012-HH-1211-T1_ds.nii.gz"), (90, 120, 120), 2.0, "PSR"),
        (("brain", "lesion_brats2015", "brats_2013_pat0001_1", "OTMultiClass.nii.gz"), (240, 240, 155), 1.0, "LPS"),
        (("brain", "lesion_mslub", "patient07", "FLAIR.nii.gz"), (182, 218, 182), 1.0, "LAS"),
    ],
)
def test_real_nifti_is_canonical_ras_with_world_coordinates_kept(real_data, parts, shape, spacing, original):
    path = real_data(*parts)
    loaded = readers.read_image(str(path))
    assert loaded.array.shape == shape and loaded.array.dtype == np.float32
    assert loaded.orientation == "RAS" and "".join(nib.aff2axcodes(loaded.affine)) == "RAS"
    assert loaded.spacing == pytest.approx((spacing,) * 3)
    assert loaded.provenance["original_orientation"] == original
    assert loaded.provenance["original_shape"] == nib.load(str(path)).shape
    assert_same_world_values(loaded, path)


def test_real_colour_jpeg_becomes_grey(real_data):
    path = real_data("cxr_kermany", "train", "NORMAL", "IM-0115-0001.jpeg")
    loaded = readers.read_image(str(path))
    with Image.open(path) as picture:
        expected = np.asarray(picture.convert("L"), dtype=np.float32)
        assert picture.mode == "RGB"
    assert loaded.array.shape == (224, 224) and loaded.orientation == "RC"
    np.testing.assert_array_equal(loaded.array, expected)


def test_dicom_series_in_shuffled_file_order_is_sorted_along_the_slice_normal(tmp_path, dicom_bytes):
    uid = generate_uid()
    stored = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5) * 3  # [slice, row, column]
    # File names sort c, a, b; slice positions z = 6, 0, 3 mm: name order is not slice order.
    for name, k in (("c.dcm", 2), ("a.dcm", 0), ("b.dcm", 1)):
        (tmp_path / name).write_bytes(
            dicom_bytes(stored[k], uid, position=(10.0, 20.0, 3.0 * k), instance=3 - k, slope=2.0, intercept=-100.0)
        )
    loaded = readers.read_image(str(tmp_path))
    assert loaded.provenance["slice_order"] == "ImagePositionPatient"
    assert loaded.array.shape == (5, 4, 3) and loaded.spacing == pytest.approx((0.8, 0.5, 3.0))
    # Canonical RAS: DICOM columns run towards patient left (-x), rows towards posterior (-y).
    expected = np.transpose(stored.astype(np.float32) * 2.0 - 100.0, (2, 1, 0))[::-1, ::-1, :]
    np.testing.assert_array_equal(loaded.array, expected)
    # Stored slice 0, row 0, column 0 sits at ImagePositionPatient (LPS 10, 20, 0) = RAS (-10, -20, 0).
    np.testing.assert_allclose(loaded.affine @ np.array([4, 3, 0, 1.0]), [-10.0, -20.0, 0.0, 1.0])


def test_dicom_series_without_positions_falls_back_to_instance_number(tmp_path, dicom_bytes):
    uid = generate_uid()
    for name, instance, value in (("x1.dcm", 3, 30), ("x2.dcm", 1, 10), ("x3.dcm", 2, 20)):
        (tmp_path / name).write_bytes(dicom_bytes(np.full((4, 4), value), uid, instance=instance))
    loaded = readers.read_image(str(tmp_path))
    assert loaded.provenance["slice_order"] == "InstanceNumber"
    assert loaded.array[0, 0, :].tolist() == [10.0, 20.0, 30.0]


def test_single_dicom_file_records_window_and_monochrome1(tmp_path, dicom_bytes):
    path = tmp_path / "cxr.dcm"
    path.write_bytes(
        dicom_bytes(
            np.arange(12).reshape(3, 4),
            generate_uid(),
            photometric="MONOCHROME1",
            spacing=(0.2, 0.3),
            window=(5, 8),
            slope=1.5,
            intercept=1.0,
        )
    )
    loaded = readers.read_image(str(path))
    assert loaded.array.shape == (3, 4) and loaded.spacing == (0.2, 0.3)
    np.testing.assert_allclose(loaded.array, np.arange(12).reshape(3, 4) * 1.5 + 1.0)
    assert loaded.provenance["monochrome1"] is True and loaded.provenance["original_dtype"] == "uint16"
    assert loaded.provenance["window_center"] == 5.0 and loaded.provenance["window_width"] == 8.0


def test_npy_and_png_round_trip(tmp_path):
    volume = np.random.default_rng(1).normal(size=(4, 5, 6)).astype(np.float32)
    np.save(tmp_path / "v.npy", volume)
    np.testing.assert_array_equal(readers.read_image(str(tmp_path / "v.npy")).array, volume)
    grey = np.arange(30, dtype=np.uint8).reshape(5, 6)
    Image.fromarray(grey).save(tmp_path / "g.png")
    np.testing.assert_array_equal(readers.read_image(str(tmp_path / "g.png")).array, grey)


@pytest.mark.parametrize(
    "name, payload, message",
    [
        ("broken.nii.gz", b"\x1f\x8b\x08\x00garbage", "not a readable NIfTI"),
        ("plain.nii", b"not a header at all", "not a readable NIfTI"),
        ("photo.png", b"\x89PNG truncated", "not a readable PNG/JPEG"),
        ("slice.dcm", b"\x00" * 10, "DICOM"),
        ("notes.txt", b"hello", "unsupported file type"),
    ],
)
def test_bad_files_raise_value_errors_naming_the_file(tmp_path, name, payload, message):
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=message) as error:
        readers.read_image(str(path))
    assert str(path) in str(error.value)


def test_nan_wrong_rank_and_missing_files_are_named(tmp_path):
    nan = np.ones((4, 4, 4), np.float32)
    nan[1, 2, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(ValueError, match=r"nan\.npy: 1 NaN/inf"):
        readers.read_image(str(tmp_path / "nan.npy"))
    np.save(tmp_path / "4d.npy", np.ones((2, 3, 4, 5), np.float32))
    with pytest.raises(ValueError, match=r"4d\.npy: expected a 2D or 3D image"):
        readers.read_image(str(tmp_path / "4d.npy"))
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5, 2), np.float32), np.eye(4)), tmp_path / "multi.nii.gz")
    with pytest.raises(ValueError, match=r"multi\.nii\.gz: expected a 3D volume"):
        readers.read_image(str(tmp_path / "multi.nii.gz"))
    with pytest.raises(ValueError, match=r"absent\.nii\.gz: no such file"):
        readers.read_image(str(tmp_path / "absent.nii.gz"))


def test_cxr_recipe_inverts_monochrome1_and_applies_the_dicom_window(tmp_path, dicom_bytes):
    from lightwork.data.recipes import ChestRecipe

    stored = np.zeros((40, 40), np.uint16)
    stored[:, 20:] = 1000  # right half: high stored values
    stored[:20, :20] = 5000  # beyond the window: clipped like the right half
    prepared = {}
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        path = tmp_path / f"{photometric}.dcm"
        path.write_bytes(dicom_bytes(stored, generate_uid(), photometric=photometric, window=(500, 1000)))
        prepared[photometric] = ChestRecipe(size=40)("case", readers.read_image(str(path))).image[0]
    for image in prepared.values():
        assert image.min() == -1.0 and image.max() == 1.0
        np.testing.assert_array_equal(image[:20, :20], image[0, 39])  # clipped to the window's top
    # MONOCHROME2: high stored values are bright; MONOCHROME1: they are dark.
    assert prepared["MONOCHROME2"][:, 20:].mean() > prepared["MONOCHROME2"][20:, :20].mean()
    assert prepared["MONOCHROME1"][:, 20:].mean() < prepared["MONOCHROME1"][20:, :20].mean()


def test_dicom_series_and_nifti_read_from_a_real_s3_bucket(s3_server, tmp_path, dicom_bytes):
    from lightwork.data import storage

    root = f"s3://{s3_server['bucket']}/readers-test"
    uid = generate_uid()
    for k in (1, 0, 2):
        storage.write_bytes(
            f"{root}/series/{k}.dcm", dicom_bytes(np.full((4, 5), 10 * k), uid, position=(0.0, 0.0, 2.0 * k))
        )
    loaded = readers.read_image(f"{root}/series")
    assert loaded.array.shape == (5, 4, 3) and loaded.array[0, 0, :].tolist() == [0.0, 10.0, 20.0]
    assert loaded.provenance["files"] == [f"{root}/series/{k}.dcm" for k in range(3)]
    volume = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    nib.save(nib.Nifti1Image(volume, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "v.nii.gz")
    storage.write_bytes(f"{root}/v.nii.gz", (tmp_path / "v.nii.gz").read_bytes())
    np.testing.assert_array_equal(readers.read_image(f"{root}/v.nii.gz").array, volume)


def test_dicom_series_source_grid_is_column_row_slice_with_the_series_world_positions(tmp_path, dicom_bytes):
    """The reader's source grid (shape and affine, one pair) puts every voxel where the series has it."""
    from lightwork.data.recipes import WholeImageForeground, finish, initial_sample

    uid = generate_uid()
    for name, k in (("c.dcm", 2), ("a.dcm", 0), ("b.dcm", 1)):
        (tmp_path / name).write_bytes(dicom_bytes(np.full((4, 5), k), uid, position=(10.0, 20.0, 3.0 * k)))
    loaded = readers.read_image(str(tmp_path))
    shape, affine = loaded.provenance["source_shape"], loaded.provenance["source_affine"]
    assert shape == (5, 4, 3)  # columns, rows, slices
    # Column c, row r of slice k lies at LPS (10 + 0.8 c, 20 + 0.5 r, 3 k), i.e. RAS (-x, -y, z).
    for c, r, k in ((0, 0, 0), (4, 3, 2), (1, 2, 1)):
        np.testing.assert_allclose(affine @ [c, r, k, 1.0], [-(10 + 0.8 * c), -(20 + 0.5 * r), 3.0 * k, 1.0])
    case = finish("s", WholeImageForeground()(initial_sample(loaded, None, None, dims=3)), loaded, False)
    assert case.source_shape == shape and np.allclose(case.source_affine, affine)


@pytest.mark.parametrize("series", [False, True])
def test_a_text_file_named_dcm_is_not_a_dicom_file(tmp_path, series, dicom_bytes):
    text = b"patient notes, not an image\n" * 20
    if series:
        uid = generate_uid()
        for k in range(2):
            (tmp_path / f"{k}.dcm").write_bytes(dicom_bytes(np.full((4, 5), k), uid, position=(0.0, 0.0, 2.0 * k)))
    (tmp_path / "notes.dcm").write_bytes(text)
    with pytest.raises(ValueError, match="not a DICOM file") as error:
        readers.read_image(str(tmp_path if series else tmp_path / "notes.dcm"))
    assert str(tmp_path / "notes.dcm") in str(error.value)


def test_cxr_window_is_pydicoms_voi_lut(tmp_path, dicom_bytes):
    """The window step gives pydicom's `apply_voi_lut` output scaled by its range (LINEAR and SIGMOID)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    from lightwork.data.recipes import Window, initial_sample

    stored = np.arange(0, 2000, 5, dtype=np.uint16).reshape(20, 20)
    for function in ("LINEAR", "SIGMOID"):
        path = tmp_path / f"{function}.dcm"
        payload = dicom_bytes(stored, generate_uid(), window=(700, 600), slope=2.0, intercept=-50.0)
        dataset = pydicom.dcmread(io.BytesIO(payload))
        dataset.VOILUTFunction = function
        dataset.save_as(path)
        windowed = Window()(initial_sample(readers.read_image(str(path)), None, None, dims=2)).image
        expected = apply_voi_lut(apply_modality_lut(dataset.pixel_array, dataset), dataset)
        low, high = 0 * 2.0 - 50.0, 65535 * 2.0 - 50.0  # the 16-bit stored range through the rescale
        np.testing.assert_allclose(windowed, np.clip((expected - low) / (high - low), 0, 1), atol=1e-6)
