"""Cases as files (NIfTI volumes, PNG images) and cohorts of them in folders or buckets."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from lightwork.demo.brain import BRAIN_SHAPE, make_brain_case
from lightwork.demo.case import PhantomCase
from lightwork.demo.chest import CHEST_SHAPE, make_chest_case


def nifti_bytes(volume: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzipped NIfTI-1 file of `volume` with `affine` (qform and sform set)."""
    import gzip

    import nibabel as nib

    image = nib.Nifti1Image(volume, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return gzip.compress(image.to_bytes(), mtime=0)


def png_bytes(image: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of an image in [0, 1] (clipped)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


# File names inside each case folder of a written cohort.
BRAIN_IMAGE_FILE = "flair.nii.gz"
BRAIN_MASK_FILE = "brainmask.nii.gz"
LESION_FILE = "lesion.nii.gz"
CHEST_IMAGE_FILE = "image.png"
CHEST_LESION_FILE = "lesion.png"


@dataclass(frozen=True)
class Cohort:
    """Where a written cohort lives: `healthy_uri` and `test_uri` each hold one folder per case."""

    kind: str
    healthy_uri: str
    test_uri: str
    healthy_ids: tuple[str, ...]
    test_ids: tuple[str, ...]


def make_case(
    kind: str, seed: int, case_id: str, with_lesions: bool, shape: tuple[int, ...] | None = None
) -> PhantomCase:
    """A brain (`kind="brain"`) or chest (`kind="cxr"`) case on `shape` (default: the demo grid)."""
    if kind == "brain":
        return make_brain_case(seed, case_id, with_lesions, tuple(shape or BRAIN_SHAPE))
    if kind == "cxr":
        return make_chest_case(seed, case_id, with_lesions, tuple(shape or CHEST_SHAPE))
    raise ValueError(f"unknown phantom kind {kind!r}: choose 'brain' or 'cxr'")


def case_files(case: PhantomCase) -> dict[str, bytes]:
    """The files of one case folder: file name -> bytes (NIfTI for volumes, PNG for images)."""
    if case.image.ndim == 3:
        files = {
            BRAIN_IMAGE_FILE: nifti_bytes(case.image, case.affine),
            BRAIN_MASK_FILE: nifti_bytes(case.foreground.astype(np.uint8), case.affine),
        }
        if case.lesion is not None:
            files[LESION_FILE] = nifti_bytes(case.lesion, case.affine)
        return files
    files = {CHEST_IMAGE_FILE: png_bytes(case.image)}
    if case.lesion is not None:
        files[CHEST_LESION_FILE] = png_bytes(case.lesion.astype(np.float32))
    return files


def cohort_case_files(kind: str, group: str) -> tuple[str, ...]:
    """The file names `case_files` writes for a case of `kind` ("brain"/"cxr") in `group`."""
    names = (
        (BRAIN_IMAGE_FILE, BRAIN_MASK_FILE, LESION_FILE) if kind == "brain" else (CHEST_IMAGE_FILE, CHEST_LESION_FILE)
    )
    return names if group == "test" else names[:-1]


def cohort_case_ids(kind: str, num_healthy: int, num_test: int) -> dict[str, list[str]]:
    """The case ids of a cohort by group: `{"healthy": [...], "test": [...]}`."""
    if num_healthy < 1 or num_test < 0:
        raise ValueError(f"need at least one healthy case and no negative counts, got {num_healthy} and {num_test}")
    return {
        "healthy": [f"{kind}-healthy-{i:03d}" for i in range(num_healthy)],
        "test": [f"{kind}-test-{i:03d}" for i in range(num_test)],
    }


def write_cohort_case(
    dst_uri: str, group: str, case_id: str, kind: str, seed: int, shape: tuple[int, ...] | None = None
) -> str:
    """Generate one case of a cohort and write its folder `DST/group/case_id/`; returns that URI.

    Cases of the `test` group carry lesions; `healthy` ones do not. A case is generated from its
    seed alone, so a folder already holding every file of the case is left as it is (re-running
    the pipeline does not regenerate the cohort).
    """
    from lightwork.data import storage

    if group not in ("healthy", "test"):
        raise ValueError(f"unknown cohort group {group!r}: choose 'healthy' or 'test'")
    folder = storage.join(dst_uri, group, case_id)
    if all(storage.exists(storage.join(folder, name)) for name in cohort_case_files(kind, group)):
        return folder
    case = make_case(kind, seed, case_id, with_lesions=group == "test", shape=shape)
    for name, payload in case_files(case).items():
        storage.write_bytes(storage.join(folder, name), payload)
    return folder


def write_cohort(
    dst_uri: str,
    kind: str = "brain",
    num_healthy: int = 20,
    num_test: int = 6,
    seed: int = 0,
    shape: tuple[int, ...] | None = None,
) -> Cohort:
    """Generate and write a cohort under `dst_uri` (local folder or s3://), one case after another:

        DST/healthy/<kind>-healthy-NNN/{flair.nii.gz, brainmask.nii.gz}      (cxr: image.png)
        DST/test/<kind>-test-NNN/{flair.nii.gz, brainmask.nii.gz, lesion.nii.gz}  (cxr: image.png, lesion.png)

    Healthy and test cases never share a subject (their ids, hence their generators, differ).
    `lightwork.distributed.pipeline.generate_cohort` writes the same files with Ray tasks.
    """
    groups = cohort_case_ids(kind, num_healthy, num_test)
    for group, case_ids in groups.items():
        for case_id in case_ids:
            write_cohort_case(dst_uri, group, case_id, kind, seed, shape)
    return cohort_at(dst_uri, kind, groups)


def cohort_at(dst_uri: str, kind: str, groups: dict[str, list[str]]) -> Cohort:
    """The `Cohort` record of cases written under `dst_uri`."""
    from lightwork.data import storage

    return Cohort(
        kind,
        storage.join(dst_uri, "healthy"),
        storage.join(dst_uri, "test"),
        tuple(groups["healthy"]),
        tuple(groups["test"]),
    )
