"""Where predictions live in storage and how they map back to the input's geometry (pure numpy).

Layout under an output URI, per model (`<split-safe>/<fold name>` or `<split-safe>/ensemble`):
    {out}/{model}/grid/{case_id}.npy       float32 [*S] raw output on the model grid
    {out}/{model}/source/{case_id}.nii.gz  3D: float32 on source_shape with source_affine (NIfTI)
    {out}/{model}/source/{case_id}.npy     2D: float32 on source_shape, plus a .png heat map
"""

from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
from PIL import Image
from scipy.ndimage import affine_transform

from lightwork.data import storage
from lightwork.data.cases import PreparedCase
from lightwork.training.folds import ENSEMBLE, model_key  # noqa: F401  (the key format is folds'; kept importable here)


def grid_uri(out_uri: str, model: str, case_id: str) -> str:
    return storage.join(out_uri, model, "grid", f"{case_id}.npy")


def to_source_geometry(prediction: np.ndarray, case: PreparedCase) -> np.ndarray:
    """Resample a model-grid prediction [*S] onto the case's source grid (linear interpolation).

    Source voxel j maps to model voxel inv(affine) @ source_affine @ j; voxels outside the model
    grid get 0. Returns float32 [*source_shape] (the prediction itself when no source shape is known).
    """
    if not case.source_shape:
        return prediction.astype(np.float32)
    dims = prediction.ndim
    mapping = np.linalg.inv(np.asarray(case.affine, float)) @ np.asarray(case.source_affine, float)
    return affine_transform(
        prediction.astype(np.float32),
        mapping[:dims, :dims],
        offset=mapping[:dims, 3],
        output_shape=tuple(int(s) for s in case.source_shape),
        order=1,
        mode="constant",
        cval=0.0,
    )


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzipped NIfTI-1 file of a 3D array (its dtype kept) on `affine` (sform and qform set)."""
    image = nib.Nifti1Image(array, np.asarray(affine, float))
    image.set_sform(np.asarray(affine, float), code=1)
    image.set_qform(np.asarray(affine, float), code=1)
    return gzip.compress(image.to_bytes(), compresslevel=1)


def png_bytes(pixels: np.ndarray) -> bytes:
    """A PNG of uint8 pixels [H, W] (grey) or [H, W, 3] (RGB)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def heat_pixels(scores: np.ndarray) -> np.ndarray:
    """RGB uint8 [H, W, 3]: scores clipped to [0, 1] through the `inferno` colour map."""
    from matplotlib import colormaps

    return (colormaps["inferno"](np.clip(scores, 0.0, 1.0))[..., :3] * 255).astype(np.uint8)


def overlay_pixels(image: np.ndarray, scores: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 [H, W, 3]: the image (min..max as grey) blended with the heat map of `scores`
    (weight `alpha` x the clipped score, so that low scores leave the image visible)."""
    low, high = float(image.min()), float(image.max())
    grey = (image - low) / (high - low) if high > low else np.zeros_like(image, dtype=float)
    weight = alpha * np.clip(scores, 0.0, 1.0)[..., None]
    blended = (1 - weight) * np.repeat(grey[..., None], 3, axis=-1) + weight * heat_pixels(scores) / 255.0
    return (blended * 255).astype(np.uint8)


def write_prediction(out_uri: str, model: str, case: PreparedCase, prediction: np.ndarray) -> str:
    """Store one raw prediction [*S] on the model grid and in the source geometry; returns the grid URI."""
    uri = grid_uri(out_uri, model, case.case_id)
    storage.write_bytes(uri, _npy_bytes(prediction.astype(np.float32)))
    source = to_source_geometry(prediction, case)
    base = storage.join(out_uri, model, "source", case.case_id)
    if source.ndim == 3:
        storage.write_bytes(f"{base}.nii.gz", nifti_bytes(source, case.source_affine))
    else:
        storage.write_bytes(f"{base}.npy", _npy_bytes(source))
        storage.write_bytes(f"{base}.png", png_bytes((np.clip(source, 0, 1) * 255).astype(np.uint8)))
    return uri


def read_prediction(uri: str) -> np.ndarray:
    """A stored model-grid prediction (float32 [*S])."""
    return np.load(io.BytesIO(storage.read_bytes(uri)))
