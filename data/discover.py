"""Find the cases under a source folder or bucket prefix, and the role of each file.

The rules, applied to every file below SRC (recursively; names starting with '.' are ignored):

1. Only image files count: `.nii`, `.nii.gz`, `.dcm`, `.dicom`, `.ima`, `.png`, `.jpg`, `.jpeg`,
   `.npy` (any case). For 3D recipes, the DICOM files of one folder are one image (a series)
   named after that folder and placed in its parent folder; for 2D recipes each DICOM file is
   one image.
2. A name's tokens are its stem split at every non-alphanumeric character, lower-cased
   (`Flair_subtrMeanDivStd` -> flair, subtrmeandivstd). Role by tokens, first match wins:
   lesion mask if a token is one of LESION_TOKENS (lesion, seg, gold, otmulticlass, ...);
   brain mask if one is in BRAIN_MASK_TOKENS (brainmask, mask, dlmuse); otherwise an image.
   A name pattern given for a role (`MaskPatterns`; `lightwork prepare --brain-mask-pattern GLOB
   --lesion-mask-pattern GLOB`: shell globs matched case-insensitively against file names, e.g.
   `mask.nii.gz`, `*_seg.nii.gz`) overrides the tokens:
   a matching file has that role, and a file the tokens give that role but the pattern does not
   match is not used at all (e.g. a tool's `x_Prediction_mask.nii.gz` beside `mask.nii.gz`).
3. A folder other than SRC itself and not named as a label folder (LABEL_FOLDERS) is a *case
   folder* (one case, id = its path) when it holds a mask file, or exactly one image, or images
   of two or more modalities (MODALITY_TOKENS).
   Its image is the one matching `modality`; with no modality it must be the only image. Its
   brain mask and lesion mask are the mask files in it (at most one of each).
4. Any other folder is *flat*: each image in it is one case (id = its path without the suffix),
   kept only if it matches `modality` when one is given. Its masks are files anywhere below SRC
   named `<image stem>_<role tokens>`, e.g. `IXI012-T1_ds.nii.gz` ->
   `parcellation/IXI012-T1_ds_DLMUSE.nii.gz` (brain mask).
5. Modality matching: `modality` (case-insensitive) or one of its aliases in MODALITY_TOKENS
   equals one of the name's tokens (`t1` matches `IXI012-HH-1211-T1_ds`, not `T1c_...`).
6. Image-level label: a lesion mask decides (1 when it has a non-zero voxel, else 0; decided
   when the case is prepared); else a folder on the case's path (SRC's own name included)
   named as in LABEL_FOLDERS (NORMAL -> 0, PNEUMONIA -> 1, ...); else unknown (None).
7. Case ids are the path relative to SRC with '/' replaced by '_' and characters other than
   letters, digits, '.', '_' and '-' replaced by '_'. When several cases clean to one id
   (`café-T1`, `cafè-T1`), each of them gets '-' and 8 hex digits of its path's sha256 appended,
   so that every case keeps a stable id of its own.
8. Symbolic links are followed (a cohort assembled from links to case folders); a link to a
   folder that contains it (a cycle) is skipped with a warning.

A case folder that breaks a rule (two images and no modality, two lesion masks, ...) becomes a
case with a `problem`: `lightwork prepare` records it as failed and goes on.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass

from lightwork.data import storage
from lightwork.data.readers import DICOM_SUFFIXES, suffix_of

LESION_TOKENS = frozenset({"lesion", "lesions", "seg", "segmentation", "gold", "otmulticlass", "groundtruth"})
BRAIN_MASK_TOKENS = frozenset({"brainmask", "mask", "dlmuse"})
MODALITY_TOKENS = {
    "flair": ("flair",),
    "t1": ("t1", "t1w"),
    "t2": ("t2", "t2w"),
    "t1c": ("t1c", "t1ce", "t1gd"),
}
LABEL_FOLDERS = {"normal": 0, "healthy": 0, "pneumonia": 1, "abnormal": 1}
ROLE_OPTIONS = {
    "brain_mask": "--brain-mask-pattern",
    "lesion": "--lesion-mask-pattern",
}  # the CLI flag naming each mask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseSource:
    """One case's raw files (URIs). `image` is a file or a DICOM series folder; `image_label` is
    the folder-derived label (the lesion mask, when present, decides instead); `problem` says why
    the case cannot be prepared (None when it can)."""

    case_id: str
    image: str
    brain_mask: str | None = None
    lesion: str | None = None
    image_label: int | None = None
    problem: str | None = None

    def uris(self) -> list[str]:
        return [uri for uri in (self.image, self.brain_mask, self.lesion) if uri]


@dataclass(frozen=True)
class _Entry:
    path: str  # relative to SRC, '/'-separated ('' for a DICOM series filling SRC itself)
    stem: str
    suffix: str
    role: str | None  # 'image', 'brain_mask', 'lesion'; None: a mask the role's pattern does not name (unused)

    @property
    def tokens(self) -> tuple[str, ...]:
        return name_tokens(self.stem)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class MaskPatterns:
    """Shell globs naming the brain mask and the lesion mask of a case by file name (rule 2)."""

    brain_mask: str | None = None
    lesion: str | None = None

    def role(self, name: str, stem: str) -> str | None:
        """The role of a file (or DICOM series folder) called `name` whose stem is `stem`."""
        for role in ("lesion", "brain_mask"):
            pattern = getattr(self, role)
            if pattern and fnmatch.fnmatchcase(name.lower(), pattern.lower()):
                return role
        role = role_of(stem)
        return None if role != "image" and getattr(self, role) else role


def name_tokens(stem: str) -> tuple[str, ...]:
    return tuple(token.lower() for token in re.split(r"[^0-9A-Za-z]+", stem) if token)


def role_of(stem: str) -> str:
    """'lesion', 'brain_mask' or 'image' by the name's tokens (rule 2)."""
    tokens = set(name_tokens(stem))
    if tokens & LESION_TOKENS:
        return "lesion"
    if tokens & BRAIN_MASK_TOKENS:
        return "brain_mask"
    return "image"


