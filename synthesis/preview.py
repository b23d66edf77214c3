"""A picture of what the synthetic anomaly tasks do to one image or volume (matplotlib Agg).

    rows = preview_rows(load_input("t1.nii.gz", mask="brain.nii.gz"), ["all"], seed=0)
    png = render_preview(rows)

Input: a NIfTI volume (.nii/.nii.gz, canonical RAS), a PNG/JPEG picture (colour -> grey) or a 2D/3D
.npy array, read by `lightwork.data.readers`. Foreground: the hole-filled non-zero voxels of the
given mask, else of the image. Larger inputs are resampled (linear; the mask nearest) to at most
`max_size` voxels on the longest axis (default 128 for volumes, 256 for 2D), isotropically, so a
preview takes seconds. Then the image is z-scored over the foreground (0 outside), as the brain
recipe does.

Each task runs once with the generator `sample_generator(seed, 0, stem, task_id)` (stem: the file
name without its image suffix), so a preview shows exactly the sample that seed gives. Blend
sources: `intra_blend` reads patches from the input itself; `inter_blend` from the `sources`
images when given, else from the stand-in external pool of the training stream
(`lightwork.synthesis.samples.standin_sources`: procedurally textured noise-and-ellipsoid images, a
function of the seed and the shape), which only stands in for a real external dataset. The
deformation tasks push at most 5 voxels in 3D and 10 in 2D (the brain and chest X-ray settings).

The figure has one row per task: 3D inputs show the sagittal, coronal and axial slices through
the strongest anomaly's label-weighted centre of mass (the foreground's box centre when the label
is empty), each as original | anomalous | label heat map; 2D inputs show the three panels once.
Grey panels share one intensity window (the original's 1st-99th percentile inside the
foreground); the label map spans [0, 1].
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import scipy.ndimage

from lightwork.anomalies.parameters import max_push_for
from lightwork.anomalies.registry import TASK_COUNT, TASK_NAMES, make_task, task_id_of
from lightwork.anomalies.seeding import sample_generator
from lightwork.data.readers import read_image, suffix_of, voxel_spacing
from lightwork.data.recipes import HoleFilledForeground, Resample, Sample, ZScore, compose

VIEWS = ("sagittal", "coronal", "axial")
KINDS = ("original", "anomalous", "label")
MAX_SIZE = {2: 256, 3: 128}  # default cap on the longest axis, voxels
PANEL_INCHES = 2.2
DPI = 80


@dataclass(frozen=True)
class PreviewInput:
    """An image ready for the tasks."""

    name: str  # the file name without its image suffix: the case id of the generator
    image: np.ndarray  # [1, *S] float32, z-scored over the foreground, 0 outside
    foreground: np.ndarray  # [*S] bool


@dataclass(frozen=True)
class PreviewRow:
    """One task's sample of a preview."""

    task_id: int
    name: str
    original: np.ndarray  # [1, *S] float32
    anomalous: np.ndarray  # [1, *S] float32
    label: np.ndarray  # [*S] float32 in [0, 1]


def stem_of(uri: str) -> str:
    """The file name of `uri` without its recognised image suffix."""
    name = PurePosixPath(str(uri).rstrip("/")).name
    suffix = suffix_of(name)
    return name[: len(name) - len(suffix)] if suffix else name


def load_input(uri: str, mask: str | None = None, max_size: int | None = None) -> PreviewInput:
    """Read and prepare an input image (see the module docstring).

    Raises:
        ValueError: naming the file: unreadable, a mask of another shape, an empty foreground,
            a constant foreground.
    """
    loaded = read_image(uri)
    masks = {}
    if mask is not None:
        mask_array = read_image(mask).array
        if mask_array.shape != loaded.array.shape:
            raise ValueError(
                f"{mask}: mask shape {mask_array.shape} differs from the image's {loaded.array.shape} ({uri})"
            )
        masks["brain"] = mask_array != 0
    sample = Sample(loaded.array, loaded.affine, masks, name=uri)
    dims = loaded.array.ndim
    steps = [HoleFilledForeground("brain")]
    limit = MAX_SIZE[dims] if max_size is None else int(max_size)
    extent = np.asarray(loaded.array.shape) * np.asarray(voxel_spacing(loaded.affine, dims))
    if max(loaded.array.shape) > limit:
        steps.append(Resample(float(extent.max()) / limit))
    steps.append(ZScore("foreground"))
    prepared = compose(steps)(sample)
    return PreviewInput(stem_of(uri), prepared.image[None].astype(np.float32), prepared.masks["foreground"])


