"""D-dimensional Poisson image blending over a patch's box, solved exactly with a type-I DST.

The solve covers only the axis-aligned box the patch occupies in the target, never the whole
image. The guidance field is the target's forward-difference gradient outside the patch mask and,
inside it, per axis, either the larger-magnitude one of the target's and the source's forward
differences ("mixed gradients") or the source's. Its backward-difference divergence is the
right-hand side; the box's outer one-voxel shell keeps the target's values (Dirichlet boundary).

We solve for the correction w = u - target on the box interior, which is equivalent to moving the
shell's Laplacian contribution to the right-hand side: since the guidance equals the target
gradient wherever the source does not win, L w = div(guidance - grad target) is non-zero only next
to edges where the source gradient was taken, and w is zero on the shell. This keeps float32
accurate (w is small where the images agree) and skips a Laplacian of the whole box.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import scipy.fft


def _validate(target: np.ndarray, source_patch: np.ndarray, patch_mask: np.ndarray, corner: Sequence[int]) -> None:
    for name, array in (("target", target), ("source_patch", source_patch)):
        if not isinstance(array, np.ndarray) or array.dtype != np.float32:
            got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise ValueError(f"poisson_blend: {name} must be a float32 numpy array, got {got}")
        if array.ndim < 2:
            raise ValueError(f"poisson_blend: {name} must be [C, *S] with >= 1 spatial axis, got shape {array.shape}")
    if not isinstance(patch_mask, np.ndarray) or patch_mask.dtype != np.bool_:
        raise ValueError("poisson_blend: patch_mask must be a bool numpy array")
    spatial = target.ndim - 1
    if source_patch.ndim != target.ndim or source_patch.shape[0] != target.shape[0]:
        raise ValueError(
            f"poisson_blend: source_patch shape {source_patch.shape} must be [C, *P] with the target's "
            f"C={target.shape[0]} and {spatial} spatial axes"
        )
    if patch_mask.shape != source_patch.shape[1:]:
        raise ValueError(
            f"poisson_blend: patch_mask shape {patch_mask.shape} must equal the patch's spatial shape "
            f"{source_patch.shape[1:]}"
        )
    if len(corner) != spatial:
        raise ValueError(f"poisson_blend: corner {tuple(corner)} must have {spatial} entries")
    for axis, (start, size, extent) in enumerate(zip(corner, patch_mask.shape, target.shape[1:])):
        if start < 0 or start + size > extent:
            raise ValueError(
                f"poisson_blend: the patch box [{start}, {start + size}) on axis {axis} is outside the "
                f"image (size {extent})"
            )
    box = (slice(None), *(slice(c, c + n) for c, n in zip(corner, patch_mask.shape)))
    if not np.isfinite(target[box]).all():
        raise ValueError("poisson_blend: target has NaN or Inf inside the patch box")
    if not np.isfinite(source_patch).all():
        raise ValueError("poisson_blend: source_patch has NaN or Inf")


@lru_cache(maxsize=1024)
def _axis_eigenvalues(length: int) -> np.ndarray:
    """One axis' share of the Laplacian's DST-I eigenvalues for a box `length` voxels long:
    2 cos(pi (k + 1) / (length - 1)) - 2 for k < length - 2, [length - 2] float64. Cached: read only."""
    k = np.arange(length - 2, dtype=np.float64)
    values = 2.0 * np.cos(np.pi * (k + 1) / (length - 1)) - 2.0
    values.flags.writeable = False
    return values


def _dirichlet_eigenvalues(box_shape: tuple[int, ...]) -> np.ndarray:
    """The discrete Laplacian's eigenvalues for the DST-I modes of a box's interior, shape
    [*(N_d - 2)] float32, all negative: sum_d (2 cos(pi (k_d + 1) / (N_d - 1)) - 2), summed in
    float64 in axis order. The axes' terms are cached per length (box shapes vary too much for a
    cache of whole boxes)."""
    spatial = len(box_shape)
    total = np.zeros([n - 2 for n in box_shape], dtype=np.float64)
    for axis, n in enumerate(box_shape):
        total += _axis_eigenvalues(n).reshape([n - 2 if d == axis else 1 for d in range(spatial)])
    return total.astype(np.float32)


def poisson_blend(
    target: np.ndarray,
    source_patch: np.ndarray,
    patch_mask: np.ndarray,
    corner: Sequence[int],
    mix_gradients: bool = True,
) -> np.ndarray:
    """Blend a source patch into a target by solving the Poisson equation over the patch's box.

    Args:
        target: [C, *S] float32 image, any number of spatial axes.
        source_patch: [C, *P] float32, the source values on the box's grid.
        patch_mask: [*P] bool; a voxel's forward differences (towards +1 on each axis) come from
            the guidance rule inside the mask, from the target outside it.
        corner: the box's first voxel in the target, one int per spatial axis; the box
            corner..corner+P must lie inside the image.
        mix_gradients: inside the mask, take per axis whichever of the target's and the source's
            forward differences has the larger magnitude (ties keep the target); with False, take
            the source's.

    Returns:
        [C, *S] float32: a copy of the target whose box interior (the box minus its one-voxel
        shell) holds the solution; everything else, the shell included, equals the target.
        Not clipped. A box thinner than 3 voxels on some axis has no interior: the target is
        returned unchanged.

    Raises:
        ValueError: wrong dtypes or shapes, a box outside the image, NaN or Inf.
    """
    _validate(target, source_patch, patch_mask, corner)
    blended = target.copy()
    box = (slice(None), *(slice(c, c + n) for c, n in zip(corner, patch_mask.shape)))
    blended[box] = blend_box(target[box], source_patch, patch_mask, mix_gradients)
    return blended


def blend_box(
    target_box: np.ndarray, source_patch: np.ndarray, patch_mask: np.ndarray, mix_gradients: bool = True
) -> np.ndarray:
    """The Poisson solve on one box, unchecked (`poisson_blend` validates and places it).

    Args:
        target_box: [C, *P] float32, the target's values on the box.
        source_patch: [C, *P] float32.
        patch_mask: [*P] bool.
        mix_gradients: as in `poisson_blend`.

    Returns:
        [C, *P] float32, a new array: the target box with the solution on its interior.
    """
    box_shape = patch_mask.shape
    blended = target_box.copy()
    if min(box_shape) < 3:
        return blended
    spatial = len(box_shape)
    rhs = np.zeros((len(target_box), *(n - 2 for n in box_shape)), dtype=np.float32)
    for axis in range(spatial):
        # Only the edges on interior rows of the other axes feed the interior's divergence.
        rows = tuple(slice(None) if d == axis else slice(1, -1) for d in range(spatial))
        target_step = np.diff(target_box[(slice(None), *rows)], axis=axis + 1)
        source_step = np.diff(source_patch[(slice(None), *rows)], axis=axis + 1)
        mask_rows = tuple(slice(0, -1) if d == axis else slice(1, -1) for d in range(spatial))
        use_source = patch_mask[mask_rows][None]
        if mix_gradients:
            use_source = use_source & (np.abs(source_step) > np.abs(target_step))
        excess = np.where(use_source, source_step - target_step, np.float32(0))
        later = (slice(None), *(slice(1, None) if d == axis else slice(None) for d in range(spatial)))
        earlier = (slice(None), *(slice(0, -1) if d == axis else slice(None) for d in range(spatial)))
        rhs += excess[later] - excess[earlier]

    if not rhs.any():
        return blended
    axes = tuple(range(1, spatial + 1))
    spectrum = scipy.fft.dstn(rhs, type=1, axes=axes, overwrite_x=True)
    spectrum /= _dirichlet_eigenvalues(tuple(box_shape))
    correction = scipy.fft.idstn(spectrum, type=1, axes=axes, overwrite_x=True)
    blended[(slice(None), *([slice(1, -1)] * spatial))] += correction
    return blended
