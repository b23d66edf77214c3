"""`lightwork prepare` on Ray: cases fanned out to tasks, a progress bar, a restartable manifest.

Cases are found with `lightwork.data.discover`, prepared by `lightwork.data.prepare.prepare_cases`
in Ray tasks (one case each, or a few when there are thousands) asking for a fraction of a CPU
(see shared/ray-notes.md), and recorded in `DST/manifest.parquet`. Re-running the same command
skips cases whose raw files and recipe did not change; the manifest is also written every
`checkpoint_seconds` while cases finish, so an interrupted run loses at most that much work. A
failed case is recorded with its error and the run goes on; a crashed Ray task counts as a failed
case too.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from lightwork.data import manifest, storage
from lightwork.data.discover import MaskPatterns, discover_cases
from lightwork.data.prepare import CaseResult, base_row, check_destination, prepare_cases, with_folds
from lightwork.data.recipes import Recipe

CPUS_PER_CASE = 0.5
TASKS_PER_SLOT = 8  # tasks per concurrently running task: balances load, amortises per-task overhead


def cases_per_task(cases: int, slots: float) -> int:
    """Cases per Ray task: about TASKS_PER_SLOT tasks for each task that can run at once, so that
    thousands of small 2D cases do not pay Ray's per-task overhead each, and few cases still spread."""
    return max(1, cases // max(1, int(slots * TASKS_PER_SLOT)))


def crashed(source, recipe: Recipe, error: Exception) -> CaseResult:
    """The failed result of a case whose Ray task died (worker crash, lost object, ...)."""
    row = base_row(source, recipe)
    row["error"] = f"case {source.case_id}: Ray task failed ({type(error).__name__}: {str(error).splitlines()[0]})"
    return CaseResult(row, False, 0.0)


@dataclass
class PrepareSummary:
    """The outcome of one prepare run. `failed` is [(case_id, error)] in case order."""

    manifest_uri: str
    prepared: int
    skipped: int
    failed: list[tuple[str, str]]
    seconds: float

    @property
    def total(self) -> int:
        return self.prepared + self.skipped + len(self.failed)

    def lines(self) -> list[str]:
        rate = self.prepared / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"prepared {self.prepared}, reused {self.skipped}, failed {len(self.failed)} of {self.total} cases "
            f"in {self.seconds:.1f} s ({rate:.2f} prepared cases/s); manifest {self.manifest_uri}"
        ]
        lines += [f"  FAILED {case_id}: {error}" for case_id, error in self.failed]
        return lines


def previous_rows(dst: str) -> dict[str, dict]:
    """Rows of an existing manifest under `dst` by case id (empty when there is none)."""
    if not storage.exists(manifest.manifest_uri(dst)):
        return {}
    return {row["case_id"]: row for row in manifest.read_manifest(dst)}


def prepare_dataset(
    src: str,
    dst: str,
    recipe: Recipe,
    modality: str | None = None,
    limit: int | None = None,
    cpus_per_case: float = CPUS_PER_CASE,
    progress: bool = True,
    checkpoint_seconds: float = 30.0,
    masks: MaskPatterns = MaskPatterns(),
) -> PrepareSummary:
    """Prepare every case under `src` into `dst` with one Ray task each (Ray must be initialised).

    The manifest lists exactly the cases found now (the first `limit` when given); `masks` name
    the mask files (lightwork.data.discover rule 2). Raises UserError, before any case is
    prepared, when `dst` cannot be written, and ValueError when `src` holds no case.
    """
    import ray
    from tqdm import tqdm

    clock = time.perf_counter()
    # Local paths become absolute: workers (and later jobs) may run in another working folder.
    src, dst = (uri if storage.is_remote(uri) else os.path.abspath(uri) for uri in (src, dst))
    check_destination(dst)
    sources = discover_cases(src, modality, volumes=recipe.name == "brain", masks=masks)
    if limit is not None:
        sources = sources[:limit]
    if not sources:
        wanted = f" matching modality {modality!r}" if modality else ""
        raise ValueError(f"{src}: no cases found{wanted} (see lightwork.data.discover for the layout rules)")
    previous = previous_rows(dst)
    # Tasks reach object storage with the credentials of their own environment, never a runtime_env
    # (which Ray shows in its dashboard and state API).
    task = ray.remote(num_cpus=cpus_per_case, max_retries=1)(prepare_cases)
    size = cases_per_task(len(sources), ray.cluster_resources().get("CPU", 1.0) / cpus_per_case)
    chunks = [sources[start : start + size] for start in range(0, len(sources), size)]
    pending = {task.remote(chunk, recipe, dst, [previous.get(s.case_id) for s in chunk]): chunk for chunk in chunks}
    # Checkpoints list finished cases and earlier rows of the unfinished ones, never placeholders.
    rows = {source.case_id: previous[source.case_id] for source in sources if source.case_id in previous}
    results: list[CaseResult] = []
    last_write = time.monotonic()
    with tqdm(total=len(sources), desc=f"prepare {recipe.name}", unit="case", disable=not progress) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=checkpoint_seconds)
            for ref in done:
                chunk = pending.pop(ref)
                try:
                    finished = ray.get(ref)
                except (
                    ray.exceptions.RayTaskError,
                    ray.exceptions.WorkerCrashedError,
                    ray.exceptions.RayActorError,
                    ray.exceptions.ObjectLostError,
                ) as error:
                    finished = [crashed(source, recipe, error) for source in chunk]
                results += finished
                rows.update((result.row["case_id"], result.row) for result in finished)
                bar.update(len(chunk))
            if pending and time.monotonic() - last_write > checkpoint_seconds:
                manifest.write_manifest(dst, with_folds(list(rows.values())))
                last_write = time.monotonic()
    uri = manifest.write_manifest(dst, with_folds(list(rows.values())))
    failed = sorted((r.row["case_id"], r.row["error"]) for r in results if r.row["status"] != "ok")
    prepared = sum(1 for r in results if r.row["status"] == "ok" and not r.skipped)
    skipped = sum(1 for r in results if r.skipped)
    return PrepareSummary(uri, prepared, skipped, failed, time.perf_counter() - clock)
