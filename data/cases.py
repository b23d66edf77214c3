"""The prepared-case format every later stage reads: one compressed `.npz` per case.

Arrays in a prepared case (all on the model grid, spatial shape S of 2 or 3 dims):
    image       float32 [C, *S]   preprocessed intensities (recipe-normalised)
    foreground  bool    [*S]      the foreground mask synthesis places anomalies on
    lesion      uint8   [*S]      ground-truth lesion mask (0/1), only for evaluation cases
    affine      float64 [4, 4]    voxel index -> world (mm) of the model grid (2D: z row/col unused)
    source_affine float64 [4, 4]  voxel -> world of the original image, to map outputs back
    source_shape  int64 [D]       spatial shape of the original image
"""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

from lightwork.data import storage
from lightwork.errors import UserError


@dataclass
class PreparedCase:
    """One preprocessed case. See the module docstring for shapes and dtypes."""

    case_id: str
    image: np.ndarray
    foreground: np.ndarray
    lesion: np.ndarray | None = None
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    source_affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    source_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        spatial = self.image.shape[1:]
        if self.image.ndim not in (3, 4):
            raise ValueError(
                f"case {self.case_id}: image must be [C, *S] with 2 or 3 spatial dims, got {self.image.shape}"
            )
        if self.foreground.shape != spatial:
            raise ValueError(
                f"case {self.case_id}: foreground shape {self.foreground.shape} != image spatial shape {spatial}"
            )
        if self.lesion is not None and self.lesion.shape != spatial:
            raise ValueError(f"case {self.case_id}: lesion shape {self.lesion.shape} != image spatial shape {spatial}")


def encode_case(case: PreparedCase) -> bytes:
    """The `.npz` bytes of a case (compressed)."""
    arrays = {
        "case_id": np.array(case.case_id),
        "image": np.ascontiguousarray(case.image, dtype=np.float32),
        "foreground": np.ascontiguousarray(case.foreground, dtype=bool),
        "affine": np.asarray(case.affine, dtype=np.float64),
        "source_affine": np.asarray(case.source_affine, dtype=np.float64),
        "source_shape": np.asarray(case.source_shape, dtype=np.int64),
    }
    if case.lesion is not None:
        arrays["lesion"] = np.ascontiguousarray(case.lesion, dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


# What numpy, zipfile and zlib raise on a damaged, truncated or foreign `.npz`.
UNREADABLE = (OSError, KeyError, ValueError, zipfile.BadZipFile, zlib.error, EOFError)


def _unreadable(where: str, error: Exception) -> UserError:
    return UserError(f"{where}: not a readable prepared case ({error})")


def decode_case(payload: bytes, where: str = "<bytes>") -> PreparedCase:
    """A case from `.npz` bytes; `where` names the file in error messages."""
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            return PreparedCase(
                case_id=str(npz["case_id"]),
                image=npz["image"],
                foreground=npz["foreground"],
                lesion=npz["lesion"] if "lesion" in npz.files else None,
                affine=npz["affine"],
                source_affine=npz["source_affine"],
                source_shape=tuple(int(v) for v in npz["source_shape"]),
            )
    except UNREADABLE as error:
        raise _unreadable(where, error) from error


def _case_bytes(uri: str) -> bytes:
    try:
        return storage.read_bytes(uri)
    except FileNotFoundError as error:
        raise UserError(f"{uri}: prepared case not found") from error


def load_masks(uri: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The foreground (bool [*S]) and lesion mask (uint8 [*S], None when the case has none) of the
    prepared case at `uri`, without decompressing its image. UserError naming the file when it is
    not a readable prepared case."""
    payload = _case_bytes(uri)
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            return npz["foreground"], (npz["lesion"] if "lesion" in npz.files else None)
    except UNREADABLE as error:
        raise _unreadable(uri, error) from error


def save_case(uri: str, case: PreparedCase) -> None:
    storage.write_bytes(uri, encode_case(case))


def load_case(uri: str) -> PreparedCase:
    """The prepared case at `uri`; UserError naming the file when it is missing or unreadable."""
    return decode_case(_case_bytes(uri), where=uri)
