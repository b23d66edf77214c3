"""One typed, validated description of a training run (`lightwork.config`).

A run is described by `RunConfig` (the run `seed`, sections `method` (its `name`, one of
`METHODS`), `model` = `UNetConfig`: the network's `name`, one of `NETWORKS`, and its arguments;
`train`, `data`, `resources`), built from a preset
(`brain`, `brain2d`, `cxr`, `demo`, `tiny`), optionally updated from a YAML file and from CLI
overrides `section.field=value` (values parsed as YAML: `train.lr=1e-3`, `model.features=[8,16,32]`),
and saved whole as `config.yaml` next to the run's results, so that
`lightwork train --config RUN/config.yaml` reproduces the run.

Every value is checked when a RunConfig is built (type, range, choices): a bad one raises
`lightwork.errors.UserError` with one line naming the key, the value and what is allowed. Unknown
keys are errors, never ignored. This module is the schema and its validation only: checking a
config against its prepared data is `lightwork.training.resolve`, and a run's saved record
`lightwork.training.runs`.
"""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import difflib
import typing
from dataclasses import MISSING, asdict, dataclass, field
from typing import Any

import yaml

from lightwork.anomalies.parameters import MIN_PUSH, max_push_for
from lightwork.errors import UserError


def _spec(default: Any = MISSING, *, factory: Any = MISSING, **rule: Any) -> Any:
    """A dataclass field with a validation rule: ge / gt / le (bounds), choices, nonempty."""
    return field(default=default, default_factory=factory, metadata=rule)


# The networks a model can be, by `model.name`: "module:Class" of a torch module built as
# `Class(model_section)` by `lightwork.models.build_model`. A new network is its module and one line
# here; paths, not classes, so that reading a config needs no torch.
NETWORKS: dict[str, str] = {
    "unet": "lightwork.models.unet:UNet",
    "autoencoder": "lightwork.models.autoencoder:Autoencoder",
    "denoiser": "lightwork.models.denoiser:Denoiser",
    "conditioned_denoiser": "lightwork.models.denoiser:ConditionedDenoiser",
    "hybrid": "lightwork.models.hybrid:Hybrid",
    "hybrid_ddpm": "lightwork.models.hybrid:DiffusionHybrid",
}
# The methods a run can train, by `method.name`: "module:Class" of a `lightwork.methods.Method`
# (what a fold trains on, its loss, its anomaly map) built as `Class(method_section)` by
# `lightwork.methods.get_method`. METHOD_NETWORKS: the networks (`model.name`) of a method that
# trains only its own (the first is the one a run of it gets when no source names a network; methods
# may share one, as ddpm and pddpm share the denoiser); a method without an entry trains any network
# that is no other method's. A new method is its module and a line here, two with its own network.
METHODS: dict[str, str] = {
    "synthetic": "lightwork.methods.synthetic:SyntheticTasks",
    "autoencoder": "lightwork.methods.autoencoder:Reconstruction",
    "ddpm": "lightwork.methods.diffusion:DDPM",
    "pddpm": "lightwork.methods.diffusion:PatchedDDPM",
    "cddpm": "lightwork.methods.diffusion:ConditionedDDPM",
    "hybrid": "lightwork.methods.hybrid:Hybrid",
    "hybrid_ddpm": "lightwork.methods.hybrid:DiffusionHybrid",
}
METHOD_NETWORKS: dict[str, tuple[str, ...]] = {
    "autoencoder": ("autoencoder",),
    "ddpm": ("denoiser",),
    "pddpm": ("denoiser",),
    "cddpm": ("conditioned_denoiser",),
    "hybrid": ("hybrid",),
    "hybrid_ddpm": ("hybrid_ddpm",),
}
# The model spatial dims of a method whose networks take only some (the diffusion methods' are 2D:
# 2D images, or slices of volumes with `data.slice_axis`).
METHOD_DIMS: dict[str, tuple[int, ...]] = {"ddpm": (2,), "pddpm": (2,), "cddpm": (2,), "hybrid_ddpm": (2,)}


