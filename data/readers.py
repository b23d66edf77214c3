"""Read one medical image from storage (local path or s3://) into a canonical array.

Formats, chosen by the name (`uri`):
    .nii, .nii.gz          NIfTI-1/2 (nibabel), reoriented to the closest canonical RAS axes
    .dcm/.dicom/.ima file  one DICOM file: a 2D image (e.g. a radiograph) or one slice
    a folder of those      one DICOM series: slices sorted along the slice normal (by
                           ImagePositionPatient; InstanceNumber when positions are missing), RAS
    .png, .jpg, .jpeg      2D image (Pillow); colour is converted to grey (ITU-R 601 luma)
    .npy                   a numpy array (2D or 3D), 1 mm voxels, identity orientation

Conventions of the result (`Loaded`):
    array    float32 [*S], S of 2 or 3 dims, in the file's units (DICOM: the modality LUT or
             rescale applied by pydicom's `apply_modality_lut`; no windowing, no inversion:
             recipes decide)
    affine   float64 [4, 4] voxel index -> world mm; 3D in RAS (+x right, +y anterior, +z
             superior); 2D images: rows/columns scaled by the pixel spacing, third axis unused
    spacing  tuple of mm per array axis
    orientation  axis codes of the array, e.g. "RAS"; "RC" (rows, columns) for 2D images
    provenance   dict: uri, format, original_shape (the file's array shape as stored),
             original_dtype, source_shape and source_affine (the grid a result must be written on
             to line up with the file voxel for voxel: spatial shape tuple and float64 [4, 4]
             voxel -> world mm of that same grid; every reader sets both), original_orientation
             (NIfTI), and for DICOM modality, photometric, window_center/window_width (if present),
             voi (2D files with a VOI module: the pydicom Dataset of its elements, for
             `apply_voi_lut`), files

DICOM series: the source grid is (column, row, slice) as dcm2niix writes it, voxel (c, r, k) at
the world position of column c, row r of the k-th slice along the slice normal.

Every problem (unsupported name, unreadable bytes, NaN/inf values, wrong rank) raises a ValueError
that names the file.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field

import numpy as np

from lightwork.data import storage

NIFTI_SUFFIXES = (".nii.gz", ".nii")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
NUMPY_SUFFIXES = (".npy",)
IMAGE_SUFFIXES = NIFTI_SUFFIXES + DICOM_SUFFIXES + PICTURE_SUFFIXES + NUMPY_SUFFIXES


@dataclass
class Loaded:
    """An image read from storage (see the module docstring for each field's convention)."""

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, ...]
    orientation: str
    provenance: dict = field(default_factory=dict)


def suffix_of(name: str) -> str:
    """The recognised image suffix of a file name (lower case), or '' when none matches."""
    lowered = str(name).lower()
    return next((suffix for suffix in IMAGE_SUFFIXES if lowered.endswith(suffix)), "")


def is_dicom_name(name: str) -> bool:
    return suffix_of(name) in DICOM_SUFFIXES


def fetch(uri: str) -> dict[str, bytes]:
    """The raw bytes behind an image URI: {uri: bytes} for a file; for a DICOM series folder one
    entry per DICOM file in it (sorted by name). Raises ValueError when nothing is there."""
    fs, path = storage.filesystem(uri)
    if fs.isdir(path):
        names = sorted(name for name in fs.ls(path, detail=False) if is_dicom_name(name))
        if not names:
            raise ValueError(f"{uri}: a folder without DICOM files (.dcm/.dicom/.ima)")
        prefix = uri[: len(uri) - len(path)] if storage.is_remote(uri) else ""
        return {f"{prefix}{name}": fs.cat_file(name) for name in names}
    try:
        return {uri: fs.cat_file(path)}
    except FileNotFoundError as error:
        raise ValueError(f"{uri}: no such file") from error


def read_image(uri: str, files: dict[str, bytes] | None = None) -> Loaded:
    """Read the image at `uri` (or decode the bytes `files` already fetched from it by `fetch`)."""
    files = fetch(uri) if files is None else files
    if list(files) != [uri]:  # the files of a series folder
        loaded = _read_dicom_series(uri, files)
    else:
        payload = next(iter(files.values()))
        kind = suffix_of(uri)
        if kind in NIFTI_SUFFIXES:
            loaded = _read_nifti(uri, payload)
        elif kind in DICOM_SUFFIXES:
            loaded = _read_dicom_file(uri, payload)
        elif kind in PICTURE_SUFFIXES:
            loaded = _read_picture(uri, payload)
        elif kind in NUMPY_SUFFIXES:
            loaded = _read_numpy(uri, payload)
        else:
            raise ValueError(
                f"{uri}: unsupported file type (expected one of {', '.join(IMAGE_SUFFIXES)} or a DICOM series folder)"
            )
    check_values(uri, loaded.array)
    return loaded


