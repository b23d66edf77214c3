"""One typed configuration for a training run (`lightwork.config`).

A run is described by `RunConfig` (sections `model` = `UNetConfig`, `train`, `data`, `resources`), built from a
preset (`brain`, `cxr`, `demo`, `tiny`), optionally updated from a YAML file and from CLI overrides
`section.field=value` (values parsed as YAML: `train.lr=1e-3`, `model.features=[8,16,32]`), and
saved as `config.yaml` next to the run's results. Unknown keys are errors, never ignored.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml


@dataclass
class UNetConfig:
    """Architecture of one model (built by `lightwork.models.UNet`; here so that reading a config
    needs no torch).

    spatial_dims: 2 or 3. in_channels: image channels (the positional encoding adds D + 64).
    features: channels per resolution level, encoder level 0 first; the last entry is the
    bottleneck; len(features) - 1 = number of downsamplings.
    """

    spatial_dims: int = 3
    in_channels: int = 1
    out_channels: int = 1
    features: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 320])
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
    "demo": UNetConfig.from_depth(3, depth=3, base=8, cap=32),
    "tiny": UNetConfig.from_depth(3, depth=2, base=4, cap=8),
}


@dataclass
class TrainSection:
    """Optimisation, validation and stopping (method.md section 4). Steps are optimizer steps."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 8
    warmup_steps: int = 100
    warmup_start: float = 0.01
    decay_steps: int = 8000
    decay_factor: float = 0.1
    lr_floor: float = 0.05  # fraction of lr (lr/20)
    patience_steps: int = 5000
    max_epochs: int = 10_000
    max_steps: int | None = None
    val_batch_size: int = 8
    flip_last_axis: float = 0.0  # probability of flipping the last spatial axis (brain: 0.5)
    mixed_precision: bool = True  # bf16 autocast + channels-last on GPU; CPU always runs fp32
    seed: int = 0


@dataclass
class DataSection:
    """Where the prepared cases are and how samples are synthesised."""

    manifest: str = ""
    external_manifest: str = ""  # external source for the inter-dataset blending task (1)
    val_per_case: int = 1  # anomalous validation versions per validation case
    max_push: float = 5.0  # deformation tasks: 5 brain, 10 CXR
    recipe: str = ""
    recipe_options: dict = field(default_factory=dict)


@dataclass
class ResourcesSection:
    """How trials map onto the cluster.

    num_workers: Ray Train workers per trial (DDP when > 1); min_workers < num_workers makes the
    worker group elastic. gpus_per_trial: fraction of a GPU per worker (0 = CPU); None plans it.
    data_cpus_per_trial: the least CPU budget each running trial keeps for its synthesis stream
    (what the trials leave beyond that is shared out among their streams).
    """

    num_workers: int = 1
    min_workers: int | None = None
    cpus_per_worker: float = 1.0
    data_cpus_per_trial: float = 1.0
    gpus_per_worker: float | None = None
    max_concurrent_trials: int | None = None
    max_failures: int = 2


@dataclass
class RunConfig:
    name: str = "lightwork"
    storage_path: str = "runs"
    model: UNetConfig = field(default_factory=UNetConfig)
    train: TrainSection = field(default_factory=TrainSection)
    data: DataSection = field(default_factory=DataSection)
    resources: ResourcesSection = field(default_factory=ResourcesSection)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's 3D brain configuration (80x112x80 volumes).
    "brain": {"model": MODEL_PRESETS["brain"].to_dict(),
              "train": {"lr": 1e-3, "batch_size": 8, "flip_last_axis": 0.5}, "data": {"max_push": 5.0}},
    # The paper's 2D chest X-ray configuration (256x256): 6 downsamplings capped at 512.
    "cxr": {"model": MODEL_PRESETS["cxr"].to_dict(),
            "train": {"lr": 5e-3, "batch_size": 50, "val_batch_size": 50}, "data": {"max_push": 10.0}},
    # Small models that train in minutes on a CPU.
    # 12 epochs of 4 steps per fold: the whole demo stays under 10 minutes on 2 cores (measured:
    # two trials at once ran no faster than one after the other there).
    "demo": {"model": MODEL_PRESETS["demo"].to_dict(),
             "train": {"lr": 2e-3, "batch_size": 4, "warmup_steps": 10, "decay_steps": 500,
                       "patience_steps": 200, "max_epochs": 12}},
    "tiny": {"model": MODEL_PRESETS["tiny"].to_dict(),
             "train": {"lr": 5e-3, "batch_size": 2, "warmup_steps": 2, "decay_steps": 100,
                       "patience_steps": 50, "max_epochs": 2}},
}


def _merge(target: Any, updates: dict[str, Any], where: str) -> Any:
    """A copy of dataclass `target` with `updates` applied; unknown keys raise naming `where`."""
    names = {f.name: f for f in dataclasses.fields(target)}
    changes = {}
    for key, value in updates.items():
        if key not in names:
            raise ValueError(f"{where}: unknown key {key!r} (known: {sorted(names)})")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{key}: expected a mapping, got {value!r}")
            changes[key] = _merge(current, value, f"{where}.{key}")
        else:
            changes[key] = value
    return dataclasses.replace(copy.deepcopy(target), **changes)


def config_from_dict(document: dict[str, Any]) -> RunConfig:
    """The RunConfig of `RunConfig.to_dict()` output (or any partial mapping over the defaults)."""
    return _merge(RunConfig(), document, "run config")


def parse_override(text: str) -> dict[str, Any]:
    """`"train.lr=1e-3"` -> `{"train": {"lr": 0.001}}` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ValueError(f"override {text!r}: expected section.field=value")
    dotted, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            value = float(value)
        except ValueError:
            pass
    nested: dict[str, Any] = value
    for part in reversed(dotted.strip().split(".")):
        nested = {part: nested}
    return nested


def load_config(path: str | None = None, preset: str | None = None, overrides: list[str] = ()) -> RunConfig:
    """Build a RunConfig: defaults <- preset <- YAML file (may name `preset:`) <- overrides.

    `path` may be a local path or storage URI; a YAML file may contain `preset: NAME`.
    """
    from lightwork.data import storage

    document: dict[str, Any] = {}
    if path:
        document = yaml.safe_load(storage.read_bytes(path)) or {}
        if not isinstance(document, dict):
            raise ValueError(f"{path}: a run configuration must be a YAML mapping")
    preset = document.pop("preset", None) or preset
    config = RunConfig()
    if preset:
        if preset not in PRESETS:
            raise ValueError(f"{path or 'config'}: unknown preset {preset!r} (choose from {sorted(PRESETS)})")
        config = _merge(config, PRESETS[preset], f"preset {preset}")
    config = _merge(config, document, path or "config")
    for override in overrides:
        config = _merge(config, parse_override(override), f"override {override!r}")
    return config


def save_config(config: RunConfig, uri: str) -> None:
    """Write `config` as YAML to `uri` (local or s3://)."""
    from lightwork.data import storage

    storage.write_bytes(uri, config.to_yaml().encode())