@dataclass
class UNetConfig:
    """Architecture of one model: the network `name` (one of NETWORKS; the U-Net by default) and
    its keyword arguments, which checkpoints and packages save with it (here so that reading a
    config needs no torch).

    spatial_dims: 2 or 3. in_channels: image channels (the positional encoding adds D + 64).
    features: channels per resolution level, encoder level 0 first; the last entry is the
    bottleneck; len(features) - 1 = number of downsamplings (at least 2 levels).
    """

    name: str = _spec("unet", choices=NETWORKS)
    spatial_dims: int = _spec(3, choices=(2, 3))
    in_channels: int = _spec(1, ge=1)
    out_channels: int = _spec(1, ge=1)
    features: list[int] = _spec(factory=lambda: [32, 64, 128, 256, 320], ge=1, min_len=2)
    positional_encoding: bool = True

    @staticmethod
    def from_depth(spatial_dims: int, depth: int, base: int, cap: int, in_channels: int = 1) -> "UNetConfig":
        """Features base * 2^level capped at `cap`, for `depth` downsamplings."""
        features = [min(base * 2**level, cap) for level in range(depth + 1)]
        return UNetConfig(spatial_dims=spatial_dims, in_channels=in_channels, features=features)

    def to_dict(self) -> dict:
        return asdict(self)


MODEL_PRESETS: dict[str, UNetConfig] = {
    # 3D brain: 4 downsamplings, 32-64-128-256 + 320 bottleneck.
    "brain": UNetConfig(spatial_dims=3, features=[32, 64, 128, 256, 320]),
    # 2D CXR: 6 downsamplings, capped at 512.
    "cxr": UNetConfig.from_depth(2, depth=6, base=32, cap=512),
    # Small CPU models for demos and tests.
    # 2D brain slices (80x112 axial slices of the 80x112x80 volumes): the 3D model's widths, 4 downsamplings.
    "brain2d": UNetConfig(spatial_dims=2, features=[32, 64, 128, 256, 320]),
    # The demo: 2D, on the 32x40 axial slices of the demo cohort's 32x40x32 volumes.
    "demo": UNetConfig.from_depth(2, depth=3, base=8, cap=32),
    "tiny": UNetConfig.from_depth(3, depth=2, base=4, cap=8),
}


@dataclass
class MethodSection:
    """The method a run trains (docs/method.md section 8): `name`, one of METHODS; "synthetic" (the
    default, and that of runs saved before methods had names: a network trained on the synthetic
    anomaly tasks to output their soft labels), "autoencoder" (trained to reconstruct healthy
    images; its map is the smoothed residual), or the diffusion methods "ddpm", "pddpm" (patched)
    and "cddpm" (conditioned on the input), which reconstruct healthy images from partly noised
    ones (`lightwork.methods.diffusion`), or the hybrids "hybrid" and "hybrid_ddpm" (2D), an
    autoencoder or a ddpm denoiser and a U-Net of [image, reconstruction] trained on the synthetic
    anomaly tasks (`lightwork.methods.hybrid`). The model section's network must be one the method
    trains (METHOD_NETWORKS); choosing a method with its own network sets `model.name` to it
    unless a config file or an override names one."""

    name: str = _spec("synthetic", choices=METHODS)


# train.select_by -> the order of its figure that is best (a Ray Train checkpoint score order).
SELECT_BY = {"val_loss": "min", "val_pixel_ap": "max"}


@dataclass
class TrainSection:
    """Optimisation, validation and stopping (docs/method.md, training). Steps are optimizer steps.
    Random draws (initial weights, flips) come from the run's `RunConfig.seed`."""

    lr: float = _spec(1e-3, gt=0)
    weight_decay: float = _spec(0.0, ge=0)
    batch_size: int = _spec(8, ge=1)
    warmup_steps: int = _spec(100, ge=0)
    warmup_start: float = _spec(0.01, gt=0, le=1)  # fraction of lr at step 0
    decay_steps: int = _spec(8000, ge=1)
    decay_factor: float = _spec(0.1, gt=0, le=1)
    lr_floor: float = _spec(0.05, ge=0, le=1)  # fraction of lr (lr/20)
    patience_steps: int = _spec(5000, ge=1)
    max_epochs: int = _spec(10_000, ge=1)
    max_steps: int | None = _spec(None, ge=1)
    # Optimizer steps per epoch, i.e. between validations and checkpoints; None = one pass over
    # the training samples (a short run validates less often with a number here).
    epoch_steps: int | None = _spec(None, ge=1)
    # The checkpoint a fold model is: the "best" by `select_by` or the "last" one.
    keep_checkpoint: str = _spec("best", choices=("best", "last"))
    # The validation figure "best" follows (and the patience counts from): the validation loss
    # (the paper's, lower is better) or the synthetic pixel AP (higher is better); SELECT_BY.
    select_by: str = _spec("val_loss", choices=tuple(SELECT_BY))
    val_batch_size: int = _spec(8, ge=1)
    # The score threshold of a fold's binary mask (Dice, `lightwork predict`'s masks), from its
    # synthetic validation samples: the lowest at which at most this share of their normal voxels
    # (label 0, healthy images included) score at or above it; null: the threshold maximising Dice
    # against the synthetic anomaly masks, which transfers poorly to real lesions (docs/method.md).
    threshold_fpr: float | None = _spec(0.001, gt=0, lt=1)
    # Probability of mirroring a training sample left-right (image and label alike; brain: 0.5). The
    # array axis is the data's (`DataSection.left_right_axis`); data with none refuses a flip.
    flip_left_right: float = _spec(0.0, ge=0, le=1)
    mixed_precision: bool = True  # bf16 autocast + channels-last on GPU; CPU always runs fp32