def check_values(uri: str, array: np.ndarray) -> None:
    """Raise ValueError naming `uri` when the array is not 2D/3D, empty, or holds NaN/inf."""
    if array.ndim not in (2, 3):
        raise ValueError(f"{uri}: expected a 2D or 3D image, got shape {array.shape}")
    if array.size == 0 or min(array.shape) < 2:
        raise ValueError(f"{uri}: degenerate image shape {array.shape}")
    finite = np.isfinite(array)
    if not finite.all():
        raise ValueError(f"{uri}: {int((~finite).sum())} NaN/inf values in the image")


def canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder/flip the axes of a 3D array so they point closest to RAS; returns (array, affine)."""
    import nibabel.orientations as ornt

    current = ornt.io_orientation(affine)
    transform = ornt.ornt_transform(current, ornt.axcodes2ornt("RAS"))
    out = ornt.apply_orientation(array, transform)
    return np.ascontiguousarray(out), affine @ ornt.inv_ornt_aff(transform, array.shape)


def source_grid(shape: tuple[int, ...], affine: np.ndarray) -> dict:
    """The provenance entries `source_shape` and `source_affine` of a grid (one owner of both)."""
    return {"source_shape": tuple(int(n) for n in shape), "source_affine": np.asarray(affine, float).copy()}


def voxel_spacing(affine: np.ndarray, dims: int) -> tuple[float, ...]:
    """mm per array axis of a grid's affine (the norms of its first `dims` columns)."""
    return tuple(float(v) for v in np.sqrt((np.asarray(affine)[:dims, :dims] ** 2).sum(axis=0)))


def _read_nifti(uri: str, payload: bytes) -> Loaded:
    import nibabel as nib

    try:
        raw = gzip.decompress(payload) if payload[:2] == b"\x1f\x8b" else payload
        image = nib.Nifti1Image.from_bytes(raw) if _nifti_version(raw) == 1 else nib.Nifti2Image.from_bytes(raw)
        data = np.asanyarray(image.dataobj)
    except Exception as error:  # nibabel/zlib raise many types for corrupt bytes
        raise ValueError(f"{uri}: not a readable NIfTI file ({type(error).__name__}: {error})") from error
    original_shape, original_dtype = tuple(data.shape), str(image.get_data_dtype())
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{uri}: expected a 3D volume, got shape {original_shape} (one volume per file)")
    import nibabel.orientations as ornt

    original_orientation = "".join(ornt.aff2axcodes(image.affine))
    array, affine = canonical(np.asarray(data, dtype=np.float32), image.affine)
    provenance = {
        "uri": uri,
        "format": "nifti",
        "original_shape": original_shape,
        "original_dtype": original_dtype,
        "original_orientation": original_orientation,
        **source_grid(data.shape, image.affine),
    }
    return Loaded(array.astype(np.float32, copy=False), affine, voxel_spacing(affine, 3), "RAS", provenance)


def _nifti_version(raw: bytes) -> int:
    """1 or 2 from the header size field (348 or 540, either byte order); ValueError otherwise."""
    if len(raw) < 4:
        raise ValueError("file too short for a NIfTI header")
    for order in ("<", ">"):
        size = int(np.frombuffer(raw[:4], dtype=f"{order}i4")[0])
        if size in (348, 540):
            return 1 if size == 348 else 2
    raise ValueError("no NIfTI header (sizeof_hdr is neither 348 nor 540)")


def _dicom_dataset(uri: str, payload: bytes):
    """The dataset of a DICOM file. Files without the `DICM` preamble are read by force, and kept
    only when they hold DICOM image elements (pixel data or a SOP class): anything else, a text
    file named `.dcm` say, is "not a DICOM file"."""
    import warnings

    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns on every unknown tag of a forced read
            dataset = pydicom.dcmread(io.BytesIO(payload), force=True)
    except Exception as error:
        raise ValueError(f"{uri}: not a DICOM file ({type(error).__name__}: {error})") from error
    if payload[128:132] != b"DICM" and "PixelData" not in dataset and "SOPClassUID" not in dataset:
        raise ValueError(f"{uri}: not a DICOM file (no DICM preamble and no DICOM image elements)")
    return dataset


