"""The ensemble of one split's fold models, with the recipe and threshold of the run they came from.

Source: a training run folder (`config.yaml` + `folds.json`, see `lightwork.training.runs`);
`lightwork.inference.package` reads packages, and its `load_ensemble` takes either. The recipe and its options
are the run's (`config.data.recipe` / `recipe_options`, recorded when training started); the
threshold is the validation threshold (`validation_threshold`). The run's method
(`config.method`, `lightwork.methods`) turns a network and an image into its map, with draws from
the run seed (`config.seed`). A run trained on slices (`data.slice_axis`) gives 2D models that
`model_scores` runs over every slice of a volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lightwork.config import MethodSection, load_config
from lightwork.data import storage
from lightwork.data.recipes import Recipe, make_recipe
from lightwork.data.slices import reassemble, volume_slices
from lightwork.errors import UserError
from lightwork.methods import Method, get_method
from lightwork.models import load_model
from lightwork.training import runs

PACKAGE_SUFFIX = ".lwpkg"  # the file name ending of packages (lightwork.inference.package)
SLICE_BATCH = 16  # slices per forward pass when a 2D model predicts a volume


def model_scores(
    network: torch.nn.Module,
    image: np.ndarray,
    slice_axis: int | None = None,
    slice_batch: int = SLICE_BATCH,
    method: Method | None = None,
    seed: int = 0,
) -> np.ndarray:
    """One model's map of one image (`method.anomaly_map`, the synthetic-task method's raw scores
    by default): float32 [C, *S] -> float32 [*S], on the network's device; the method draws from a
    generator seeded with `seed` (the run seed), afresh for each image.

    With `slice_axis` (a 2D model of a run trained on slices, `data.slice_axis`) the image is a 3D
    volume: every slice along that axis is predicted, `slice_batch` slices per call, and
    the slices' maps are put back in place (`lightwork.data.slices.reassemble`), so the map covers
    the whole volume, slices that were never training samples included.
    """
    method = method or get_method(MethodSection())
    generator = torch.Generator().manual_seed(seed)
    device = next(network.parameters()).device
    image = np.ascontiguousarray(image, dtype=np.float32)
    if slice_axis is None:
        batches = [image[None]]
    else:
        stack = volume_slices(image, slice_axis)
        batches = [stack[start : start + slice_batch] for start in range(0, len(stack), slice_batch)]
    maps = []
    with torch.inference_mode():
        for batch in batches:
            scores = method.anomaly_map(network, torch.from_numpy(np.ascontiguousarray(batch)).to(device), generator)
            maps.append(scores[:, 0].float().cpu().numpy())
    return maps[0][0] if slice_axis is None else reassemble(np.concatenate(maps), slice_axis)


def validation_threshold(thresholds: list[float | None]) -> float | None:
    """The score threshold of an ensemble: the mean of its fold models' thresholds, chosen on their
    synthetic validation samples (`train.threshold_fpr`; no test data involved); None unless every
    fold has one."""
    if not thresholds or any(value is None for value in thresholds):
        return None
    return float(sum(thresholds) / len(thresholds))


@dataclass
class Ensemble:
    """One split's fold models (`names[i]` is `networks[i]`, each in eval mode), the recipe that
    prepares a scan for them, the score threshold of the binary mask and where they came from;
    `slice_axis`: the axis of the volumes a run trained on slices sliced (None: whole images);
    `method` and `seed`: the run's method section and seed, which make a network's map."""

    split: str
    names: list[str]
    networks: list[torch.nn.Module]
    recipe_name: str
    recipe_options: dict
    threshold: float
    source: str
    slice_axis: int | None = None
    method: MethodSection = field(default_factory=MethodSection)
    seed: int = 0

    @property
    def spatial_dims(self) -> int:
        """The models' spatial dims."""
        return int(self.networks[0].config.spatial_dims)

    @property
    def input_dims(self) -> int:
        """The spatial dims of the images the ensemble predicts (3 for 2D models of slices)."""
        return 3 if self.slice_axis is not None else self.spatial_dims

    @property
    def recipe(self) -> Recipe:
        return make_recipe(self.recipe_name, **self.recipe_options)

    @property
    def device(self) -> torch.device:
        return next(self.networks[0].parameters()).device

    def to(self, device: torch.device | str) -> "Ensemble":
        self.networks = [network.to(device) for network in self.networks]
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        """The mean map of the fold models: image float32 [C, *S] -> float32 [*S]
        (`model_scores`: slice by slice for models of slices)."""
        expected = self.networks[0].config.in_channels
        if image.shape[0] != expected:
            raise UserError(f"the models take {expected} channel(s), the prepared image has {image.shape[0]}")
        method = get_method(self.method)
        total = sum(
            model_scores(network, image, self.slice_axis, method=method, seed=self.seed) for network in self.networks
        )
        return (total / len(self.networks)).astype(np.float32)


def run_split(models: str, records: list[runs.FoldRecord], split: str | None) -> tuple[str, list[runs.FoldRecord]]:
    """(split, its finished fold records) of a run; `split` None picks the run's only split."""
    splits = sorted({record.split for record in records})
    if split is None:
        if len(splits) != 1:
            raise UserError(f"{models}: the run holds splits {', '.join(splits)}; choose one with --split")
        split = splits[0]
    done = [
        record for record in records if record.split == split and record.status == "done" and record.best_checkpoint
    ]
    if not done:
        raise UserError(f"{models}: no finished fold of split {split} (the run has {', '.join(splits) or 'none'})")
    return split, done


def run_ensemble(models: str, split: str | None = None, threshold: float | None = None) -> Ensemble:
    """The ensemble of `split` in run folder/URI `models` (`split` may be omitted when the run
    holds one; `threshold` overrides the recorded one). Raises ValueError naming the problem."""
    records = runs.read_folds(models)
    config_uri = storage.join(models, runs.CONFIG_FILE)
    if not records or not storage.exists(config_uri):
        raise UserError(
            f"{models}: not a lightwork run (no {runs.FOLDS_FILE} and {runs.CONFIG_FILE}) "
            f"nor a {PACKAGE_SUFFIX} package"
        )
    config = load_config(config_uri)
    if not config.data.recipe:
        raise UserError(
            f"{config_uri}: the run does not record its data recipe (data.recipe); "
            "it was trained before runs recorded one"
        )
    split, done = run_split(models, records, split)
    threshold = validation_threshold([record.val_dice_threshold for record in done]) if threshold is None else threshold
    if threshold is None:
        raise UserError(
            f"{models}: the folds of split {split} record no validation threshold (val_dice_threshold); "
            "give one with --threshold"
        )
    return Ensemble(
        split,
        [record.name for record in done],
        [load_model(record.best_checkpoint) for record in done],
        config.data.recipe,
        dict(config.data.recipe_options),
        float(threshold),
        models,
        config.data.slice_axis,
        config.method,
        config.seed,
    )
