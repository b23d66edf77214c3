"""Tasks 0 (`intra_blend`) and 1 (`inter_blend`): Poisson blending of a transformed source patch.

For one anomaly (shape mask and box corner already placed by the framework):
`draw_blend` picks the source and the patch transform from the generator; `apply_blend` resamples
the source onto the box (only where the blend reads it), solves the mixed-gradient Poisson
problem over the box, clips to the target's per-channel range and reports the voxels of the box
whose channel-mean absolute change exceeds 1e-3 (they join the anomaly mask).

Gradient scale (`match_gradient_scale`, inter_blend's default): the mixed-gradient guidance keeps a
source gradient only where it is larger than the target's, so a source on another scale than the
target (X-rays in [-1, 1] against a z-scored brain, a smoother or sharper image, a small image
upsampled into a large patch) leaves the target almost unchanged. The reference puts its external
images on the targets' scale by normalising both alike (docs/method.md section 2); lightwork accepts any
external set, so it multiplies the resampled source patch by the target's mean gradient magnitude
over the patch's own (`gradient_scale`: the target's over its foreground, the patch's over the
voxels the blend reads). The blend reads only the source's gradients, so this gain is the whole of
the normalisation: a source's offset never matters.

Sources: a sequence of [C, *S] float32 arrays or (array, foreground [*S] bool | None) pairs, or a
callable `rng -> array` / `rng -> (array, foreground)`; a source's channels must match the
target's, or be 1 (repeated), or the target's be 1 (the source's are averaged). Without sources, `intra_blend` reads the
patch from the input image itself (its own foreground) at an independently drawn place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lightwork.anomalies.base import channel_range
from lightwork.anomalies.patch import SourcePatch, draw_source_patch, extract_source_patch
from lightwork.anomalies.poisson import blend_box
from lightwork.anomalies.shapes import AnomalyShape

CHANGE_THRESHOLD = 1e-3  # channel-mean absolute change that makes a box voxel anomalous
SOURCE_TRIES = 8  # sources (and transforms) tried before a blend gives up

SourceItem = np.ndarray | tuple[np.ndarray, np.ndarray | None]
Sources = Sequence[SourceItem] | Callable[[np.random.Generator], SourceItem]


@dataclass(frozen=True)
class Source:
    """A source image ready to read patches from."""

    image: np.ndarray  # [C, *S] float32
    foreground: np.ndarray | None  # [*S] bool
    low: np.ndarray  # [C] float32 per-channel minimum
    high: np.ndarray  # [C] float32 per-channel maximum


def make_source(item: SourceItem, where: str) -> Source:
    """Check and wrap one source; `where` names it in errors ("sources[3]")."""
    image, foreground = item if isinstance(item, tuple) else (item, None)
    if not isinstance(image, np.ndarray) or image.dtype != np.float32 or image.ndim < 2:
        raise ValueError(f"{where}: a source must be a [C, *S] float32 numpy array")
    if not np.isfinite(image).all():
        raise ValueError(f"{where}: source has NaN or Inf")
    if foreground is not None:
        foreground = np.asarray(foreground)
        if foreground.dtype != np.bool_ or foreground.shape != image.shape[1:]:
            raise ValueError(
                f"{where}: source foreground must be bool of shape {image.shape[1:]}, got "
                f"{foreground.dtype} {foreground.shape}"
            )
        if not foreground.any():
            raise ValueError(f"{where}: source foreground is empty")
    low, high = channel_range(image)
    return Source(image, foreground, low, high)


def gradient_scale(image: np.ndarray, foreground: np.ndarray | None, stride: int = 1) -> float:
    """The mean magnitude of an image's forward differences: channel-mean |x[i+1] - x[i]| along each
    spatial axis over the pairs whose both voxels are foreground (all pairs without a foreground),
    averaged over the axes; in the image's intensity units per voxel. `stride` > 1 estimates it
    from the pairs starting at every stride-th voxel per axis (cheaper on large volumes).

    image: [C, *S] float32; foreground: [*S] bool or None. Returns 0.0 for a flat image.
    """
    spatial = image.ndim - 1
    means = []
    for axis in range(spatial):
        first = tuple(slice(0, -1, stride) if d == axis else slice(None, None, stride) for d in range(spatial))
        second = tuple(slice(1, None, stride) if d == axis else slice(None, None, stride) for d in range(spatial))
        difference = np.abs(image[(slice(None), *second)] - image[(slice(None), *first)]).mean(axis=0)
        if foreground is not None:
            pairs = foreground[first] & foreground[second]
            difference = difference[pairs]
        if difference.size:
            means.append(float(difference.mean(dtype=np.float64)))
    return float(np.mean(means)) if means else 0.0


TARGET_SCALE_STRIDE = 2  # a target's gradient scale is estimated on every second voxel per axis


class SourcePool:
    """Draws source images: from a fixed sequence (checked and ranged once), a callable, or (with
    neither) the task's own input."""

    def __init__(self, sources: Sources | None):
        self._callable: Callable[[np.random.Generator], SourceItem] | None = None
        self._fixed: list[Source] = []
        if sources is None:
            return
        if callable(sources):
            self._callable = sources
            return
        if isinstance(sources, np.ndarray) or len(sources) == 0:
            raise ValueError("sources must be a non-empty sequence of [C, *S] arrays (or pairs) or a callable")
        self._fixed = [make_source(item, f"sources[{index}]") for index, item in enumerate(sources)]

    @property
    def empty(self) -> bool:
        return self._callable is None and not self._fixed

    def draw(self, rng: np.random.Generator, own: Source) -> Source:
        """One source; `own` (the task's input) when the pool is empty."""
        if self._callable is not None:
            return make_source(self._callable(rng), "sources(rng)")
        if self._fixed:
            return self._fixed[int(rng.integers(len(self._fixed)))]
        return own