def _dicom_pixels(uri: str, dataset) -> np.ndarray:
    """Pixel values in the file's units (pydicom's `apply_modality_lut`: a Modality LUT or
    RescaleSlope * stored + RescaleIntercept), float32."""
    from pydicom.pixels import apply_modality_lut

    if "PixelData" not in dataset:
        raise ValueError(f"{uri}: a DICOM file without pixel data (not an image)")
    try:
        pixels = dataset.pixel_array
    except Exception as error:
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise ValueError(
            f"{uri}: DICOM pixel data cannot be decoded (transfer syntax {syntax}; {type(error).__name__}: {error})"
        ) from error
    return np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float32)


VOI_ELEMENTS = (
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "VOILUTSequence",
    "PhotometricInterpretation",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "ModalityLUTSequence",
)


def _voi_dataset(dataset):
    """The elements pydicom's `apply_voi_lut` reads, as a small Dataset; None without a VOI module."""
    from pydicom.dataset import Dataset

    if "VOILUTSequence" not in dataset and not ("WindowCenter" in dataset and "WindowWidth" in dataset):
        return None
    voi = Dataset()
    for keyword in VOI_ELEMENTS:
        if keyword in dataset:
            setattr(voi, keyword, dataset[keyword].value)
    return voi


def _first_value(value) -> float | None:
    """A DICOM value that may be multi-valued (WindowCenter) as one float, or None."""
    if value is None or value == "":
        return None
    try:
        return float(value[0] if hasattr(value, "__len__") and not isinstance(value, (str, bytes)) else value)
    except (TypeError, ValueError, IndexError):
        return None


def _stored_dtype(dataset) -> str:
    """The stored pixel type from the header (e.g. uint16), without decoding the pixels again."""
    signed = int(getattr(dataset, "PixelRepresentation", 0) or 0) == 1
    return f"{'int' if signed else 'uint'}{int(getattr(dataset, 'BitsAllocated', 16) or 16)}"


def _dicom_provenance(uri: str, dataset, pixels: np.ndarray, files: list[str]) -> dict:
    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
    provenance = {
        "uri": uri,
        "format": "dicom",
        "original_shape": tuple(pixels.shape),
        "original_dtype": _stored_dtype(dataset),
        "modality": str(getattr(dataset, "Modality", "")),
        "photometric": photometric,
        "monochrome1": photometric == "MONOCHROME1",
        "files": files,
    }
    for key, tag in (("window_center", "WindowCenter"), ("window_width", "WindowWidth")):
        value = _first_value(getattr(dataset, tag, None))
        if value is not None:
            provenance[key] = value
    return provenance


def _read_dicom_file(uri: str, payload: bytes) -> Loaded:
    dataset = _dicom_dataset(uri, payload)
    pixels = _dicom_pixels(uri, dataset)
    if pixels.ndim == 3 and int(getattr(dataset, "SamplesPerPixel", 1)) > 1:
        raise ValueError(f"{uri}: colour DICOM ({dataset.PhotometricInterpretation}) is not supported")
    if pixels.ndim != 2:
        raise ValueError(f"{uri}: multi-frame DICOM (shape {pixels.shape}) is not supported; export one file per slice")
    spacing = getattr(dataset, "PixelSpacing", None) or getattr(dataset, "ImagerPixelSpacing", None) or (1.0, 1.0)
    row_mm, col_mm = float(spacing[0]), float(spacing[1])
    affine = np.diag([row_mm, col_mm, 1.0, 1.0])
    provenance = {**_dicom_provenance(uri, dataset, pixels, [uri]), **source_grid(pixels.shape, affine)}
    voi = _voi_dataset(dataset)
    if voi is not None:
        provenance["voi"] = voi
    return Loaded(pixels, affine, (row_mm, col_mm), "RC", provenance)