@dataclass
class DataSection:
    """Where the prepared cases are and how samples are synthesised.

    recipe / recipe_options: the preprocessing recipe of the prepared data and its options, as the
    manifest records them. fingerprint: sha256 over the usable cases' ids and raw-file checksums
    (other cases, other fingerprint). `resolve_data` fills the three; a config that names them must
    match the data.
    max_push: the deformation tasks' largest push in voxels; None = derived from the recipe
    (`lightwork.anomalies.parameters.MAX_PUSH`: 5 brain, 10 cxr).
    slice_axis: None = train on whole cases; 0, 1 or 2 = train a 2D model (model.spatial_dims 2)
    on the slices of 3D cases along that spatial axis (`lightwork.data.slices`); prediction runs
    slice by slice and reassembles the volume. min_slice_foreground: the fraction of a slice's
    pixels that must be foreground for it to be a training or validation sample. lesion_free_slices:
    also learn from the slices of lesion cases (manifest rows with a lesion mask) that hold no
    lesion voxel (off: lesion cases are left out, as whole volumes are).
    left_right_axis: the spatial axis of the samples the model sees (a case, or a slice along
    slice_axis) that runs left-right in the patient, from the prepared cases' affine
    (`left_right_axis`); None where there is none (2D images, slices across the left-right axis).
    `resolve_data` fills it; a config that names it must match the data.
    """

    manifest: str = ""
    external_manifest: str = ""  # external source for the inter-dataset blending task (1)
    val_per_case: int = _spec(1, ge=1)  # anomalous validation versions per validation case
    recipe: str = ""
    recipe_options: dict = _spec(factory=dict)
    fingerprint: str = ""
    max_push: float | None = _spec(None, gt=MIN_PUSH)
    slice_axis: int | None = _spec(None, choices=(0, 1, 2))
    min_slice_foreground: float = _spec(0.1, gt=0, le=1)
    lesion_free_slices: bool = False
    left_right_axis: int | None = _spec(None, choices=(0, 1, 2))


@dataclass
class ResourcesSection:
    """What one trial (one fold model) needs; the cluster only decides how many run at once
    (`lightwork.distributed.resources`).

    num_workers: Ray Train workers per trial (DDP when > 1). min_workers: None = a fixed group of
    num_workers; 1..num_workers makes the worker group elastic between the two.
    cpus_per_worker: CPUs per Train worker. gpus_per_worker: GPUs per Train worker (a fraction
    shares a GPU); None = 1 per worker wherever the cluster has or its autoscaler can add GPUs,
    else 0. data_cpus_per_trial: CPUs of the synthesis stream that feeds one trial (Ray places its
    actors on any node; on a fixed cluster the trials' streams share what the workers leave).
    max_concurrent_trials: None = as many as fit. max_failures: restarts of a trial's Train
    worker group; trial_max_failures: retries of a Tune trial.
    """

    num_workers: int = _spec(1, ge=1)
    min_workers: int | None = _spec(None, ge=1)
    cpus_per_worker: float = _spec(1.0, gt=0)
    gpus_per_worker: float | None = _spec(None, ge=0)
    data_cpus_per_trial: float = _spec(1.0, gt=0)
    max_concurrent_trials: int | None = _spec(None, ge=1)
    max_failures: int = _spec(2, ge=0)
    trial_max_failures: int = _spec(2, ge=0)


# True while `load_config` merges its sources: RunConfig.check runs once, on the result.
_DEFER_CHECKS = contextvars.ContextVar("lightwork_defer_config_checks", default=False)