@dataclass(frozen=True)
class BlendParams:
    """One blended anomaly's random choices."""

    source: Source
    patch: SourcePatch
    target_low: np.ndarray  # [C] the target's per-channel range, which the blend is clipped to
    target_high: np.ndarray
    target_scale: float | None = None  # the target's gradient scale, which the source patch is given


def draw_blend(
    rng: np.random.Generator,
    pool: SourcePool,
    target: Source,
    box_shape: Sequence[int],
    target_scale: float | None = None,
) -> BlendParams:
    """Draw a source and a patch transform for an anomaly box of spatial shape `box_shape`.

    `target` is the image blended into (with its foreground and range); it is also the source
    when the pool is empty. `target_scale` (the target's `gradient_scale`, or None) is recorded:
    `apply_blend` gives the source patch that gradient scale.

    A source whose foreground cannot centre the patch, or whose channels or rank differ from the
    target's, is replaced by another draw; after SOURCE_TRIES the last problem is raised.

    Raises:
        ValueError: no usable source within the tries, naming the last problem.
    """
    problem = ""
    channels = len(target.image)
    for _ in range(SOURCE_TRIES):
        source = pool.draw(rng, target)
        source_channels = len(source.image)
        if source.image.ndim - 1 != len(box_shape) or (source_channels not in (1, channels) and channels != 1):
            problem = (
                f"source of shape {source.image.shape} does not fit a target with {channels} channels "
                f"and {len(box_shape)} spatial axes (channels must match, or one side has one)"
            )
            continue
        try:
            patch = draw_source_patch(rng, box_shape, source.image.shape[1:], source.foreground)
        except ValueError as error:
            problem = str(error)
            continue
        return BlendParams(source, patch, target.low, target.high, target_scale)
    raise ValueError(f"Poisson blending: no usable source patch in {SOURCE_TRIES} tries: {problem}")


def _read_region(mask: np.ndarray) -> np.ndarray:
    """The voxels whose source values the blend reads: the mask and one voxel beyond it towards +1
    on every axis (the far ends of the mask's forward differences)."""
    region = mask.copy()
    for axis in range(mask.ndim):
        source = tuple(slice(0, -1) if d == axis else slice(None) for d in range(mask.ndim))
        shifted = tuple(slice(1, None) if d == axis else slice(None) for d in range(mask.ndim))
        region[shifted] |= mask[source]
    return region


