"""`lightwork predict` over many scans: one split's ensemble through Ray Data, GPUs when present.

One scan (or `in_process=True`) runs in this process with no Ray (`lightwork.inference.predict`);
a folder or bucket of cases runs as one Ray Data pipeline of tasks, one case each, whose worker
processes load the ensemble once (`lightwork.distributed.evaluate.process_cached`, from the run
folder or package URI, so the weights never travel through the object store) and run
`predict_case`; cases go in and rows come back as JSON strings (one column type whatever a case
holds) into OUT/scores.csv and scores.json. Tasks ask for the CPU and GPU shares of
`lightwork.distributed.evaluate.inference_options` (see shared/ray-notes.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import ray

from lightwork.data.discover import CaseSource
from lightwork.distributed.evaluate import inference_options, process_cached
from lightwork.errors import UserError
from lightwork.inference import predict as inference
from lightwork.inference.package import load_ensemble


def predict_sources(
    batch: dict[str, np.ndarray], models: str, split: str | None, threshold: float | None, out: str
) -> dict[str, list[str]]:
    """Ray Data task: `predict_case` over a batch of cases with the ensemble (loaded once per process).

    Batch in: {"source": JSON of a CaseSource [B]}. Batch out: {"result": JSON of a CaseResult [B]}
    (JSON both ways: a column of optional strings would come back as NaN floats).
    """
    ensemble = process_cached(("ensemble", models, split, threshold), lambda: _load(models, split, threshold))
    results = []
    for source in batch["source"]:
        result = inference.predict_case(ensemble, CaseSource(**json.loads(source)), out)
        results.append(json.dumps({"row": result.row, "seconds": result.seconds}))
    return {"result": results}


def _load(models: str, split: str | None, threshold: float | None):
    import torch

    return load_ensemble(models, split, threshold).to("cuda" if torch.cuda.is_available() else "cpu")


def predict_on_ray(
    models: str,
    split: str | None,
    threshold: float | None,
    sources: list[CaseSource],
    out: str,
    workers: int = 1,
    progress: bool = True,
    verbose: bool = False,
) -> list[inference.CaseResult]:
    """`predict_case` for every source on the connected Ray cluster; results in source order."""
    from tqdm import tqdm

    items = [{"source": json.dumps(asdict(source))} for source in sources]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * workers)))
    predicted = dataset.map_batches(
        predict_sources,
        fn_kwargs={"models": models, "split": split, "threshold": threshold, "out": out},
        batch_size=1,
        **inference_options(workers),
    )
    results = {}
    for record in tqdm(predicted.iter_rows(), total=len(items), desc="predict", unit="case", disable=not progress):
        decoded = json.loads(record["result"])
        results[decoded["row"]["case"]] = inference.CaseResult(decoded["row"], decoded["seconds"])
    return [results[source.case_id] for source in sources]


def predict(
    input_uri: str,
    out: str,
    models: str,
    split: str | None = None,
    threshold: float | None = None,
    modality: str | None = None,
    in_process: bool = False,
    workers: int = 1,
    progress: bool = True,
    verbose: bool = False,
) -> list[inference.CaseResult]:
    """Predict every case at `input_uri` into `out` (maps, masks, scores.csv/json; see
    `lightwork.inference.predict`) with the ensemble of `split` in `models` (run or package).

    One case, or `in_process`: in this process, no Ray. Several: through Ray Data on the cluster
    (`lightwork.distributed.cluster.connected`: attached, or a local one started and stopped here).
    Raises UserError for a bad source of models or inputs; a single case that fails raises its error
    line, in a folder it is a failed row.
    """
    ensemble = load_ensemble(models, split, threshold)
    sources = inference.find_inputs(input_uri, volumes=ensemble.input_dims == 3, modality=modality)
    if len(sources) == 1 or in_process:
        results = inference.predict_in_process(ensemble, sources, out, progress)
    else:
        from lightwork.distributed.cluster import connected

        del ensemble  # each worker process loads its own
        with connected(verbose=verbose):
            results = predict_on_ray(models, split, threshold, sources, out, workers, progress)
    inference.write_scores(out, [result.row for result in results])
    if len(sources) == 1 and results[0].row["status"] == "failed":
        raise UserError(results[0].row["error"])
    return results
