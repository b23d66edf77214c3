"""Recipes: steps keep world geometry, masks stay binary, brain/cxr outputs have the documented
shapes, dtypes and ranges on real data, and predictions map back onto the source voxels."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from lightwork.data import readers, recipes
from lightwork.data.recipes import Sample
from lightwork.evaluation.outputs import to_source_geometry


def ramp_sample(shape=(20, 24, 18), spacing=(2.0, 1.5, 3.0)) -> Sample:
    """image = world x + 2 y - z (mm) on an axis-aligned grid, a box foreground and a lesion."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 2.0)
    index = np.indices(shape).reshape(3, -1)
    world = (affine @ np.vstack([index, np.ones(index.shape[1])]))[:3]
    image = (world[0] + 2 * world[1] - world[2]).reshape(shape).astype(np.float32)
    brain = np.zeros(shape, bool)
    brain[3:17, 4:20, 2:16] = True
    lesion = np.zeros(shape, bool)
    lesion[8:12, 9:13, 6:9] = True
    return Sample(image, affine, {"brain": brain, "foreground": brain, "lesion": lesion})


def world_of(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    return (affine @ np.vstack([index.T, np.ones(len(index))]))[:3].T


def test_resample_keeps_world_coordinates_and_binary_masks():
    sample = ramp_sample()
    out = recipes.Resample(1.0)(sample)
    assert readers.voxel_spacing(out.affine, 3) == pytest.approx((1.0, 1.0, 1.0))
    assert out.image.shape == (40, 36, 54)
    # Interior voxels (linear interpolation is exact for a ramp) hold the ramp at their world point.
    index = np.argwhere(np.ones(out.image.shape, bool))[::97]
    world = world_of(out.affine, index)
    inside = np.all((index > 2) & (index < np.array(out.image.shape) - 3), axis=1)
    expected = world[:, 0] + 2 * world[:, 1] - world[:, 2]
    np.testing.assert_allclose(out.image[tuple(index[inside].T)], expected[inside], atol=1e-3)
    for mask in out.masks.values():
        assert mask.dtype == bool
    # Nearest neighbour: the lesion covers the same world volume (up to one voxel layer).
    volume_before = sample.masks["lesion"].sum() * 2.0 * 1.5 * 3.0
    assert out.masks["lesion"].sum() == pytest.approx(volume_before, rel=0.2)


def test_crop_pad_and_downsample_keep_world_positions():
    sample = ramp_sample()
    lesion_centre = world_of(sample.affine, np.argwhere(sample.masks["lesion"])).mean(axis=0)
    out = recipes.compose([recipes.CropOrPadAroundForeground((24, 32, 20)), recipes.Downsample(2)])(sample)
    assert out.image.shape == (12, 16, 10)
    assert readers.voxel_spacing(out.affine, 3) == pytest.approx((4.0, 3.0, 6.0))
    np.testing.assert_allclose(
        world_of(out.affine, np.argwhere(out.masks["lesion"])).mean(axis=0), lesion_centre, atol=1e-6
    )
    # The block mean of a ramp is the ramp at the block centre, where the new affine puts the voxel.
    index = np.array([[5, 7, 4]])
    x, y, z = world_of(out.affine, index)[0]
    assert out.image[5, 7, 4] == pytest.approx(x + 2 * y - z, abs=1e-3)


def test_zscore_is_exact_on_the_foreground_and_zero_outside():
    sample = ramp_sample()
    out = recipes.ZScore()(sample)
    inside = sample.masks["foreground"]
    assert out.image[inside].mean() == pytest.approx(0.0, abs=1e-5)
    assert out.image[inside].std() == pytest.approx(1.0, abs=1e-5)
    assert (out.image[~inside] == 0).all()
    with pytest.raises(ValueError, match="constant intensity"):
        recipes.ZScore()(Sample(np.ones((4, 4, 4), np.float32), np.eye(4), {"foreground": np.ones((4, 4, 4), bool)}))


def test_equalise_flattens_the_histogram():
    rng = np.random.default_rng(0)
    image = rng.beta(5, 2, size=(64, 64)).astype(np.float32)  # skewed towards bright
    out = recipes.Equalise()(Sample(image, np.eye(4))).image
    quarters = np.histogram(out, bins=4, range=(0, 1))[0] / out.size
    np.testing.assert_allclose(quarters, 0.25, atol=0.03)
    assert np.all(np.diff(out.ravel()[np.argsort(image.ravel())]) >= -1e-7)  # monotone


def test_brain_recipe_on_real_ixi_with_parcellation_mask(real_data):
    folder = real_data("brain", "healthy_ixi_t1")
    image_path = folder / "IXI012-HH-1211-T1_ds.nii.gz"
    mask_path = folder / "parcellation" / "IXI012-HH-1211-T1_ds_DLMUSE.nii.gz"
    image, mask = readers.read_image(str(image_path)), readers.read_image(str(mask_path))
    case = recipes.BrainRecipe()("ixi", image, mask)
    assert case.image.shape == (1, 80, 112, 80) and case.image.dtype == np.float32
    assert case.foreground.dtype == bool and case.lesion is None
    assert readers.voxel_spacing(case.affine, 3) == pytest.approx((2.0, 2.0, 2.0))
    values = case.image[0][case.foreground]
    # z-scored at 1 mm, then block-averaged by 2: mean ~0, std a little below 1.
    assert abs(values.mean()) < 0.05 and 0.8 < values.std() < 1.05
    assert (case.image[0][~case.foreground] == 0).all()
    # The brain is whole: its volume is kept and it does not touch the grid's border.
    brain_ml = (np.asanyarray(nib.load(str(mask_path)).dataobj) != 0).sum() * 8.0 / 1000
    assert case.foreground.sum() * 8.0 / 1000 == pytest.approx(brain_ml, rel=0.05)
    assert not case.foreground[[0, -1]].any() and not case.foreground[:, [0, -1]].any()
    # Mapped back with the stored affines, the foreground lands on the original mask's voxels.
    assert case.source_shape == (120, 120, 90)
    np.testing.assert_allclose(case.source_affine, nib.load(str(image_path)).affine)
    back = to_source_geometry(case.foreground.astype(np.float32), case) > 0.5
    original = np.asanyarray(nib.load(str(mask_path)).dataobj) != 0
    dice = 2 * (back & original).sum() / (back.sum() + original.sum())
    assert dice > 0.95


def test_brain_recipe_on_real_brats_keeps_lesions_binary_and_sized(real_data):
    folder = real_data("brain", "lesion_brats2015", "brats_2013_pat0001_1")
    flair, mask, lesion = (
        readers.read_image(str(folder / name))
        for name in ("Flair_subtrMeanDivStd.nii.gz", "brainmask.nii.gz", "OTMultiClass.nii.gz")
    )
    case = recipes.BrainRecipe()("brats", flair, mask, lesion)
    assert case.lesion.dtype == np.uint8 and set(np.unique(case.lesion)) == {0, 1}
    assert case.lesion.sum() * 8.0 == pytest.approx((lesion.array != 0).sum(), rel=0.1)  # mm^3, 2 mm voxels
    assert case.foreground[case.lesion.astype(bool)].mean() > 0.99
    # The file's own "z-scored" convention is not trusted: the brain is z-scored again on the final grid.
    inside = flair.array[mask.array != 0]
    assert abs(inside.mean()) > 0.01 or abs(inside.std() - 1) > 0.05  # the file's brain is not mean 0, std 1
    values = case.image[0][case.foreground].astype(np.float64)
    assert values.mean() == pytest.approx(0.0, abs=1e-4) and values.std() == pytest.approx(1.0, abs=1e-4)
    assert not case.image[0][~case.foreground].any()


def test_lesion_labels_choose_a_region_of_a_multi_class_mask_and_leave_older_options_unchanged():
    """BraTS-style labels 1 (core), 2 (oedema around it), 4 (a separate spot): the default lesion is
    every non-zero voxel, `lesion_labels` (1, 4) only those labels; the options JSON of a recipe
    without the option is the one sets prepared before it have."""
    shape = (20, 20, 20)
    brain = np.zeros(shape, np.float32)
    brain[2:19, 2:19, 2:19] = 1.0 + np.random.default_rng(0).random((17, 17, 17), dtype=np.float32)
    image = readers.Loaded(brain, np.eye(4), (1.0,) * 3, "RAS", {"uri": "t1c.nii.gz"})
    labels = np.zeros(shape, np.uint8)
    labels[4:12, 4:12, 4:12] = 2
    labels[6:10, 6:10, 6:10] = 1
    labels[14:17, 14:17, 14:17] = 4
    lesion = readers.Loaded(labels, np.eye(4), (1.0,) * 3, "RAS", {"uri": "seg.nii.gz"})
    options = {"skull_stripped": True, "shape": shape, "downsample": 1}
    whole = recipes.BrainRecipe(**options)("c", image, None, lesion).lesion
    core = recipes.make_recipe("brain", **options, lesion_labels=[4, 1])("c", image, None, lesion).lesion
    assert whole.sum() == (labels != 0).sum() == 8**3 + 27
    assert core.sum() == 4**3 + 27 and (core <= whole).all()  # the oedema (label 2) left out
    assert recipes.recipe_options(recipes.BrainRecipe(**options)) == (
        '{"downsample": 1, "shape": [20, 20, 20], "skull_stripped": true, "spacing_mm": 1.0}'
    )
    core_options = json.loads(recipes.recipe_options(recipes.make_recipe("brain", lesion_labels=(4, 1))))
    assert core_options["lesion_labels"] == [1, 4]
    with pytest.raises(ValueError, match="lesion labels must be positive"):
        recipes.BrainRecipe(lesion_labels=(0, 1))


def test_brain_recipe_renormalises_a_pre_normalised_input_with_a_shifted_background():
    """A skull-stripped, "already z-scored" volume whose background is a negative constant (as some
    BraTS files): the foreground is the brain, not the whole volume, and it comes out mean 0, std 1."""
    rng = np.random.default_rng(3)
    shape = (24, 28, 20)
    grid = np.indices(shape, dtype=np.float64)
    radii = np.array([8.0, 10.0, 7.0])
    brain = sum(((grid[d] - (shape[d] - 1) / 2) / radii[d]) ** 2 for d in range(3)) <= 1.0
    image = np.full(shape, -3.0, np.float32)
    image[brain] = (0.3 + 1.4 * rng.standard_normal(int(brain.sum()))).astype(np.float32)
    loaded = readers.Loaded(image, np.eye(4), (1.0,) * 3, "RAS", {"uri": "pre-normalised.nii.gz"})
    case = recipes.BrainRecipe(skull_stripped=True, shape=(24, 28, 20), downsample=1)("c1", loaded)
    assert case.foreground.sum() == pytest.approx(brain.sum(), rel=0.02)
    values = case.image[0][case.foreground].astype(np.float64)
    assert values.mean() == pytest.approx(0.0, abs=1e-4) and values.std() == pytest.approx(1.0, abs=1e-4)
    assert not case.image[0][~case.foreground].any()


def test_brain_recipe_on_skull_stripped_mslub_uses_non_zero_voxels(real_data):
    folder = real_data("brain", "lesion_mslub", "patient07")
    image = readers.read_image(str(folder / "FLAIR.nii.gz"))
    case = recipes.BrainRecipe(skull_stripped=True, shape=(48, 56, 48), spacing_mm=2.0, downsample=2)(
        "mslub", image, None, readers.read_image(str(folder / "GOLD_STANDARD.nii.gz"))
    )
    assert case.image.shape == (1, 48, 56, 48)
    assert readers.voxel_spacing(case.affine, 3) == pytest.approx((4.0, 4.0, 4.0))
    nonzero_ml = (image.array != 0).sum() / 1000
    assert case.foreground.sum() * 64 / 1000 == pytest.approx(nonzero_ml, rel=0.1)


def test_brain_recipe_input_errors_name_the_case_or_file():
    shape = (12, 14, 10)
    image = readers.Loaded(np.ones(shape, np.float32), np.eye(4), (1.0,) * 3, "RAS", {"uri": "img.nii.gz"})
    with pytest.raises(ValueError, match="case c1: no brain mask"):
        recipes.BrainRecipe()("c1", image)
    wrong = readers.Loaded(np.ones((12, 14, 9), np.float32), np.eye(4), (1.0,) * 3, "RAS", {"uri": "mask.nii.gz"})
    with pytest.raises(ValueError, match=r"mask\.nii\.gz: brain mask shape \(12, 14, 9\) differs"):
        recipes.BrainRecipe()("c1", image, wrong)
    empty = readers.Loaded(np.zeros(shape, np.float32), np.eye(4), (1.0,) * 3, "RAS", {"uri": "mask.nii.gz"})
    with pytest.raises(ValueError, match="img.nii.gz: empty foreground"):
        recipes.BrainRecipe()("c1", image, empty)
    flat = readers.Loaded(np.ones((12, 14), np.float32), np.eye(4), (1.0,) * 2, "RC", {"uri": "xray.png"})
    with pytest.raises(ValueError, match="xray.png: this recipe needs a 3D image"):
        recipes.BrainRecipe(skull_stripped=True)("c1", flat)


def test_cxr_recipe_on_real_kermany(real_data):
    path = real_data("cxr_kermany", "train", "PNEUMONIA", "person1000_bacteria_2931.jpeg")
    loaded = readers.read_image(str(path))
    case = recipes.ChestRecipe()("kermany", loaded)
    image = case.image[0]
    assert case.image.shape == (1, 256, 256) and case.image.dtype == np.float32
    assert image.min() == -1.0 and image.max() == 1.0 and case.foreground.all()
    quarters = np.histogram(image, bins=4, range=(-1, 1))[0] / image.size
    assert quarters.min() > 0.15  # equalised
    small = recipes.ChestRecipe(size=64)("kermany", loaded)
    assert small.image.shape == (1, 64, 64)
    # The 2D model grid covers the 224x224 source pixels (up to the outer half model pixel, 3.5 source pixels wide).
    assert small.source_shape == (224, 224)
    assert to_source_geometry(np.ones((64, 64), np.float32), small)[2:-2, 2:-2].min() == pytest.approx(1.0)


def picture(array: np.ndarray, uri: str) -> readers.Loaded:
    return readers.Loaded(array, np.eye(4), (1.0, 1.0), "RC", {"uri": uri})


def test_cxr_lesion_follows_with_nearest_neighbour():
    image = np.random.default_rng(2).uniform(0, 255, (100, 80)).astype(np.float32)
    lesion = np.zeros((100, 80), np.float32)
    lesion[30:60, 20:40] = 255.0
    case = recipes.ChestRecipe(size=50)("c", picture(image, "i.png"), lesion=picture(lesion, "l.png"))
    assert set(np.unique(case.lesion)) == {0, 1}
    assert case.lesion.sum() == pytest.approx(lesion.astype(bool).sum() * (50 * 50) / (100 * 80), rel=0.1)


def test_make_recipe_rejects_options_of_the_other_recipe():
    assert recipes.make_recipe("brain", shape=(32, 40, 32), size=None).shape == (32, 40, 32)
    with pytest.raises(ValueError, match="recipe 'cxr' has no option"):
        recipes.make_recipe("cxr", shape=(32, 40, 32))
    with pytest.raises(ValueError, match="unknown recipe"):
        recipes.make_recipe("ct")
    with pytest.raises(ValueError, match="shape must be 3 positive sizes"):
        recipes.make_recipe("brain", shape=(32, 40))
    with pytest.raises(ValueError, match="downsample a positive integer"):
        recipes.make_recipe("brain", downsample=0)
    with pytest.raises(ValueError, match="size must be an integer >= 2"):
        recipes.make_recipe("cxr", size=1)
