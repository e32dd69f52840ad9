"""Score any disparity method — one of our networks or StereoSGBM — on raw stereo samples, per image.

One routine for every comparison (the ablation, compare_real, tune_sgbm), so all methods see the
same pixels under the same rule, the ``pairs`` protocol (:mod:`stereo.evaluation.protocols`, written
verbatim next to every result):

- full resolution, no resizing: each method gets the sample's uint8 RGB pair as it is on disk;
- per-sample search range (``max_disp_rule="per_sample"``): the GT maximum rounded *up* past the
  next multiple of 16, capped at the protocol's ``max_disp`` (192; :meth:`Protocol.with_cap`) — recorded per image;
- scored pixels: the dataset's ``valid`` AND ``0 < gt < max_disp`` (:func:`stereo.evaluation.metrics.evaluation_mask`);
- metrics from :mod:`stereo.evaluation.metrics` (EPE, bad-1/2/3, KITTI D1) per image, combined as the
  protocol says (mean over images: every image weighs the same, whatever its number of GT pixels);
- methods return a dense map (SGBM's holes are filled, :func:`stereo.evaluation.sgbm.fill_invalid`) and
  optionally their raw valid mask, from which ``coverage`` (% of scored pixels the method itself
  matched) and ``raw_epe`` (EPE over those pixels only) are reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from stereo.evaluation import metrics
from stereo.evaluation.loop import SampleRun, score_samples
from stereo.evaluation.protocols import Protocol, get_protocol
from stereo.evaluation.sgbm import SGBMMatcher, SGBMParams

# (left uint8 H×W×3, right uint8 H×W×3, max_disp) -> (dense disparity H×W, raw valid H×W or None = all,
# route: how the method ran on this pair, recorded in its row: {"route": "full image" | "strips", ...})
DisparityMethod = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, "np.ndarray | None", dict]]
PAIRS = get_protocol("pairs")
DEFAULT_CAP = int(PAIRS.max_disp)


def sgbm_method(params: SGBMParams | None = None) -> DisparityMethod:
    """StereoSGBM with the tuned defaults (or ``params``) as a :data:`DisparityMethod`."""
    params = params or SGBMParams()

    def run(left: np.ndarray, right: np.ndarray, max_disp: int) -> tuple[np.ndarray, np.ndarray, dict]:
        padding = {"mode": "left, replicated", "columns": max_disp} if params.pad_left else None
        return (*SGBMMatcher(max_disp, params).predict(left, right), {"route": "full image", "padding": padding})

    return run


SEARCH_RANGES = ("pair", "network")


def network_method(predictor: Any, search_range: str = "pair", allow_strips: bool = False) -> DisparityMethod:
    """A :class:`stereo.inference.Predictor` as a :data:`DisparityMethod`.

    ``search_range``: ``pair`` runs the network over the sample's own range (what the protocol scores);
    ``network`` runs it over the predictor's own range (at the size it runs: a narrow pair may run
    enlarged, ``Predictor(min_width=...)``) and over more only when the sample needs it: a network
    that regresses at 1/8 keeps its levels on a 16-px pair instead of having two (docs/evaluation.md).
    Scoring masks at the sample's range either way.

    A pair runs as one full image. One whose estimate exceeds the predictor's ``max_memory_gb`` is
    refused, naming the options, unless ``allow_strips``: stitched strips only approximate the
    full-image result, so an evaluation never switches to them silently (the route is in every row).
    """
    if search_range not in SEARCH_RANGES:
        raise ValueError(f"search_range must be one of {SEARCH_RANGES}, got {search_range!r}")

    def run(left: np.ndarray, right: np.ndarray, max_disp: int) -> tuple[np.ndarray, None, dict]:
        # network: the predictor's own range (at the size it runs) unless the pair needs more
        own = search_range == "network" and max_disp <= predictor.covered_range(left.shape[1])
        searched = None if own else max_disp
        route = predictor.route(*left.shape[:2], max_disp=searched)
        if route["route"] != "full image" and not allow_strips:
            raise ValueError(f"a {left.shape[1]}x{left.shape[0]} pair with max_disp {searched or predictor.max_disp} needs about "
                             f"{route['full_image_gb']:g} GB as one image, more than max_memory_gb="
                             f"{predictor.max_memory_gb:g}: evaluations score full images; raise max_memory_gb, or "
                             "allow_strips=true to score stitched strips (an approximation, recorded per pair)")
        return predictor.predict(left, right, max_disp=searched).disparity, None, route

    return run


def evaluate_method(
    method: DisparityMethod,
    dataset: Dataset,
    cap: int = DEFAULT_CAP,
    names: Iterable[str] | None = None,
    desc: str = "evaluate",
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``method`` on every raw sample of ``dataset`` (or those whose name is in ``names``) under
    the ``pairs`` protocol with search ranges capped at ``cap``.

    Returns ``{"rows": [per-image dict], "summary": {...}, "protocol": the protocol's record}``.
    """
    protocol = PAIRS.with_cap(cap)
    wanted = set(names) if names is not None else None
    indices = [i for i in range(len(dataset)) if wanted is None or _name(dataset, i) in wanted]
    if not indices:
        raise ValueError(f"no sample to evaluate (dataset of {len(dataset)}, names {sorted(wanted or [])})")
    samples = ((index, sample["name"], sample) for index, sample in ((i, dataset[i]) for i in indices))
    rows = []
    for row, result in score_samples(samples, raw_sample_run(method, protocol), protocol, desc=desc,
                                     progress=progress, total=len(indices)):
        row.update(_coverage(row, result))
        rows.append(row)
    return {"rows": rows, "summary": summarize(rows, protocol), "protocol": protocol.to_dict()}


