"""A montage of prepared cases: what the recipes made, for a quick visual check (matplotlib Agg).

3D cases take one row each and show the sagittal, coronal and axial slices through the lesion's
centre of mass (the foreground's bounding-box centre when there is no lesion); 2D images fill
rows of up to four. Contours: foreground in yellow, lesion in red. Titles carry the case id, its
image label and its intensity range.
"""

from __future__ import annotations

import io

import numpy as np

from lightwork.data import storage
from lightwork.data.cases import PreparedCase, load_case
from lightwork.data.manifest import read_manifest, usable

VIEWS = ("sagittal", "coronal", "axial")
MAX_2D_COLUMNS = 4


def centre_of(case: PreparedCase) -> tuple[int, ...]:
    """Voxel the 3D views pass through: lesion centre of mass, else the foreground box centre."""
    mask = case.lesion.astype(bool) if case.lesion is not None and case.lesion.any() else None
    if mask is not None:
        return tuple(int(round(v)) for v in np.argwhere(mask).mean(axis=0))
    where = np.argwhere(case.foreground)
    return tuple(int(v) for v in (where.min(axis=0) + where.max(axis=0)) // 2)


def panels(case: PreparedCase) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(view name, image, foreground, lesion) 2D arrays to draw, rows top to bottom.

    3D arrays are RAS (x, y, z): each view is transposed so superior/anterior point up.
    """
    image, foreground, lesion = case.image.mean(axis=0), case.foreground, case.lesion
    if image.ndim == 2:
        return [("image", image, foreground, lesion)]
    centre = centre_of(case)

    def cut(array: np.ndarray | None, axis: int) -> np.ndarray | None:
        return None if array is None else np.take(array, centre[axis], axis=axis).T

    return [(view, cut(image, axis), cut(foreground, axis), cut(lesion, axis)) for axis, view in enumerate(VIEWS)]


def render_montage(cases: list[tuple[PreparedCase, int | None]]) -> bytes:
    """PNG bytes of the montage of (case, image_label) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One row per 3D case (its three views); 2D cases fill rows of up to MAX_2D_COLUMNS images.
    cells = [(case, label, index, view) for case, label in cases for index, view in enumerate(panels(case))]
    columns = len(VIEWS) if any(case.image.ndim == 4 for case, _ in cases) else min(MAX_2D_COLUMNS, len(cells))
    rows = -(-len(cells) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 3.0 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (case, label, index, (view, image, foreground, lesion)) in zip(axes.ravel(), cells):
        origin = "lower" if case.image.ndim == 4 else "upper"
        ax.imshow(image, cmap="gray", origin=origin, interpolation="nearest")
        if foreground.any() and not foreground.all():
            ax.contour(foreground.astype(float), levels=[0.5], colors="yellow", linewidths=0.7, origin=origin)
        if lesion is not None and lesion.any():
            ax.contour(lesion.astype(float), levels=[0.5], colors="red", linewidths=0.9, origin=origin)
        title = (
            view
            if index
            else (
                f"{case.case_id}\nlabel {label if label is not None else '?'}, "
                f"[{case.image.min():.2f}, {case.image.max():.2f}] {view}"
            )
        )
        ax.set_title(title, fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue()


def montage(manifest: str, out: str, max_cases: int = 12) -> int:
    """Draw `max_cases` usable cases of a manifest (dataset folder or .parquet URI), evenly spaced
    over its sorted case list (first and last included), into the PNG at `out` (local or s3://);
    returns how many cases it shows."""
    rows = usable(read_manifest(manifest))
    if len(rows) > max_cases:
        rows = [rows[i] for i in np.unique(np.linspace(0, len(rows) - 1, max(max_cases, 0)).round().astype(int))]
    if not rows:
        raise ValueError(f"{manifest}: no usable cases to draw")
    cases = [(load_case(row["array_uri"]), row.get("image_label")) for row in rows]
    storage.write_bytes(out, render_montage(cases))
    return len(cases)
