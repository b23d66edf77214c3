"""`lightwork predict` over many scans: one split's ensemble through Ray Data, GPUs when present.

One scan (or `in_process=True`) runs in this process with no Ray (`lightwork.inference.predict`);
a folder or bucket of cases runs as one Ray Data pipeline: an actor pool whose actors load the
ensemble once (from the run folder or package URI, so the weights never travel through the object
store) and run `predict_case` on one case per call; cases go in and rows come back as JSON strings
(one column type whatever a case holds) into OUT/scores.csv and scores.json. Actors ask for
`predict.ACTOR_CPUS` CPUs and `predict.actor_gpus` GPUs (see shared/ray-notes.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import ray

from lightwork.data.discover import CaseSource
from lightwork.distributed.evaluate import ACTOR_CPUS, actor_gpus
from lightwork.errors import UserError
from lightwork.inference import predict as inference
from lightwork.inference.package import load_ensemble


class CasePredictor:
    """Ray Data callable class: loads the ensemble once, predicts a batch of cases.

    Batch in: {"source": JSON of a CaseSource [B]}. Batch out: {"result": JSON of a CaseResult [B]}
    (JSON both ways: a column of optional strings would come back as NaN floats).
    """

    def __init__(self, models: str, split: str | None, threshold: float | None, out: str):
        import torch

        self.ensemble = load_ensemble(models, split, threshold).to("cuda" if torch.cuda.is_available() else "cpu")
        self.out = out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        results = []
        for source in batch["source"]:
            result = inference.predict_case(self.ensemble, CaseSource(**json.loads(source)), self.out)
            results.append(json.dumps({"row": result.row, "seconds": result.seconds}))
        return {"result": results}


def predict_on_ray(
    models: str,
    split: str | None,
    threshold: float | None,
    sources: list[CaseSource],
    out: str,
    actors: int = 1,
    progress: bool = True,
    verbose: bool = False,
) -> list[inference.CaseResult]:
    """`predict_case` for every source on the connected Ray cluster; results in source order."""
    from tqdm import tqdm

    items = [{"source": json.dumps(asdict(source))} for source in sources]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * actors)))
    predicted = dataset.map_batches(
        CasePredictor,
        fn_constructor_kwargs={"models": models, "split": split, "threshold": threshold, "out": out},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=ACTOR_CPUS,
        num_gpus=actor_gpus(actors),
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
    actors: int = 1,
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

        del ensemble  # each actor loads its own
        with connected(verbose=verbose):
            results = predict_on_ray(models, split, threshold, sources, out, actors, progress)
    inference.write_scores(out, [result.row for result in results])
    if len(sources) == 1 and results[0].row["status"] == "failed":
        raise UserError(results[0].row["error"])
    return results
