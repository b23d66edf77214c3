"""The model package (`.lwpkg`, written by `lightwork export`): one split of a run in one file.

A zip archive:
    package.json   {"format": "lightwork-package", "lightwork_version", "split", "recipe",
                   "recipe_options", "threshold", "slice_axis" (null, or the volume axis 2D models
                   of slices predict along), "method" (the run's method section; absent, as in
                   packages written before methods had names: the synthetic-task method), "seed"
                   (the run seed its maps draw from; absent: 0), "models": [{"name", "config" (the model section,
                   UNetConfig, as a dict: the network's name and keyword arguments; without a name,
                   as packages written before networks had names: a U-Net), "weights" (member
                   name)}]}
    models/<fold name>.pt  the fold model's state dict (torch.save of plain tensors; read back with
                   torch.load(weights_only=True) only, so a package cannot run code when loaded)
    SHA256SUMS     JSON {member name: sha256 hex} of every other member

Reading checks the archive, every checksum (no member missing, none added) and the lightwork
version (a package loads only in the version that wrote it); any failure is one ValueError line
naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import zipfile

import torch

from lightwork import __version__
from lightwork.config import MethodSection, UNetConfig
from lightwork.data import storage
from lightwork.errors import UserError
from lightwork.inference.ensemble import PACKAGE_SUFFIX, Ensemble, run_ensemble
from lightwork.models import build_model

FORMAT = "lightwork-package"
DESCRIPTION = "package.json"
CHECKSUMS = "SHA256SUMS"


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def package_bytes(ensemble: Ensemble) -> bytes:
    """The `.lwpkg` bytes of an ensemble (see the module docstring)."""
    members: dict[str, bytes] = {}
    entries = []
    for name, network in zip(ensemble.names, ensemble.networks):
        buffer = io.BytesIO()
        torch.save({key: value.detach().cpu().contiguous() for key, value in network.state_dict().items()}, buffer)
        members[f"models/{name}.pt"] = buffer.getvalue()
        entries.append({"name": name, "config": network.config.to_dict(), "weights": f"models/{name}.pt"})
    description = {
        "format": FORMAT,
        "lightwork_version": __version__,
        "split": ensemble.split,
        "recipe": ensemble.recipe_name,
        "recipe_options": ensemble.recipe_options,
        "threshold": ensemble.threshold,
        "slice_axis": ensemble.slice_axis,
        "method": dataclasses.asdict(ensemble.method),
        "seed": ensemble.seed,
        "models": entries,
    }
    members[DESCRIPTION] = json.dumps(description, indent=1, sort_keys=True).encode()
    members[CHECKSUMS] = json.dumps({key: _sha256(value) for key, value in sorted(members.items())}, indent=1).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, value in members.items():
            archive.writestr(key, value)
    return buffer.getvalue()


def export_package(run: str, split: str | None, out: str) -> Ensemble:
    """Write the ensemble of `split` in run folder `run` as one package file `out` (local or
    s3://; must end in .lwpkg); returns the ensemble."""
    if not str(out).endswith(PACKAGE_SUFFIX):
        raise UserError(f"{out}: a package file name must end in {PACKAGE_SUFFIX}")
    ensemble = run_ensemble(run, split)
    storage.write_bytes(out, package_bytes(ensemble))
    return ensemble


def read_package(uri: str) -> Ensemble:
    """The ensemble stored in package `uri` (see the module docstring for the checks)."""
    try:
        payload = storage.read_bytes(uri)
    except FileNotFoundError as error:
        raise UserError(f"{uri}: no such package file") from error
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        sums = json.loads(members.pop(CHECKSUMS))
        description = json.loads(members[DESCRIPTION])
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError) as error:
        raise UserError(
            f"{uri}: not a readable lightwork package, damaged or truncated ({type(error).__name__}: {error})"
        ) from error
    if set(sums) != set(members):
        raise UserError(
            f"{uri}: damaged package: members {sorted(set(sums) ^ set(members))} differ from its checksum list"
        )
    damaged = sorted(name for name, value in members.items() if _sha256(value) != sums[name])
    if damaged:
        raise UserError(f"{uri}: damaged package: checksum mismatch in {', '.join(damaged)}")
    if description.get("format") != FORMAT:
        raise UserError(f"{uri}: not a lightwork package (format {description.get('format')!r})")
    if description.get("lightwork_version") != __version__:
        raise UserError(
            f"{uri}: a package of lightwork {description.get('lightwork_version')}, this is lightwork "
            f"{__version__}; export it again with this version"
        )
    networks = []
    for entry in description["models"]:
        network = build_model(UNetConfig(**entry["config"]))
        network.load_state_dict(
            torch.load(io.BytesIO(members[entry["weights"]]), map_location="cpu", weights_only=True)
        )
        networks.append(network.eval())
    return Ensemble(
        description["split"],
        [entry["name"] for entry in description["models"]],
        networks,
        description["recipe"],
        description["recipe_options"],
        float(description["threshold"]),
        uri,
        description.get("slice_axis"),
        MethodSection(**description.get("method", {})),
        int(description.get("seed", 0)),
    )


def load_ensemble(models: str, split: str | None = None, threshold: float | None = None) -> Ensemble:
    """The ensemble in `models`: a `.lwpkg` package or a run folder/URI (`run_ensemble`).
    `split`, when given, must be the package's; `threshold` overrides the recorded one."""
    if not str(models).endswith(PACKAGE_SUFFIX):
        return run_ensemble(models, split, threshold)
    ensemble = read_package(models)
    if split is not None and split != ensemble.split:
        raise UserError(f"{models}: the package holds split {ensemble.split}, not {split}")
    if threshold is not None:
        ensemble.threshold = float(threshold)
    return ensemble