@dataclass
class RunConfig:
    """A whole run. `seed` decides every random draw of the run (synthetic samples, their order,
    initial weights, flips); `name` and `storage_path` say where its results go."""

    name: str = _spec("lightwork", nonempty=True)
    storage_path: str = _spec("runs", nonempty=True)
    seed: int = 0
    method: MethodSection = field(default_factory=MethodSection)
    model: UNetConfig = field(default_factory=UNetConfig)
    train: TrainSection = field(default_factory=TrainSection)
    data: DataSection = field(default_factory=DataSection)
    resources: ResourcesSection = field(default_factory=ResourcesSection)

    def __post_init__(self) -> None:
        _validate(self, "")
        if not _DEFER_CHECKS.get():
            self.check()

    def check(self) -> None:
        """Raise UserError naming the key when fields that must agree do not (each field alone is
        checked when built). `load_config` checks once all its sources are merged, so that the
        order of `--set` overrides never matters."""
        method, network = self.method.name, self.model.name
        owners = [name for name, networks in METHOD_NETWORKS.items() if network in networks]
        if method in METHOD_NETWORKS and method not in owners:
            networks = METHOD_NETWORKS[method]
            raise UserError(
                f"model.name: {network!r} is not a network method {method!r} trains "
                f"({', '.join(networks)}): --set model.name={networks[0]}"
            )
        if owners and method not in owners:
            raise UserError(
                f"model.name: {network!r} is the network of method {owners[0]!r}: --set method.name={owners[0]}"
            )
        if self.model.spatial_dims not in METHOD_DIMS.get(method, (self.model.spatial_dims,)):
            raise UserError(
                f"model.spatial_dims: method {method!r} trains {' or '.join(map(str, METHOD_DIMS[method]))}D "
                f"networks only, got {self.model.spatial_dims}: train on slices (--config brain2d, or --set "
                "data.slice_axis=2 --set model.spatial_dims=2) or on 2D images"
            )
        res = self.resources
        if res.min_workers is not None and res.min_workers > res.num_workers:
            raise UserError(
                f"resources.min_workers: {res.min_workers} is not allowed (1..resources.num_workers "
                f"= {res.num_workers}, or null for a fixed worker group)"
            )
        data = self.data
        if data.slice_axis is not None and self.model.spatial_dims != 2:
            raise UserError(
                f"data.slice_axis: {data.slice_axis} trains a 2D model on slices of 3D volumes, but "
                f"model.spatial_dims is {self.model.spatial_dims}: --set model.spatial_dims=2 (or the brain2d "
                "preset), or data.slice_axis=null to train on whole volumes"
            )
        if data.lesion_free_slices and data.slice_axis is None:
            raise UserError(
                "data.lesion_free_slices: true needs data.slice_axis (lesion-free slices of lesion cases are "
                "used only when training on slices)"
            )

    @property
    def data_dims(self) -> int:
        """The spatial dims of the prepared cases the run trains on: the model's, or 3 for a 2D
        model of slices (`data.slice_axis`)."""
        return 3 if self.data.slice_axis is not None else self.model.spatial_dims

    @property
    def task_max_push(self) -> float:
        """`data.max_push`, or the value its recipe derives (`lightwork.anomalies.parameters.max_push_for`)."""
        if self.data.max_push is not None:
            return self.data.max_push
        return max_push_for(self.model.spatial_dims, self.data.recipe)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _allowed(hint: Any, rule: dict) -> str:
    """What a field accepts, in words (for error messages)."""
    optional = type(None) in typing.get_args(hint)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    if "choices" in rule:
        text = "one of " + ", ".join(map(str, rule["choices"]))
    else:
        origin = typing.get_origin(base)
        item = typing.get_args(base)[0].__name__ if origin is list else None
        names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a mapping"}
        text = f"a list of {item}s" if origin is list else names[base]
        bounds = [f"{op} {rule[key]}" for key, op in (("gt", ">"), ("ge", ">="), ("le", "<=")) if key in rule]
        text += (" each " if origin is list else " ") + " and ".join(bounds) if bounds else ""
        if rule.get("min_len"):
            text += f", at least {rule['min_len']} of them"
        if rule.get("nonempty"):
            text = "a non-empty string"
    return text + (", or null" if optional else "")