def task_ids(names: Sequence[str | int]) -> list[int]:
    """Task ids from names, ids (as int or digit strings) or "all"; ValueError on an unknown one."""
    ids: list[int] = []
    for name in names:
        ids.extend(range(TASK_COUNT) if str(name) == "all" else [task_id_of(name)])
    return list(dict.fromkeys(ids))


def preview_rows(
    data: PreviewInput,
    tasks: Sequence[str | int],
    seed: int = 0,
    sources: Sequence[PreviewInput] = (),
) -> list[PreviewRow]:
    """Run each task once on `data` (generator sample_generator(seed, 0, data.name, task_id));
    `sources` feed inter_blend (the stand-in pool when empty)."""
    from lightwork.synthesis.samples import standin_sources

    dims = data.image.ndim - 1
    rows = []
    for task_id in task_ids(tasks):
        name = TASK_NAMES[task_id]
        if name == "inter_blend":
            pool = [(source.image, source.foreground) for source in sources] or standin_sources(
                seed, data.image.shape[1:]
            )
            task = make_task(task_id, sources=pool)
        elif name in ("sink", "source"):
            task = make_task(task_id, max_push=max_push_for(dims))
        else:
            task = make_task(task_id)
        anomalous, label = task(data.image, data.foreground, sample_generator(seed, 0, data.name, task_id))
        rows.append(PreviewRow(task_id, name, data.image, anomalous, label))
    return rows


def focus(label: np.ndarray, foreground: np.ndarray) -> tuple[int, ...]:
    """The voxel the 3D views pass through: the label-weighted centre of mass of the strongest
    anomaly (the connected part of label > 0 with the largest label sum: several anomalies' common
    centre may lie in none of them), else the foreground's bounding-box centre."""
    if label.any():
        parts, count = scipy.ndimage.label(label > 0, structure=np.ones((3,) * label.ndim))
        strongest = 1 + int(np.argmax(scipy.ndimage.sum_labels(label, parts, range(1, count + 1))))
        return tuple(int(round(v)) for v in scipy.ndimage.center_of_mass(label, parts, strongest))
    where = np.argwhere(foreground)
    return tuple(int(v) for v in (where.min(axis=0) + where.max(axis=0)) // 2)


def _panels(row: PreviewRow, foreground: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(view, original, anomalous, label) 2D arrays; 3D arrays (RAS) are transposed so superior and
    anterior point up (drawn with origin 'lower')."""
    arrays = (row.original.mean(axis=0), row.anomalous.mean(axis=0), row.label)
    if row.label.ndim == 2:
        return [("image", *arrays)]
    centre = focus(row.label, foreground)
    return [(view, *(np.take(array, centre[axis], axis=axis).T for array in arrays)) for axis, view in enumerate(VIEWS)]


def columns_of(dims: int) -> int:
    """Panels per row: original | anomalous | label, per view in 3D."""
    return len(KINDS) * (len(VIEWS) if dims == 3 else 1)


def figure_size(rows: int, dims: int) -> tuple[int, int]:
    """(width, height) in pixels of the preview PNG of `rows` tasks on a `dims`-D input."""
    return round(columns_of(dims) * PANEL_INCHES * DPI), round(rows * PANEL_INCHES * DPI)


def render_preview(rows: Sequence[PreviewRow], foreground: np.ndarray) -> bytes:
    """PNG bytes of the preview (size `figure_size(len(rows), D)`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("nothing to preview: no task")
    dims = rows[0].label.ndim
    width, height = figure_size(len(rows), dims)
    figure, axes = plt.subplots(
        len(rows), columns_of(dims), figsize=(width / DPI, height / DPI), squeeze=False, layout="constrained"
    )
    inside = rows[0].original.mean(axis=0)[foreground]
    low, high = np.percentile(inside, [1, 99]) if inside.size else (0.0, 1.0)
    origin = "lower" if dims == 3 else "upper"
    for row_index, row in enumerate(rows):
        column = 0
        for view, original, anomalous, label in _panels(row, foreground):
            for kind, panel in zip(KINDS, (original, anomalous, label)):
                ax = axes[row_index, column]
                if kind == "label":
                    ax.imshow(panel, cmap="inferno", vmin=0, vmax=1, origin=origin, interpolation="nearest")
                else:
                    ax.imshow(panel, cmap="gray", vmin=low, vmax=high, origin=origin, interpolation="nearest")
                ax.axis("off")
                title = f"{kind}" if dims == 2 else f"{view} {kind}"
                if column == 0:
                    title = f"{row.task_id} {row.name}\n{title}"
                if kind == "label":
                    title += f"\nmax {row.label.max():.2f}, {np.count_nonzero(row.label)} vox"
                ax.set_title(title, fontsize=7)
                column += 1
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    plt.close(figure)
    return buffer.getvalue()
