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

The right-hand side is one compiled pass over the box (`_correction_rhs`); the orthonormal DST-I
is a product with a cached sine matrix per axis (`_sine_transform`): the same transform as
scipy.fft.dst(type=1, norm="ortho"), rounded differently (float32 products instead of an FFT).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numba
import numpy as np

from lightwork.anomalies.grid import row_starts, strides_of


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


@lru_cache(maxsize=256)
def _sine_basis(modes: int) -> np.ndarray:
    """The orthonormal type-I DST matrix of `modes` points, sqrt(2 / (n + 1)) sin(pi j k / (n + 1))
    for j, k = 1..n, [n, n] float32 (symmetric and its own inverse; the sines in float64). Cached
    per length (at most 256 of them: every length of a 2D box up to 0.8 x 256 fits, ~11 MB)."""
    period = 2 * (modes + 1)  # sin(pi m / (n + 1)) repeats with m mod 2 (n + 1): a table, not n^2 sines
    table = (np.sqrt(2.0 / (modes + 1)) * np.sin(np.pi * np.arange(period) / (modes + 1))).astype(np.float32)
    k = np.arange(1, modes + 1)
    basis = table[np.outer(k, k) % period]
    basis.flags.writeable = False
    return basis


def _sine_transform(values: np.ndarray) -> np.ndarray:
    """The orthonormal type-I DST over every axis but the first of [C, *N] float32 (C-ordered),
    as one matrix product per axis (BLAS; for box lengths up to a few hundred faster than
    pocketfft's FFT-based DST, and much faster when 2 (N + 1) has a large prime factor, where the
    FFT falls back to Bluestein's algorithm). Returns a new [C, *N] float32 array."""
    channels, modes = values.shape[0], values.shape[1:]
    for axis, length in enumerate(modes):
        basis = _sine_basis(length)
        lead = channels * int(np.prod(modes[:axis]))
        trail = int(np.prod(modes[axis + 1 :]))
        if trail == 1:
            values = values.reshape(lead, length) @ basis  # the basis is symmetric
        else:
            values = np.matmul(basis, values.reshape(lead, length, trail))
    return values.reshape(channels, *modes)


@lru_cache(maxsize=1024)
def _axis_eigenvalues(length: int) -> np.ndarray:
    """One axis' share of the Laplacian's DST-I eigenvalues for a box `length` voxels long:
    2 cos(pi (k + 1) / (length - 1)) - 2 for k < length - 2, [length - 2] float64. Cached: read only."""
    k = np.arange(length - 2, dtype=np.float64)
    values = 2.0 * np.cos(np.pi * (k + 1) / (length - 1)) - 2.0
    values.flags.writeable = False
    return values


@numba.njit(cache=True, nogil=True)
def _correction_rhs(target, source, mask, shape, mix, rhs):
    """The right-hand side of the correction's Poisson equation on the box interior.

    Per axis a (in order), the excess of the guidance over the target gradient on every edge
    q -> q + e_a: the source's forward difference minus the target's where the mask holds at q
    (with `mix`, only where the source's magnitude is the larger), else 0; then
    rhs[c, p] += excess_a(p) - excess_a(p - e_a) over the interior voxels p in C order (float32,
    added as numpy adds the axes' terms).
    target, source: [C, M] float32, C-ordered boxes of `shape` ([D] int64); mask: [M] bool;
    rhs: [C, prod(shape - 2)] float32, written. Returns whether any entry is non-zero."""
    spatial = shape.size
    strides = strides_of(shape)
    starts = row_starts(np.ones(spatial, np.int64), shape - 2, strides)  # the interior's rows
    length = shape[spatial - 1] - 2
    size = mask.size
    excess = np.zeros(size, np.float32)
    rhs[:] = 0
    for c in range(target.shape[0]):
        target_c, source_c, rhs_c = target[c], source[c], rhs[c]
        for axis in range(spatial):
            step = strides[axis]
            for index in range(size - step):
                target_step = target_c[index + step] - target_c[index]
                source_step = source_c[index + step] - source_c[index]
                use = mask[index] and (not mix or abs(source_step) > abs(target_step))
                excess[index] = source_step - target_step if use else np.float32(0)
            out = 0
            for start in starts:
                for index in range(start, start + length):
                    rhs_c[out] += excess[index] - excess[index - step]
                    out += 1
    nonzero = False
    for value in rhs.reshape(-1):
        if value != 0:
            nonzero = True
            break
    return nonzero


@numba.njit(cache=True, nogil=True)
def _divide_by_eigenvalues(spectrum, eigenvalues, lengths):
    """spectrum: [C, prod(lengths)] float32, C-ordered interior modes, divided in place by the
    Laplacian's eigenvalue of each mode: sum_d of its axes' shares (eigenvalues: the axes' shares
    concatenated, [sum(lengths)] float64), summed in float64 in axis order, then float32."""
    spatial = lengths.size
    first = np.zeros(spatial, np.int64)
    for d in range(1, spatial):
        first[d] = first[d - 1] + lengths[d - 1]
    last = eigenvalues[first[spatial - 1] :]
    length = lengths[spatial - 1]
    rows = spectrum.shape[1] // length
    mode = np.zeros(spatial, np.int64)
    for row in range(rows):
        leading = 0.0
        for d in range(spatial - 1):
            leading += eigenvalues[first[d] + mode[d]]
        for c in range(spectrum.shape[0]):
            values = spectrum[c, row * length : (row + 1) * length]
            for k in range(length):
                values[k] /= np.float32(leading + last[k])
        for d in range(spatial - 2, -1, -1):  # the next row of modes in C order
            mode[d] += 1
            if mode[d] < lengths[d]:
                break
            mode[d] = 0


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
    interior = tuple(n - 2 for n in box_shape)
    channels = len(target_box)
    rhs = np.empty((channels, int(np.prod(interior))), dtype=np.float32)
    shape = np.array(box_shape, dtype=np.int64)
    if not _correction_rhs(
        np.ascontiguousarray(target_box).reshape(channels, -1),
        np.ascontiguousarray(source_patch).reshape(channels, -1),
        np.ascontiguousarray(patch_mask).reshape(-1),
        shape,
        mix_gradients,
        rhs,
    ):
        return blended
    spectrum = np.ascontiguousarray(_sine_transform(rhs.reshape(channels, *interior)))
    eigenvalues = np.concatenate([_axis_eigenvalues(n) for n in box_shape])
    _divide_by_eigenvalues(spectrum.reshape(channels, -1), eigenvalues, shape - 2)
    blended[(slice(None), *([slice(1, -1)] * spatial))] += _sine_transform(spectrum)
    return blended
