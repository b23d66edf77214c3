"""The embedded default dataset: deterministic, anatomically layered, lesions only where claimed."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

from lightwork import demo
from lightwork.demo import brain, chest


def test_brain_case_is_deterministic_and_varies_between_subjects():
    first = demo.make_brain_case(7, "subject-a", with_lesions=False)
    again = demo.make_brain_case(7, "subject-a", with_lesions=False)
    other = demo.make_brain_case(7, "subject-b", with_lesions=False)
    np.testing.assert_array_equal(first.image, again.image)
    assert first.image.shape == demo.BRAIN_SHAPE and first.image.dtype == np.float32
    assert np.abs(first.image - other.image).mean() > 0.05
    assert first.foreground.sum() != other.foreground.sum()


def test_brain_tissues_have_the_flair_like_order():
    params = brain.draw_brain_params(demo.case_generator(3, "subject"), (32, 40, 32), 5.0)
    anatomy = brain.render_brain_anatomy(params)
    mean = {label: anatomy.clean[anatomy.tissue == label].mean() for label in (brain.CSF, brain.GREY, brain.WHITE)}
    assert mean[brain.CSF] < 0.6 < mean[brain.WHITE] < mean[brain.GREY]
    assert (anatomy.clean[~anatomy.head] == 0).all()
    # the brain sits inside the head, with skull and scalp around it
    assert anatomy.brain.sum() < 0.7 * anatomy.head.sum()
    assert (anatomy.tissue == brain.SKULL).sum() > 0


def test_test_lesions_are_inside_the_brain_and_hyperintense():
    case = demo.make_brain_case(0, "lesion-case", with_lesions=True)
    healthy_twin = demo.make_brain_case(0, "lesion-case", with_lesions=False)
    lesion = case.lesion.astype(bool)
    assert 0.001 < lesion.mean() < 0.1
    assert case.foreground[lesion].mean() > 0.95
    # the lesion raises intensity where it is and nowhere far from it
    assert case.image[lesion].mean() > 1.3 * healthy_twin.image[lesion].mean()
    far = ndimage.distance_transform_edt(~lesion) > 3  # voxels
    assert np.abs(case.image - healthy_twin.image)[far].max() < 0.1


def test_chest_case_has_dark_lungs_and_lesions_in_them():
    case = demo.make_chest_case(1, "chest", with_lesions=True)
    params = chest.draw_chest_params(demo.case_generator(1, "chest"))
    anatomy = chest.render_chest_anatomy(params)
    assert case.image.shape == demo.CHEST_SHAPE and 0.0 <= case.image.min() and case.image.max() <= 1.0
    assert anatomy.clean[anatomy.lungs].mean() < anatomy.clean[anatomy.body & ~anatomy.lungs].mean() - 0.2
    assert case.lesion.any() and anatomy.lungs[case.lesion.astype(bool)].all()


def test_written_cohort_is_readable_nifti_and_png(tmp_path):
    brains = demo.write_cohort(str(tmp_path / "brain"), "brain", num_healthy=2, num_test=1, seed=5)
    volume = nib.load(f"{brains.test_uri}/{brains.test_ids[0]}/{demo.BRAIN_IMAGE_FILE}")
    assert volume.shape == demo.BRAIN_SHAPE and nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    lesion = nib.load(f"{brains.test_uri}/{brains.test_ids[0]}/{demo.LESION_FILE}").get_fdata()
    assert lesion.any() and set(np.unique(lesion)) <= {0.0, 1.0}
    assert not (tmp_path / "brain" / "healthy" / brains.healthy_ids[0] / demo.LESION_FILE).exists()
    chests = demo.write_cohort(str(tmp_path / "cxr"), "cxr", num_healthy=1, num_test=1, seed=5)
    image = np.asarray(Image.open(f"{chests.healthy_uri}/{chests.healthy_ids[0]}/{demo.CHEST_IMAGE_FILE}"))
    assert image.shape == demo.CHEST_SHAPE and image.dtype == np.uint8 and image.std() > 20


def test_rewriting_a_cohort_keeps_complete_cases_and_completes_partial_ones(tmp_path):
    demo.write_cohort(str(tmp_path), "cxr", num_healthy=2, num_test=1, seed=1)
    kept = tmp_path / "healthy" / "cxr-healthy-000" / "image.png"
    partial = tmp_path / "test" / "cxr-test-000"
    kept_mtime = kept.stat().st_mtime_ns
    (partial / "lesion.png").unlink()
    demo.write_cohort(str(tmp_path), "cxr", num_healthy=2, num_test=1, seed=1)
    assert kept.stat().st_mtime_ns == kept_mtime
    assert sorted(p.name for p in partial.iterdir()) == ["image.png", "lesion.png"]