def _check(value: Any, hint: Any, rule: dict) -> tuple[bool, Any]:
    """(ok, value in its field's type) for one value against its type hint and rule."""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return True, None
        hint = next(a for a in args if a is not type(None))
    origin = typing.get_origin(hint)
    if origin is list:
        if not isinstance(value, list) or len(value) < rule.get("min_len", 0):
            return False, value
        checked = [_check(item, typing.get_args(hint)[0], rule) for item in value]
        return all(ok for ok, _ in checked), [item for _, item in checked]
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                value = float(value)
            except ValueError:
                return False, value
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str) and (bool(value) or not rule.get("nonempty"))
    elif hint is dict:
        ok = isinstance(value, dict)
    else:
        raise TypeError(f"config field type {hint} has no validation rule")
    if ok and "choices" in rule:
        ok = value in rule["choices"]
    if ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        ok = (
            value > rule.get("gt", -float("inf"))
            and value >= rule.get("ge", -float("inf"))
            and value <= rule.get("le", float("inf"))
        )
    return ok, value


def _validate(section: Any, where: str) -> None:
    """Check (and coerce, e.g. int -> float) every field of a config dataclass in place."""
    hints = typing.get_type_hints(type(section))
    for spec in dataclasses.fields(section):
        key = f"{where}{spec.name}"
        value = getattr(section, spec.name)
        if dataclasses.is_dataclass(value):
            _validate(value, f"{key}.")
            continue
        ok, coerced = _check(value, hints[spec.name], dict(spec.metadata))
        if not ok:
            raise UserError(f"{key}: {value!r} is not allowed ({_allowed(hints[spec.name], dict(spec.metadata))})")
        object.__setattr__(section, spec.name, coerced)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's 3D brain configuration (80x112x80 volumes), mirrored left-right half the time.
    "brain": {
        "model": MODEL_PRESETS["brain"].to_dict(),
        "train": {"lr": 1e-3, "batch_size": 8, "flip_left_right": 0.5},
    },
    # A 2D model on the axial slices of 3D brain volumes (axis 2 of RAS-like 80x112x80 volumes),
    # slices less than 10% brain left out; an axial slice keeps the left-right axis: mirrored as in 3D.
    # Lesion cases in the training manifest lend their lesion-free slices: with two BraTS T1c cases
    # lent to IXI T1, the learning benchmark's foreground pixel AP on the other three rose by 2.6
    # and by 11.5 points, for two choices of the lent pair (benchmarks/RESULTS.md).
    "brain2d": {
        "model": MODEL_PRESETS["brain2d"].to_dict(),
        "train": {"lr": 1e-3, "batch_size": 32, "val_batch_size": 32, "flip_left_right": 0.5},
        "data": {"slice_axis": 2, "min_slice_foreground": 0.1, "lesion_free_slices": True},
    },
    # The paper's 2D chest X-ray configuration (256x256): 6 downsamplings capped at 512.
    "cxr": {"model": MODEL_PRESETS["cxr"].to_dict(), "train": {"lr": 5e-3, "batch_size": 50, "val_batch_size": 50}},
    # Small models that train in minutes on a CPU.
    # The demo: a 2D model on the axial slices of the demo cohort's volumes, 1000 steps of 16 per
    # fold at a constant lr, validated every 200 steps, the last checkpoint kept (measured on the
    # demo cohort, seeds 0-2, in-process: the held-out tasks' validation loss moves by less than its
    # noise in so short a run, so selecting by it kept untrained checkpoints; 600-700 steps swung
    # from below to above the intensity baseline across seeds, 1000 steps stayed above it; measured
    # before the left-right flip). Mirrored left-right as the brain presets are: the demo cohort's
    # volumes carry RAS affines (`lightwork.demo`) and two hemispheres either side of a
    # fissure, so a mirrored slice is another plausible healthy slice.
    "demo": {
        "model": MODEL_PRESETS["demo"].to_dict(),
        "train": {
            "lr": 5e-3,
            "batch_size": 16,
            "val_batch_size": 32,
            "warmup_steps": 10,
            "decay_steps": 100_000,
            "patience_steps": 100_000,
            "epoch_steps": 200,
            "max_epochs": 5,
            "keep_checkpoint": "last",
            "flip_left_right": 0.5,
        },
        "data": {"slice_axis": 2, "min_slice_foreground": 0.1},
    },
    "tiny": {
        "model": MODEL_PRESETS["tiny"].to_dict(),
        "train": {
            "lr": 5e-3,
            "batch_size": 2,
            "warmup_steps": 2,
            "decay_steps": 100,
            "patience_steps": 50,
            "max_epochs": 2,
        },
    },
}


