"""The one evaluation loop: run a method on each sample, score it under the protocol, record how it ran.

Every evaluation of a whole dataset goes through :func:`score_samples` — ``stereo.evaluate`` and
training's ``evaluate_before``/``evaluate_after`` (a network on a dataset config's tensors,
:func:`stereo.evaluation.runner.evaluate_model`) as well as the ablation, ``compare_real`` and
``tune_sgbm`` (any method, StereoSGBM included, on raw pairs, :func:`stereo.evaluation.methods.evaluate_method`);
validation during training scores its batches with the same :func:`stereo.evaluation.protocols.predict`
and :func:`~stereo.evaluation.protocols.score` inside Lightning's loop. So every row is scored by
``protocols.score`` and carries the same columns: where it came from (``index``, ``name``), the scored
size, what the sample's preparation recorded (e.g. its search range), the metrics, the ``seconds`` the
run took and the ``route`` it took (full image or stitched strips, with the padding) — a route is
always recorded, never assumed. (``per_image.csv`` keeps the route's kind; ``metrics.json`` the whole record.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from tqdm import tqdm

from stereo.evaluation.protocols import Protocol, score

# sample -> (result, route). ``result`` is what protocols.score reads (``prediction``, ``disparity``,
# ``mask``, optionally ``noc_mask`` and ``nonfinite_gt``: batches of one, at the scored resolution) plus
# an optional ``record`` of per-sample values to put in the row before the metrics; ``route`` says how
# the method ran on this sample ({"route": "full image" | "strips", ...}).
SampleRun = Callable[[Mapping[str, Any]], tuple[Mapping[str, Any], dict[str, Any]]]


def score_samples(
    samples: Iterable[tuple[int, str, Mapping[str, Any]]],
    run: SampleRun,
    protocol: Protocol,
    desc: str = "evaluate",
    progress: bool = True,
    total: int | None = None,
) -> Iterator[tuple[dict[str, Any], Mapping[str, Any]]]:
    """Yield ``(row, result)`` for each ``(index, name, sample)``, in order.

    ``seconds`` times ``run`` as a whole (the method and the protocol's padding, crop and masks), the
    same for every method. The result is yielded beside its row for callers that export the map or
    derive more columns from it (SGBM's coverage).
    """
    for index, name, sample in tqdm(samples, desc=desc, unit="img", disable=not progress, total=total):
        started = time.perf_counter()
        result, route = run(sample)
        seconds = time.perf_counter() - started
        prediction = result["prediction"]
        (scores,) = score(result, protocol)
        row = {"index": index, "name": name, "height": int(prediction.shape[-2]), "width": int(prediction.shape[-1]),
               **result.get("record", {}), **scores, "seconds": seconds, "route": route}
        yield row, result
