"""Flat-index helpers of the compiled kernels (numba): C-ordered arrays walked as rows along
their last axis, so the inner loops run over contiguous memory."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def strides_of(shape):
    """The flat-index strides of a C-ordered array of `shape` ([D] int64): [D] int64."""
    strides = np.ones(shape.size, np.int64)
    for d in range(shape.size - 2, -1, -1):
        strides[d] = strides[d + 1] * shape[d + 1]
    return strides


@numba.njit(cache=True, nogil=True)
def row_starts(start, extent, strides):
    """The flat indices of the first voxels of the rows (runs along the last axis) of the
    sub-box with first voxel `start` and size `extent` ([D] int64 each) of an array with
    `strides`: [prod(extent[:-1])] int64, ascending (C order)."""
    spatial = start.size
    rows = 1
    for d in range(spatial - 1):
        rows *= extent[d]
    starts = np.empty(rows, np.int64)
    coordinate = np.zeros(spatial, np.int64)
    for row in range(rows):
        index = 0
        for d in range(spatial):
            index += (start[d] + coordinate[d]) * strides[d]
        starts[row] = index
        for d in range(spatial - 2, -1, -1):  # the next row in C order
            coordinate[d] += 1
            if coordinate[d] < extent[d]:
                break
            coordinate[d] = 0
    return starts