def _read_dicom_series(uri: str, files: dict[str, bytes]) -> Loaded:
    """One 3D volume from the slices of a series folder, in RAS."""
    datasets = {name: _dicom_dataset(name, payload) for name, payload in files.items()}
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in datasets.values()}
    if len(series) > 1:
        raise ValueError(f"{uri}: the folder holds {len(series)} DICOM series; put each series in its own folder")
    first = next(iter(datasets.values()))
    orientation = getattr(first, "ImageOrientationPatient", None)
    positioned = orientation is not None and all(
        getattr(ds, "ImagePositionPatient", None) is not None for ds in datasets.values()
    )
    if positioned:
        row_dir, col_dir = np.array(orientation[:3], float), np.array(orientation[3:], float)
        normal = np.cross(row_dir, col_dir)
        order = sorted(
            datasets, key=lambda name: float(np.dot(normal, np.array(datasets[name].ImagePositionPatient, float)))
        )
    elif all(getattr(ds, "InstanceNumber", None) is not None for ds in datasets.values()):
        row_dir, col_dir, normal = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0])
        order = sorted(datasets, key=lambda name: int(datasets[name].InstanceNumber))
    else:
        raise ValueError(
            f"{uri}: DICOM slices carry neither ImagePositionPatient nor InstanceNumber: slice order unknown"
        )
    slices = [_dicom_pixels(name, datasets[name]) for name in order]
    shapes = {s.shape for s in slices}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"{uri}: DICOM slices differ in shape or are not 2D ({sorted(shapes)})")
    volume = np.stack(slices, axis=-1).transpose(1, 0, 2)  # [column, row, slice]
    spacing = getattr(first, "PixelSpacing", None) or (1.0, 1.0)
    row_mm, col_mm = float(spacing[0]), float(spacing[1])
    if positioned and len(order) > 1:
        positions = np.array([np.dot(normal, np.array(datasets[name].ImagePositionPatient, float)) for name in order])
        steps = np.diff(positions)
        if np.any(steps <= 1e-6):
            raise ValueError(f"{uri}: two DICOM slices share one position along the slice normal")
        slice_mm = float(np.median(steps))
        origin = np.array(datasets[order[0]].ImagePositionPatient, float)
    else:
        slice_mm = float(getattr(first, "SpacingBetweenSlices", None) or getattr(first, "SliceThickness", None) or 1.0)
        origin = np.array(getattr(first, "ImagePositionPatient", None) or (0.0, 0.0, 0.0), float)
    # Voxel (column c, row r, slice k) -> LPS: origin + c*col_mm*row_dir + r*row_mm*col_dir + k*slice*normal
    # (ImageOrientationPatient's first triplet runs along a row, i.e. with the column index).
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_dir * col_mm, col_dir * row_mm, normal * slice_mm, origin
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    array, affine = canonical(volume, affine_ras)
    provenance = {**_dicom_provenance(uri, first, volume, order), **source_grid(volume.shape, affine_ras)}
    provenance["slice_order"] = "ImagePositionPatient" if positioned else "InstanceNumber"
    return Loaded(array, affine, voxel_spacing(affine, 3), "RAS", provenance)


def _read_picture(uri: str, payload: bytes) -> Loaded:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(payload)) as picture:
            picture.load()
            mode, size = picture.mode, picture.size
            if mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LA"):
                grey = np.asarray(picture.convert("L"), dtype=np.float32)
            else:  # L, I;16, I, F: the stored values
                grey = np.asarray(picture, dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{uri}: not a readable PNG/JPEG image ({type(error).__name__}: {error})") from error
    provenance = {
        "uri": uri,
        "format": "picture",
        "original_shape": (size[1], size[0]),
        "original_dtype": mode,
        "original_mode": mode,
        **source_grid(grey.shape, np.eye(4)),
    }
    return Loaded(grey, np.eye(4), (1.0, 1.0), "RC", provenance)


def _read_numpy(uri: str, payload: bytes) -> Loaded:
    try:
        array = np.load(io.BytesIO(payload), allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{uri}: not a readable .npy array ({error})") from error
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"{uri}: .npy array of non-numeric dtype {array.dtype}")
    provenance = {
        "uri": uri,
        "format": "numpy",
        "original_shape": tuple(array.shape),
        "original_dtype": str(array.dtype),
    }
    if array.ndim == 4 and array.shape[0] == 1:  # [1, *S] as stored for Ray Data
        array = array[0]
    orientation = "RAS" if array.ndim == 3 else "RC"
    provenance.update(source_grid(array.shape, np.eye(4)))
    return Loaded(array.astype(np.float32), np.eye(4), (1.0,) * array.ndim, orientation, provenance)
