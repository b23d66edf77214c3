"""A run resolved against its prepared data, once per job (`resolve_run`): the config checked, with
what the data decides filled in (`resolve_data`: the recipe and its options, the cases'
fingerprint, the left-right axis a flip mirrors, the deformation push), the manifest's usable rows,
the rows models learn from and the fold plans of the splits asked for. Reads the manifest once and
one prepared case; no Ray. Training, streaming and the trials take the `ResolvedRun`. An ablation
across methods loads a config per method first (`method_configs`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lightwork.config import MODEL_PRESETS, PRESETS, RunConfig, load_config
from lightwork.data import manifest, slices
from lightwork.data.cases import load_case
from lightwork.errors import UserError
from lightwork.training.folds import FoldPlan, empty_folds, parse_splits, plan_split
from lightwork.training.runs import method_run_name


def left_right_axis(affine: Any, spatial_dims: int) -> int | None:
    """The array axis of a prepared case that runs left-right in the patient: of a 3D case's affine
    (float [4, 4], voxel -> RAS world mm), the spatial axis whose direction column has the largest
    |x| component. None for 2D cases: their affine maps rows and columns, not RAS world."""
    if spatial_dims != 3:
        return None
    return max(range(3), key=lambda index: abs(float(affine[0][index])))


def usable_rows(config: RunConfig) -> list[dict]:
    """The usable rows of `data.manifest`; UserError, in one line, when there is none or no manifest."""
    where = config.data.manifest
    if not where:
        raise UserError("no training data: pass --data PREPARED_DATASET or set data.manifest")
    try:
        rows = manifest.usable(manifest.read_manifest(where))
    except FileNotFoundError as error:
        raise UserError(str(error)) from None
    if not rows:
        raise UserError(f"{where}: no usable case in the manifest (all failed: see `lightwork prepare`'s summary)")
    return rows


def resolve_data(config: RunConfig, rows: list[dict] | None = None) -> RunConfig:
    """`config` checked against its prepared manifest, with what the data decides filled in.

    Reads `data.manifest` (unless its usable `rows` are given) and one prepared case (no Ray). Fills `data.recipe`,
    `data.recipe_options` and `data.fingerprint` from the manifest, `data.left_right_axis` from
    the case's affine (`left_right_axis`, mapped into the slices' axes with data.slice_axis) and
    `data.max_push` from the recipe unless set. Raises
    UserError, in one line, when the manifest is missing or has no usable case, when its cases
    mix recipes or spatial dims, when the config names another recipe, other recipe options or
    other cases (fingerprint), or
    when the model's spatial_dims / in_channels do not match the prepared arrays (with
    data.slice_axis: when the cases are not 3D volumes), and when train.flip_left_right asks for a
    flip the samples have no left-right axis for (2D images, slices along the left-right axis).
    """
    where = config.data.manifest
    rows = usable_rows(config) if rows is None else rows
    recipes = sorted({(row["recipe"], row.get("recipe_options") or "{}") for row in rows})
    if len(recipes) > 1:
        raise UserError(f"{where}: the cases were prepared with different recipes or options {recipes}: prepare again")
    recipe, options = recipes[0][0], json.loads(recipes[0][1])
    cases = "\n".join(f"{row['case_id']} {row['checksum']}" for row in rows)
    fingerprint = hashlib.sha256(cases.encode()).hexdigest()
    data = config.data
    if data.fingerprint and data.fingerprint != fingerprint:
        raise UserError(
            f"data.fingerprint: {where} holds other cases than the config was made for "
            f"({len(rows)} usable cases now; prepared again from other files?)"
        )
    if data.recipe and data.recipe != recipe:
        raise UserError(f"data.recipe: the config says {data.recipe!r} but {where} was prepared with {recipe!r}")
    if data.recipe_options and data.recipe_options != options:
        raise UserError(
            f"data.recipe_options: the config says {data.recipe_options} but {where} was prepared with {options}"
        )
    dims = sorted({len(row["shape"]) for row in rows})
    model = config.model
    axis = config.data.slice_axis
    if axis is not None and dims != [config.data_dims]:
        raise UserError(
            f"data.slice_axis: {axis} slices 3D volumes, but {where} holds {'/'.join(map(str, dims))}D cases "
            f"(shape {rows[0]['shape']}): set data.slice_axis=null to train on them whole"
        )
    if dims != [config.data_dims]:
        presets = [
            name
            for name, preset in MODEL_PRESETS.items()
            if preset.spatial_dims == dims[0] and "slice_axis" not in PRESETS[name].get("data", {})
        ]
        raise UserError(
            f"model.spatial_dims: {model.spatial_dims} does not fit {where}, whose cases are "
            f"{'/'.join(map(str, dims))}D (shape {rows[0]['shape']}): use a {dims[0]}D preset "
            f"({', '.join(presets)}) or --set model.spatial_dims={dims[0]}"
        )
    case = load_case(rows[0]["array_uri"])
    channels = case.image.shape[0]
    if channels != model.in_channels:
        raise UserError(
            f"model.in_channels: {model.in_channels} does not fit {where}, whose images have "
            f"{channels} channel(s): --set model.in_channels={channels}"
        )
    volume_axis = left_right_axis(case.affine, dims[0])
    sample_axis = volume_axis
    if volume_axis is not None and axis is not None:
        sample_axis = None if volume_axis == axis else volume_axis - (volume_axis > axis)
    flip = config.train.flip_left_right
    if flip and volume_axis is None:
        raise UserError(
            f"train.flip_left_right: {flip} mirrors samples left-right, but {where} holds 2D images, which have "
            "no left-right axis to mirror: set train.flip_left_right=0"
        )
    if flip and sample_axis is None:
        raise UserError(
            f"train.flip_left_right: {flip} mirrors samples left-right, but data.slice_axis: {axis} is the "
            f"left-right axis of {where}'s volumes, so its slices have none: slice along another axis or set "
            "train.flip_left_right=0"
        )
    if data.left_right_axis is not None and data.left_right_axis != sample_axis:
        raise UserError(
            f"data.left_right_axis: the config says {data.left_right_axis} but the samples of {where} run "
            f"left-right along axis {sample_axis}"
        )
    resolved = dataclasses.replace(
        data, recipe=recipe, recipe_options=options, fingerprint=fingerprint, left_right_axis=sample_axis
    )
    resolved = dataclasses.replace(config, data=resolved)
    return dataclasses.replace(resolved, data=dataclasses.replace(resolved.data, max_push=resolved.task_max_push))


@dataclass(frozen=True)
class ResolvedRun:
    """A run as a job resolves it once: `config` (resolved), `usable` (the manifest's usable rows),
    `rows` (those models learn from: healthy cases, or lesion cases' lesion-free slices),
    `fold_sizes` (rows per data fold), `split_spec` and `plans` (every fold model of its splits)."""

    config: RunConfig
    usable: list[dict]
    rows: list[dict]
    fold_sizes: dict[int, int]
    split_spec: str
    plans: list[FoldPlan]


def resolve_run(config: RunConfig, split_spec: str) -> ResolvedRun:
    """`config` and the splits `split_spec` resolved against the prepared data (one manifest read).
    Raises UserError, naming the manifest, where `resolve_data` does, when no case is healthy, and
    when a fold the splits' models train or validate on holds none (a cohort too small for the
    folds)."""
    usable = usable_rows(config)
    config = resolve_data(config, usable)
    rows = slices.training_rows(usable, config.data.lesion_free_slices)
    if not rows:
        raise UserError(
            f"{config.data.manifest}: no usable healthy cases in the manifest "
            f"({len(usable)} usable, all with a lesion mask or labelled anomalous)"
        )
    fold_sizes: dict[int, int] = {}
    for row in rows:
        fold_sizes[row["fold"]] = fold_sizes.get(row["fold"], 0) + 1
    plans = [plan for split in parse_splits(split_spec) for plan in plan_split(split, fold_sizes)]
    empty = empty_folds(plans, fold_sizes)
    if empty:
        raise UserError(
            f"{config.data.manifest}: {len(rows)} healthy cases fill folds "
            f"{', '.join(map(str, sorted(fold_sizes)))} of {manifest.NUM_FOLDS}, but the models of --split "
            f"{split_spec} train or validate on folds {', '.join(map(str, empty))} too: prepare at least "
            f"{manifest.NUM_FOLDS} healthy cases (one per fold)"
        )
    return ResolvedRun(config, usable, rows, fold_sizes, split_spec, plans)


def method_configs(
    path: str | None, preset: str | None, overrides: Sequence[str], methods: Sequence[str]
) -> list[RunConfig]:
    """The configs of an ablation across `methods` (names of config.METHODS): for each,
    `load_config(path, preset, overrides)` with `method.name` set to it last (so that a method
    with a network of its own trains it unless a source names one), named
    `method_run_name(name, method)`. Raises UserError, in one line naming the method, for a
    method the settings do not fit (a 2D-only method in a 3D config)."""
    configs = []
    for method in methods:
        config = load_config(path, preset, [*overrides, f"method.name={method}"])
        configs.append(dataclasses.replace(config, name=method_run_name(config.name, method)))
    return configs