def modality_of(tokens: tuple[str, ...]) -> set[str]:
    return {name for name, aliases in MODALITY_TOKENS.items() if set(aliases) & set(tokens)}


def matches_modality(tokens: tuple[str, ...], modality: str | None) -> bool:
    if modality is None:
        return True
    wanted = modality.lower()
    return bool({wanted, *MODALITY_TOKENS.get(wanted, ())} & set(tokens))


def case_id_of(relative: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]", "_", relative.strip("/").replace("/", "_"))


def list_files(src: str) -> list[str]:
    """Paths of every file below `src`, relative to it ('/'-separated, sorted); local symbolic
    links are followed, except a link back to a folder it is inside (logged and skipped)."""
    fs, root = storage.filesystem(src)
    if not fs.isdir(root):
        raise ValueError(f"{src}: not a folder or bucket prefix")
    if not storage.is_remote(src):
        return sorted(_local_files(root))
    root = root.rstrip("/")
    return sorted(path[len(root) :].lstrip("/") for path in fs.find(root))


def _local_files(root: str) -> list[str]:
    files: list[str] = []
    pending = [(root, "", frozenset({_identity(root)}))]
    while pending:
        folder, relative, ancestors = pending.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                path = f"{relative}{entry.name}"
                if entry.is_dir():  # follows a symbolic link
                    identity = _identity(entry.path)
                    if identity in ancestors:
                        log.warning("%s: skipped, a symbolic link to a folder that contains it (a cycle)", entry.path)
                        continue
                    pending.append((entry.path, f"{path}/", ancestors | {identity}))
                elif entry.is_file():
                    files.append(path)
    return files


def _identity(path: str) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


