"""Preprocessing recipes: raw images (`lightwork.data.readers.Loaded`) -> a `PreparedCase`.

A recipe is a list of small steps. Each step is a callable `Sample -> Sample` (MONAI-style) with
one array contract: `Sample.image` float32 [*S] (one channel), `Sample.masks` named bool [*S]
arrays on the same grid ("brain": a given brain mask, "foreground", "lesion"), `Sample.affine`
float64 [4, 4] voxel -> world mm of the current grid. Geometric steps move the image with linear
interpolation (block mean when downsampling) and every mask with nearest neighbour (majority vote
when downsampling), so masks stay binary and follow their image exactly.

Recipes (docs/method.md section 1):
    brain  3D MRI: skull-strip with the given brain mask, foreground = hole-filled brain mask (or,
           for a skull-stripped image, the hole-filled voxels that differ from its background
           value: the most common value on the volume's faces, 0 for most files, -2.7 for some
           pre-normalised ones), resample to `spacing_mm` (1 mm), z-score over the foreground,
           crop/pad to `shape * downsample` voxels centred on the foreground's bounding box
           (160x224x160), downsample by `downsample` (2) -> `shape` (80x112x80), zero outside the
           foreground, and z-score over the foreground of that final grid. Whatever the source's
           scaling (raw scanner units, or a set's own "already normalised" convention, which is
           never trusted), every prepared brain is z-scored over its foreground: one intensity
           convention for training and test sets. The demo cohort uses a small grid, e.g.
           `shape=(32, 40, 32), spacing_mm=2.5`.
    cxr    2D chest X-ray: window (the DICOM VOI module by pydicom, else the image's min..max) to [0, 1],
           invert MONOCHROME1, resize to `size` x `size` (256), histogram-equalise, scale to
           [-1, 1]; foreground = the whole image. Equalisation makes every X-ray's intensity
           distribution the same whatever its source's, so no z-score follows (the reference's
           convention for chest X-rays, docs/method.md section 2).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
from scipy import ndimage

from lightwork.data.cases import PreparedCase
from lightwork.data.readers import Loaded, voxel_spacing

# Bump when a recipe's output changes for the same input and options: prepared cases of an older
# version are re-made by `lightwork prepare`.
RECIPE_VERSION = "2"  # 2: brains z-scored on the final grid, whatever the source's scaling


@dataclass
class Sample:
    """The state passed between steps (see the module docstring for the array contract)."""

    image: np.ndarray
    affine: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    name: str = "<sample>"

    def with_arrays(self, image: np.ndarray, masks: dict[str, np.ndarray], affine: np.ndarray) -> Sample:
        return replace(self, image=image.astype(np.float32, copy=False), masks=masks, affine=affine)


Step = Callable[[Sample], Sample]


def compose(steps: list[Step]) -> Step:
    """One step running `steps` in order."""

    def run(sample: Sample) -> Sample:
        for step in steps:
            sample = step(sample)
        return sample

    return run


def scaled_affine(affine: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Affine of a grid whose voxel i covers old voxels around (i + 0.5) * f - 0.5 (same field of view)."""
    factors = np.asarray(factors, float)
    dims = len(factors)
    local = np.eye(4)
    local[range(dims), range(dims)] = factors
    local[:dims, 3] = (factors - 1.0) / 2.0
    return np.asarray(affine, float) @ local