def _merge(target: Any, updates: dict[str, Any], source: str, prefix: str = "") -> Any:
    """A copy of dataclass `target` with `updates` applied; unknown keys raise naming `source`."""
    names = {f.name: f for f in dataclasses.fields(target)}
    changes = {}
    for key, value in updates.items():
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(names)}"
            section = f" in {prefix[:-1]}" if prefix else ""
            raise UserError(f"{source}: unknown key {key!r}{section} ({hint})")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"{source}: {prefix}{key} must be a mapping of its fields, got {value!r}")
            changes[key] = _merge(current, value, source, f"{prefix}{key}.")
        else:
            changes[key] = value
    return dataclasses.replace(copy.deepcopy(target), **changes)


def config_from_dict(document: dict[str, Any]) -> RunConfig:
    """The RunConfig of `RunConfig.to_dict()` output (or any partial mapping over the defaults),
    including the saved records (`config.yaml`) of runs made by earlier versions."""
    train = document.get("train")
    if isinstance(train, dict) and "flip_last_axis" in train:
        # Runs saved before the flip was anatomical hold train.flip_last_axis (the last array axis:
        # superior-inferior in RAS volumes). That flip is gone (train.flip_left_right replaced it),
        # so the record loads as a run without one and compares so in `check_saved`.
        document = {**document, "train": {key: value for key, value in train.items() if key != "flip_last_axis"}}
    return _merge(RunConfig(), document, "run config")


def parse_override(text: str) -> dict[str, Any]:
    """`"train.lr=1e-3"` -> `{"train": {"lr": 0.001}}` (the value is parsed as YAML)."""
    dotted, sep, raw = text.partition("=")
    if not sep or not dotted.strip() or "" in dotted.strip().split("."):
        raise UserError(f"--set {text!r}: expected SECTION.FIELD=VALUE, e.g. train.lr=1e-3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise UserError(f"--set {text!r}: the value is not valid YAML") from None
    nested: Any = value
    for part in reversed(dotted.strip().split(".")):
        nested = {part: nested}
    return nested


PATH_KEYS = (("storage_path",), ("data", "manifest"), ("data", "external_manifest"))


def load_config(path: str | None = None, preset: str | None = None, overrides: typing.Sequence[str] = ()) -> RunConfig:
    """Build a RunConfig: defaults <- preset <- YAML file (may name `preset:`) <- overrides; a
    method with a network of its own gets it unless the file or an override names one (`MethodSection`).

    `path` may be a local path or storage URI; a YAML file may contain `preset: NAME`. Local paths
    in the result (`storage_path`, `data.manifest`, `data.external_manifest`) are absolute
    (`lightwork.data.storage.normalise`). Raises UserError for any mistake in the input.
    """
    from lightwork.data import storage

    document: dict[str, Any] = {}
    if path:
        try:
            document = yaml.safe_load(storage.read_bytes(storage.normalise(path))) or {}
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise UserError(f"{path}: no such config file (or give a preset: {', '.join(PRESETS)})") from None
        except yaml.YAMLError as error:
            raise UserError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
        if not isinstance(document, dict):
            raise UserError(f"{path}: a run configuration must be a YAML mapping")
    preset = document.pop("preset", None) or preset
    deferred = _DEFER_CHECKS.set(True)
    try:
        config = RunConfig()
        if preset:
            if preset not in PRESETS:
                raise UserError(f"{path or 'config'}: unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
            config = _merge(config, PRESETS[preset], f"preset {preset}")
        config = _merge(config, document, path or "config")
        updates = [parse_override(override) for override in overrides]
        for override, update in zip(overrides, updates):
            config = _merge(config, update, f"--set {override}")
        named = any("name" in (source.get("model") or {}) for source in (document, *updates))
        if not named and config.method.name in METHOD_NETWORKS:  # the method's own network
            config.model.name = METHOD_NETWORKS[config.method.name][0]
    finally:
        _DEFER_CHECKS.reset(deferred)
    config.check()
    for keys in PATH_KEYS:
        section = config if len(keys) == 1 else getattr(config, keys[0])
        if getattr(section, keys[-1]):
            setattr(section, keys[-1], storage.normalise(getattr(section, keys[-1])))
    return config