def apply_blend(
    image: np.ndarray,
    mask: np.ndarray,
    corner: Sequence[int],
    params: BlendParams,
    mix_gradients: bool = True,
) -> np.ndarray:
    """Blend the drawn source patch into one anomaly box of `image`, in place.

    Args:
        image: [C, *S] float32 target, updated in place: only box-interior voxels in the mask or
            changed by more than the threshold take the blended values.
        mask: [*P] bool anomaly shape within its box.
        corner: the box's first voxel in the image.
        params: from `draw_blend`.
        mix_gradients: mixed (True) or source-only (False) guidance inside the mask.

    Returns:
        changed [*P] bool: the box voxels whose channel-mean absolute change exceeds 1e-3.
    """
    box = (slice(None), *(slice(c, c + n) for c, n in zip(corner, mask.shape)))
    target_box = image[box]
    source = params.source
    read = _read_region(mask)
    patch = extract_source_patch(source.image, params.patch, mask.shape, (source.low, source.high), where=read)
    if params.target_scale is not None:  # the resampled patch's own scale: resampling smooths or sharpens
        patch_scale = gradient_scale(patch, read)
        if patch_scale > 0:
            patch *= np.float32(params.target_scale / patch_scale)
    if len(patch) != len(image):  # a grey source into a colour target repeats, colour into grey averages
        patch = np.broadcast_to(patch, image.shape[:1] + patch.shape[1:]) if len(patch) == 1 else patch.mean(0)[None]
    # The solve reads source values only where `read` holds (both ends of every source difference
    # it may take), so the zeros elsewhere never enter it.
    blended_box = blend_box(target_box, patch, mask, mix_gradients)
    spatial = mask.ndim
    low = params.target_low.reshape(-1, *([1] * spatial))
    high = params.target_high.reshape(-1, *([1] * spatial))
    np.clip(blended_box, low, high, out=blended_box)
    change = np.abs(blended_box - target_box)
    changed = (change[0] if len(change) == 1 else change.mean(axis=0)) > CHANGE_THRESHOLD
    # The solve spreads sub-threshold ripples over the whole box; outside the anomaly they would be
    # changes without a label, so those voxels keep the target's values.
    np.copyto(target_box, blended_box, where=changed | mask)
    return changed


class PoissonBlendTask:
    """The per-anomaly halves of tasks 0 (`intra_blend`) and 1 (`inter_blend`); the framework
    draws the shape and places it, repeats, and labels.

    Args:
        task_id: 0 (intra: patches from `sources`, or from the input itself without) or 1 (inter:
            `sources` required, any external dataset).
        sources: see the module docstring.
        mix_gradients: mixed-gradient guidance (the method) or source gradients only.
        match_gradient_scale: give each source patch the target's gradient scale (see the module
            docstring).
    """

    names = {0: "intra_blend", 1: "inter_blend"}

    def __init__(
        self,
        task_id: int,
        sources: Sources | None = None,
        mix_gradients: bool = True,
        match_gradient_scale: bool = False,
    ):
        if task_id not in self.names:
            raise ValueError(f"Poisson blending tasks are 0 (intra_blend) and 1 (inter_blend), got {task_id}")
        if task_id == 1 and sources is None:
            raise ValueError(
                "inter_blend needs sources=...: an external dataset as a sequence of [C, *S] float32 arrays "
                "(or (array, foreground) pairs) or a callable rng -> array"
            )
        self.task_id = task_id
        self.name = self.names[task_id]
        self.sources = SourcePool(sources)
        self.mix_gradients = mix_gradients
        self.match_gradient_scale = match_gradient_scale

    def draw(
        self,
        rng: np.random.Generator,
        image: np.ndarray,
        foreground: np.ndarray | None,
        shape: AnomalyShape,
        corner: Sequence[int],
        image_range: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> BlendParams:
        """Draw one anomaly's source and patch transform for the box of `shape` (the corner does
        not matter: the source is read wherever the patch transform says); the result is clipped
        to `image_range` (default: the range of `image`)."""
        low, high = channel_range(image) if image_range is None else image_range
        target_scale = gradient_scale(image, foreground, TARGET_SCALE_STRIDE) if self.match_gradient_scale else None
        return draw_blend(rng, self.sources, Source(image, foreground, low, high), shape.mask.shape, target_scale)

    def apply(self, image: np.ndarray, shape: AnomalyShape, corner: Sequence[int], params: BlendParams) -> np.ndarray:
        """Blend into `image` in place; returns the anomaly's [*P] bool mask in its box (the shape
        and the voxels changed by more than the threshold)."""
        return shape.mask | apply_blend(image, shape.mask, corner, params, self.mix_gradients)