def raw_sample_run(method: DisparityMethod, protocol: Protocol = PAIRS) -> SampleRun:
    """``method`` on one raw sample (docs/data.md#sample-format) the ``pairs`` way, for :func:`score_samples`:
    the sample's own search range (recorded as ``max_disp`` beside ``gt_max``), the mask at that range."""

    def run(sample: Mapping[str, Any]) -> tuple[dict[str, Any], dict]:
        gt, valid = np.asarray(sample["disparity"], np.float32), np.asarray(sample["valid"], bool)
        max_disp = protocol.sample_max_disp(gt, valid)
        prediction, raw_valid, route = method(sample["left"], sample["right"], max_disp)
        prediction = np.asarray(prediction, np.float32)
        if prediction.shape != gt.shape:
            raise ValueError(f"{sample['name']}: method returned {prediction.shape}, ground truth is {gt.shape}")
        mask = metrics.evaluation_mask(gt, valid, protocol.min_disp, float(max_disp))
        record = {"max_disp": max_disp, "gt_max": float(gt[valid].max()) if valid.any() else math.nan}
        return {"prediction": prediction[None], "disparity": gt[None], "mask": mask[None], "raw_valid": raw_valid,
                "record": record}, route

    return run


def _coverage(row: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, float]:
    """``coverage`` (% of scored pixels the method matched itself) and ``raw_epe`` (EPE over those only)."""
    if result["raw_valid"] is None:
        return {"coverage": 100.0, "raw_epe": row["epe"]}
    mask = result["mask"][0].numpy()
    raw_mask = mask & np.asarray(result["raw_valid"], bool)
    return {"coverage": 100.0 * int(raw_mask.sum()) / max(int(mask.sum()), 1),
            "raw_epe": float(metrics.epe(result["prediction"][0], result["disparity"][0], raw_mask)[0])}


def summarize(rows: list[Mapping[str, Any]], protocol: Protocol = PAIRS) -> dict[str, float]:
    """Every metric combined the protocol's way (images without a scored pixel excluded), plus coverage/time."""
    summary = protocol.summarize(rows)
    for key in ("coverage", "raw_epe"):
        summary[key] = metrics.mean_over_images([float(r[key]) for r in rows])[0]
    summary["seconds"] = float(sum(r["seconds"] for r in rows))
    summary["routes"] = sorted({r["route"]["route"] for r in rows})
    return summary


def _name(dataset: Dataset, index: int) -> str:
    records = getattr(dataset, "records", None)
    return records[index].name if records is not None else dataset[index]["name"]


def raw_test_dataset(data_cfg: Any) -> Dataset:
    """The raw (untransformed, docs/data.md#sample-format) test split of a data config, generating synthetic data first.

    Uses ``data.test`` when set, else ``data.val`` (the synthetic config scores its TEST split there).
    """
    import hydra

    hydra.utils.instantiate(data_cfg).prepare_data()  # generates exactly as training does
    factory = hydra.utils.instantiate(data_cfg.test if data_cfg.get("test") else data_cfg.val)
    return factory()