def discover_cases(
    src: str, modality: str | None = None, volumes: bool = True, masks: MaskPatterns = MaskPatterns()
) -> list[CaseSource]:
    """The cases under `src` sorted by id (see the module docstring for the rules).

    `volumes`: True for 3D recipes (DICOM files of a folder form one series), False for 2D.
    `masks`: file name patterns of the brain mask and the lesion mask (rule 2), when given.
    """
    folders: dict[str, list[_Entry]] = defaultdict(list)
    for relative in list_files(src):
        name = relative.rsplit("/", 1)[-1]
        suffix = suffix_of(name)
        if not suffix or name.startswith("."):
            continue
        folder = relative.rsplit("/", 1)[0] if "/" in relative else ""
        if volumes and suffix in DICOM_SUFFIXES:
            parent = folder.rsplit("/", 1)[0] if "/" in folder else ""
            stem = folder.rsplit("/", 1)[-1] or _name(src)
            entry = _Entry(folder, stem, "", masks.role(stem, stem))
            if entry not in folders[parent]:
                folders[parent].append(entry)
            continue
        stem = name[: len(name) - len(suffix)]
        folders[folder].append(_Entry(relative, stem, suffix, masks.role(name, stem)))
    masks_by_stem = {
        entry.stem.lower(): entry
        for entries in folders.values()
        for entry in entries
        if entry.role not in ("image", None)
    }
    src_name = _name(src)
    cases: list[CaseSource] = []
    for folder, entries in sorted(folders.items()):
        images = [e for e in entries if e.role == "image"]
        mask_entries = [e for e in entries if e.role not in ("image", None)]
        label = _folder_label(src_name, folder)
        modalities = set().union(*(modality_of(e.tokens) for e in images)) if images else set()
        label_folder = folder.rsplit("/", 1)[-1].lower() in LABEL_FOLDERS
        if folder and images and not label_folder and (mask_entries or len(images) == 1 or len(modalities) >= 2):
            cases.append(_case_folder(src, folder, images, mask_entries, modality, label))
        else:
            cases += [_flat_case(src, e, masks_by_stem, label) for e in images if matches_modality(e.tokens, modality)]
    return sorted(_unique_ids(src, cases), key=lambda case: case.case_id)


def _unique_ids(src: str, cases: list[CaseSource]) -> list[CaseSource]:
    """The cases, those sharing an id renamed `<id>-<8 hex digits of their image path's sha256>` (rule 7)."""
    ids = [case.case_id for case in cases]
    shared = {case_id for case_id in ids if ids.count(case_id) > 1}
    for case_id in sorted(shared):
        log.warning("%s: several cases clean to the id %s; each gets a suffix of its own", src, case_id)

    def unique(case: CaseSource) -> CaseSource:
        relative = case.image[len(str(src)) :].strip("/")
        digest = hashlib.sha256(relative.encode("utf-8")).hexdigest()[:8]
        return dataclasses.replace(case, case_id=f"{case.case_id}-{digest}")

    return [unique(case) if case.case_id in shared else case for case in cases]


def _name(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def _uri(src: str, entries: list[_Entry]) -> str | None:
    """The URI of the first entry (SRC itself for a series filling it), None when there is none."""
    if not entries:
        return None
    return storage.join(src, entries[0].path) if entries[0].path else str(src)


def _folder_label(src_name: str, folder: str) -> int | None:
    for part in reversed([src_name, *folder.split("/")]):
        if part.lower() in LABEL_FOLDERS:
            return LABEL_FOLDERS[part.lower()]
    return None


def _case_folder(
    src: str, folder: str, images: list[_Entry], masks: list[_Entry], modality: str | None, label: int | None
) -> CaseSource:
    case_id = case_id_of(folder)
    chosen = [e for e in images if matches_modality(e.tokens, modality)]
    problem = None
    if len(chosen) != 1:
        names = ", ".join(e.name for e in images)
        problem = (
            f"no image matches modality {modality!r} among {names}"
            if not chosen and modality
            else f"several images ({names}): choose one with --modality"
        )
    by_role = {role: [e for e in masks if e.role == role] for role in ("brain_mask", "lesion")}
    for role, found in by_role.items():
        if len(found) > 1:
            problem = problem or (
                f"several {role.replace('_', ' ')} files ({', '.join(e.name for e in found)}): "
                f"name the {role.replace('_', ' ')} with {ROLE_OPTIONS[role]} GLOB"
            )
    image = _uri(src, chosen) if len(chosen) == 1 else storage.join(src, folder)
    return CaseSource(case_id, image, _uri(src, by_role["brain_mask"]), _uri(src, by_role["lesion"]), label, problem)


def _flat_case(src: str, entry: _Entry, masks_by_stem: dict[str, _Entry], label: int | None) -> CaseSource:
    found: dict[str, str] = {}
    prefix = entry.stem.lower() + "_"
    for stem, mask in masks_by_stem.items():
        if stem.startswith(prefix):
            found.setdefault(mask.role, _uri(src, [mask]))
    without_suffix = entry.path[: len(entry.path) - len(entry.suffix)]
    return CaseSource(
        case_id_of(without_suffix or entry.stem),
        _uri(src, [entry]),
        found.get("brain_mask"),
        found.get("lesion"),
        label,
    )