def shifted_affine(affine: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Affine of a grid whose voxel 0 is old voxel `start` (crop or pad)."""
    local = np.eye(4)
    local[: len(start), 3] = start
    return np.asarray(affine, float) @ local


def foreground_box(mask: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) voxel bounds (upper exclusive) of a mask; ValueError when it is empty."""
    lower, upper = [], []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            raise ValueError(f"{name}: empty foreground (no brain voxels)")
        lower.append(hits[0])
        upper.append(hits[-1] + 1)
    return np.array(lower), np.array(upper)


def window_of(array: np.ndarray, start: np.ndarray, shape: tuple[int, ...], fill) -> np.ndarray:
    """`array[start : start + shape]` where indices outside the array read `fill` (crop and pad at once)."""
    out = np.full(shape, fill, dtype=array.dtype)
    src = tuple(slice(max(s, 0), min(s + n, m)) for s, n, m in zip(start, shape, array.shape))
    dst = tuple(slice(b.start - s, b.stop - s) for b, s in zip(src, start))
    if all(b.stop > b.start for b in src):
        out[dst] = array[src]
    return out


# ----------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class ApplyMask:
    """Zero the image outside masks[`mask`] (skull stripping with a given brain mask)."""

    mask: str = "brain"

    def __call__(self, sample: Sample) -> Sample:
        return sample.with_arrays(np.where(sample.masks[self.mask], sample.image, 0.0), sample.masks, sample.affine)


def background_value(image: np.ndarray) -> float:
    """The most common value on the faces of an array (the background of a skull-stripped image:
    0 for most files, a negative constant for some z-scored ones)."""
    faces = np.concatenate([np.moveaxis(image, axis, 0)[[0, -1]].ravel() for axis in range(image.ndim)])
    values, counts = np.unique(faces, return_counts=True)
    return float(values[counts.argmax()])


@dataclass(frozen=True)
class HoleFilledForeground:
    """masks["foreground"] = hole-filled masks[`mask`] if present, else the hole-filled voxels that
    differ from the image's `background_value`."""

    mask: str = "brain"

    def __call__(self, sample: Sample) -> Sample:
        if self.mask in sample.masks:
            source = sample.masks[self.mask]
        else:
            source = sample.image != np.float32(background_value(sample.image))
        lower, upper = foreground_box(source, sample.name)
        box = tuple(slice(a, b) for a, b in zip(lower, upper))  # holes lie inside the bounding box
        filled = np.zeros_like(source)
        filled[box] = ndimage.binary_fill_holes(source[box])
        return sample.with_arrays(sample.image, {**sample.masks, "foreground": filled}, sample.affine)


@dataclass(frozen=True)
class CropToForeground:
    """Crop every array to the foreground's bounding box plus `margin` voxels (speeds up resampling)."""

    margin: int = 2

    def __call__(self, sample: Sample) -> Sample:
        lower, upper = foreground_box(sample.masks["foreground"], sample.name)
        lower = np.maximum(lower - self.margin, 0)
        upper = np.minimum(upper + self.margin, sample.image.shape)
        box = tuple(slice(a, b) for a, b in zip(lower, upper))
        masks = {key: mask[box] for key, mask in sample.masks.items()}
        return sample.with_arrays(sample.image[box], masks, shifted_affine(sample.affine, lower))


@dataclass(frozen=True)
class Resample:
    """Resample to `spacing_mm` per axis over about the same field of view (linear image, nearest masks).

    The grid keeps the axis directions of the current affine (a per-axis zoom in voxel space).
    """

    spacing_mm: float

    def __call__(self, sample: Sample) -> Sample:
        dims = sample.image.ndim
        factors = np.array([self.spacing_mm / s for s in voxel_spacing(sample.affine, dims)])
        if np.allclose(factors, 1.0):
            return sample
        # Same first edge; the far edge moves by under one new voxel (the spacing is exact).
        shape = tuple(max(int(round(n / f)), 1) for n, f in zip(sample.image.shape, factors))
        offset = (factors - 1.0) / 2.0

        def zoom(array: np.ndarray, order: int) -> np.ndarray:
            return ndimage.affine_transform(
                array,
                factors,
                offset=offset,
                output_shape=shape,
                order=order,
                mode="constant",
                cval=0.0,
                prefilter=False,
            )

        image = zoom(sample.image.astype(np.float32), 1)
        masks = {key: zoom(mask.astype(np.uint8), 0).astype(bool) for key, mask in sample.masks.items()}
        return sample.with_arrays(image, masks, scaled_affine(sample.affine, factors))


@dataclass(frozen=True)
class ZScore:
    """image = (image - mean) / std over masks[`mask`]; 0 outside it."""

    mask: str = "foreground"

    def __call__(self, sample: Sample) -> Sample:
        inside = sample.masks[self.mask]
        values = sample.image[inside]
        mean = float(values.mean(dtype=np.float64)) if values.size else 0.0
        std = float(values.std(dtype=np.float64)) if values.size else 0.0
        if std <= 0:
            raise ValueError(f"{sample.name}: constant intensity over the foreground, cannot z-score")
        image = (sample.image - np.float32(mean)) * np.float32(1.0 / std)
        image[~inside] = 0.0
        return sample.with_arrays(image, sample.masks, sample.affine)


@dataclass(frozen=True)
class CropOrPadAroundForeground:
    """Crop/pad every array to `shape`, centred on the foreground's bounding box (pad: 0 / False)."""

    shape: tuple[int, ...]

    def __call__(self, sample: Sample) -> Sample:
        lower, upper = foreground_box(sample.masks["foreground"], sample.name)
        centre = (lower + upper) / 2.0
        start = np.floor(centre - np.array(self.shape) / 2.0 + 0.5).astype(int)
        image = window_of(sample.image, start, self.shape, 0.0)
        masks = {key: window_of(mask, start, self.shape, False) for key, mask in sample.masks.items()}
        return sample.with_arrays(image, masks, shifted_affine(sample.affine, start))


@dataclass(frozen=True)
class Downsample:
    """Integer downsampling by `factor` per axis: block mean for the image, majority for masks."""

    factor: int

    def __call__(self, sample: Sample) -> Sample:
        if self.factor == 1:
            return sample
        f = self.factor
        if any(n % f for n in sample.image.shape):
            raise ValueError(
                f"{sample.name}: shape {sample.image.shape} is not divisible by the downsampling factor {f}"
            )

        def block_sum(array: np.ndarray, dtype) -> np.ndarray:
            out = array.astype(dtype)
            for axis in range(array.ndim):  # one axis at a time: each pass shrinks the array
                out = out.reshape(out.shape[:axis] + (out.shape[axis] // f, f) + out.shape[axis + 1 :]).sum(
                    axis=axis + 1
                )
            return out

        voxels = f**sample.image.ndim
        masks = {key: 2 * block_sum(mask, np.uint16) >= voxels for key, mask in sample.masks.items()}
        image = block_sum(sample.image, np.float32) / np.float32(voxels)
        return sample.with_arrays(image, masks, scaled_affine(sample.affine, [f] * sample.image.ndim))


@dataclass(frozen=True)
class ZeroOutsideForeground:
    def __call__(self, sample: Sample) -> Sample:
        return sample.with_arrays(np.where(sample.masks["foreground"], sample.image, 0.0), sample.masks, sample.affine)


@dataclass(frozen=True)
class Window:
    """Map intensities to [0, 1]: the DICOM VOI module (meta["voi"], applied by pydicom's
    `apply_voi_lut`: window centre/width with its VOI LUT function, or a VOI LUT) scaled by its
    output range when the file has one, else min..max."""

    def __call__(self, sample: Sample) -> Sample:
        image = sample.image.astype(np.float64)
        voi = sample.meta.get("voi")
        if voi is not None:
            from pydicom.pixels import apply_voi_lut

            try:
                with np.errstate(over="ignore"):  # a sigmoid VOI overflows exp() at the extremes: it saturates
                    image = np.asarray(apply_voi_lut(image, voi), dtype=np.float64)
                    # The VOI output range: what it gives the lowest and highest representable inputs.
                    low, high = (float(v) for v in apply_voi_lut(np.array([-1e30, 1e30]), voi))
            except (ValueError, KeyError, AttributeError, IndexError) as error:
                raise ValueError(f"{sample.name}: DICOM VOI LUT/window cannot be applied ({error})") from error
        else:
            low, high = float(image.min()), float(image.max())
        if high <= low:
            raise ValueError(f"{sample.name}: constant image, nothing to window")
        image = np.clip((image - low) / (high - low), 0.0, 1.0)
        return sample.with_arrays(image, sample.masks, sample.affine)


@dataclass(frozen=True)
class InvertMonochrome1:
    """image = 1 - image for DICOM MONOCHROME1 (low values bright), so bone is bright everywhere."""

    def __call__(self, sample: Sample) -> Sample:
        if not sample.meta.get("monochrome1"):
            return sample
        return sample.with_arrays(1.0 - sample.image, sample.masks, sample.affine)


@dataclass(frozen=True)
class Resize2D:
    """Resize a 2D sample to `size` x `size` (bilinear, antialiased when shrinking; masks nearest)."""

    size: int

    def __call__(self, sample: Sample) -> Sample:
        from PIL import Image

        shape = (self.size, self.size)
        if sample.image.shape == shape:
            return sample
        image = np.asarray(
            Image.fromarray(sample.image.astype(np.float32), mode="F").resize(shape[::-1], Image.BILINEAR)
        )
        masks = {
            key: np.asarray(Image.fromarray(mask.astype(np.uint8)).resize(shape[::-1], Image.NEAREST)).astype(bool)
            for key, mask in sample.masks.items()
        }
        factors = np.array(sample.image.shape) / np.array(shape)
        return sample.with_arrays(image, masks, scaled_affine(sample.affine, factors))


@dataclass(frozen=True)
class Equalise:
    """Histogram equalisation of an image in [0, 1] over `bins` bins (the cumulative histogram,
    interpolated between bin centres), stretched to span exactly [0, 1]."""

    bins: int = 256

    def __call__(self, sample: Sample) -> Sample:
        counts, edges = np.histogram(sample.image, bins=self.bins, range=(0.0, 1.0))
        cdf = np.cumsum(counts).astype(np.float64)
        image = np.interp(sample.image, (edges[:-1] + edges[1:]) / 2.0, cdf)
        low, high = float(image.min()), float(image.max())
        if high <= low:
            raise ValueError(f"{sample.name}: constant image, nothing to equalise")
        return sample.with_arrays((image - low) / (high - low), sample.masks, sample.affine)


@dataclass(frozen=True)
class ScaleSymmetric:
    """[0, 1] -> [-1, 1]."""

    def __call__(self, sample: Sample) -> Sample:
        return sample.with_arrays(np.clip(sample.image * 2.0 - 1.0, -1.0, 1.0), sample.masks, sample.affine)


@dataclass(frozen=True)
class WholeImageForeground:
    def __call__(self, sample: Sample) -> Sample:
        return sample.with_arrays(
            sample.image, {**sample.masks, "foreground": np.ones(sample.image.shape, bool)}, sample.affine
        )


# ----------------------------------------------------------------------------- recipes


def initial_sample(
    image: Loaded,
    brain_mask: Loaded | None,
    lesion: Loaded | None,
    dims: int,
    lesion_labels: tuple[int, ...] | None = None,
) -> Sample:
    """The recipe input: masks must share the image's grid (shape and affine), non-zero = inside;
    with `lesion_labels`, the lesion is the voxels whose label is one of them (a region of a
    multi-class segmentation), the other non-zero labels count as lesion-free."""
    name = image.provenance.get("uri", "<image>")
    if image.array.ndim != dims:
        raise ValueError(f"{name}: this recipe needs a {dims}D image, got shape {image.array.shape}")
    masks = {}
    for key, loaded in (("brain", brain_mask), ("lesion", lesion)):
        if loaded is None:
            continue
        where = loaded.provenance.get("uri", key)
        if loaded.array.shape != image.array.shape:
            raise ValueError(
                f"{where}: {key} mask shape {loaded.array.shape} differs from its image's {image.array.shape} ({name})"
            )
        if dims == 3 and not np.allclose(loaded.affine, image.affine, atol=1e-3):
            raise ValueError(f"{where}: {key} mask is not on its image's grid (affines differ from {name})")
        if key == "lesion" and lesion_labels is not None:
            masks[key] = np.isin(loaded.array, lesion_labels)
        else:
            masks[key] = loaded.array != 0
    return Sample(image.array.astype(np.float32), np.asarray(image.affine, float), masks, dict(image.provenance), name)


def finish(case_id: str, sample: Sample, source: Loaded, has_lesion_file: bool) -> PreparedCase:
    """The PreparedCase of a finished sample: image [1, *S], and the source grid the reader recorded
    (`source_shape`, `source_affine` in its provenance: the same grid, so that a map written there
    lines up with the file voxel for voxel)."""
    source_affine = np.asarray(source.provenance.get("source_affine", source.affine), float)
    source_shape = tuple(int(n) for n in source.provenance.get("source_shape", source.array.shape))
    if len(source_shape) != sample.image.ndim:
        raise ValueError(
            f"case {case_id}: source grid {source_shape} has not the {sample.image.ndim} axes of the sample"
        )
    lesion = sample.masks["lesion"].astype(np.uint8) if has_lesion_file else None
    return PreparedCase(
        case_id,
        sample.image[None].astype(np.float32),
        sample.masks["foreground"].astype(bool),
        lesion,
        sample.affine,
        source_affine,
        source_shape,
    )


@dataclass(frozen=True)
class BrainRecipe:
    """3D brain MRI (see the module docstring). `skull_stripped`: no brain mask needed (one given
    is still applied). `lesion_labels`: the label values of a multi-class lesion segmentation that
    make the lesion (None: every non-zero voxel), e.g. BraTS's tumour core (1, 3, 4: necrosis,
    non-enhancing and enhancing tumour, without the oedema 2, which T1c barely shows)."""

    skull_stripped: bool = False
    spacing_mm: float = 1.0
    shape: tuple[int, int, int] = (80, 112, 80)
    downsample: int = 2
    lesion_labels: tuple[int, ...] | None = None
    name: str = "brain"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        if self.lesion_labels is not None:
            labels = tuple(sorted({int(label) for label in self.lesion_labels}))
            if not labels or labels[0] < 1:
                raise ValueError(f"brain recipe: lesion labels must be positive integers, got {self.lesion_labels}")
            object.__setattr__(self, "lesion_labels", labels)
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"brain recipe: shape must be 3 positive sizes, got {self.shape}")
        if self.spacing_mm <= 0 or int(self.downsample) != self.downsample or self.downsample < 1:
            raise ValueError(
                f"brain recipe: spacing must be > 0 mm and downsample a positive integer, "
                f"got {self.spacing_mm} and {self.downsample}"
            )

    def steps(self, has_brain_mask: bool) -> list[Step]:
        steps: list[Step] = [ApplyMask("brain")] if has_brain_mask else []
        # The first z-score puts the background (0 after it) at the brain's mean before the
        # block means of the downsampling mix the two at the rim; the last one makes the final grid's
        # foreground exactly mean 0, std 1.
        return steps + [
            HoleFilledForeground("brain"),
            CropToForeground(margin=2),
            Resample(self.spacing_mm),
            ZScore("foreground"),
            CropOrPadAroundForeground(tuple(n * self.downsample for n in self.shape)),
            Downsample(self.downsample),
            ZeroOutsideForeground(),
            ZScore("foreground"),
        ]

    def __call__(
        self, case_id: str, image: Loaded, brain_mask: Loaded | None = None, lesion: Loaded | None = None
    ) -> PreparedCase:
        if brain_mask is None and not self.skull_stripped:
            raise ValueError(
                f"case {case_id}: no brain mask found for a skull-on image; give one or pass --skull-stripped"
            )
        sample = initial_sample(image, brain_mask, lesion, dims=3, lesion_labels=self.lesion_labels)
        sample = compose(self.steps(brain_mask is not None))(sample)
        return finish(case_id, sample, image, lesion is not None)


@dataclass(frozen=True)
class ChestRecipe:
    """2D chest X-ray (see the module docstring); `size` is the output side in pixels."""

    size: int = 256
    name: str = "cxr"

    def __post_init__(self) -> None:
        if int(self.size) != self.size or self.size < 2:
            raise ValueError(f"cxr recipe: size must be an integer >= 2, got {self.size}")

    def steps(self) -> list[Step]:
        return [
            Window(),
            InvertMonochrome1(),
            Resize2D(self.size),
            Equalise(),
            ScaleSymmetric(),
            WholeImageForeground(),
        ]

    def __call__(
        self, case_id: str, image: Loaded, brain_mask: Loaded | None = None, lesion: Loaded | None = None
    ) -> PreparedCase:
        sample = compose(self.steps())(initial_sample(image, None, lesion, dims=2))
        return finish(case_id, sample, image, lesion is not None)


RECIPES = {"brain": BrainRecipe, "cxr": ChestRecipe}
Recipe = BrainRecipe | ChestRecipe


def make_recipe(name: str, **options) -> Recipe:
    """A recipe by name with its options (None values keep the defaults)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: choose from {', '.join(RECIPES)}")
    cls = RECIPES[name]
    known = set(cls.__dataclass_fields__) - {"name"}
    unknown = {key for key, value in options.items() if value is not None} - known
    if unknown:
        raise ValueError(
            f"recipe {name!r} has no option(s) {', '.join(sorted(unknown))} (it has {', '.join(sorted(known))})"
        )
    return cls(**{key: value for key, value in options.items() if value is not None})


def recipe_options(recipe: Recipe) -> str:
    """The recipe's options as canonical JSON (stored in the manifest; a change re-prepares). An
    option left unset (None) is not written, so adding one keeps the older sets' options."""
    options = {key: value for key, value in asdict(recipe).items() if key != "name" and value is not None}
    return json.dumps(options, sort_keys=True)
