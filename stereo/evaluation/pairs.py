"""Score any disparity method — one of our networks or StereoSGBM — on raw stereo samples, per image.

One routine for every comparison (the ablation, the demo checkpoint against SGBM), so all methods
see the same pixels under the same rule:

- full resolution, no resizing: each method gets the sample's uint8 RGB pair as it is on disk;
- per-sample search range ``max_disp`` = the GT maximum rounded *up* to the next multiple of 16
  (strictly above it), capped at ``cap`` (192 by default) — recorded per image;
- scored pixels: the dataset's ``valid`` AND ``0 < gt < max_disp`` (:func:`stereo.evaluation.metrics.evaluation_mask`);
- metrics from :mod:`stereo.evaluation.metrics` (EPE, bad-1/2/3, KITTI D1) per image, then the mean
  over images (every image weighs the same, whatever its number of GT pixels);
- methods return a dense map (SGBM's holes are filled, :func:`stereo.baselines.fill_invalid`) and
  optionally their raw valid mask, from which ``coverage`` (% of scored pixels the method itself
  matched) and ``raw_epe`` (EPE over those pixels only) are reported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from torch.utils.data import Dataset
from tqdm import tqdm

from stereo.baselines import SGBMMatcher, SGBMParams, round_max_disp
from stereo.evaluation import metrics

# (left uint8 H×W×3, right uint8 H×W×3, max_disp) -> (dense disparity H×W, raw valid H×W or None = all)
DisparityMethod = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, "np.ndarray | None"]]
DEFAULT_CAP = 192


def sample_max_disp(disparity: np.ndarray, valid: np.ndarray, cap: int = DEFAULT_CAP) -> int:
    """The search range for one sample: its largest valid GT disparity rounded up past a multiple of 16, ≤ cap."""
    gt = np.asarray(disparity)[np.asarray(valid, dtype=bool) & np.isfinite(disparity)]
    return round_max_disp(float(gt.max()) if gt.size else 0.0, cap=cap)


def sgbm_method(params: SGBMParams | None = None) -> DisparityMethod:
    """StereoSGBM with the tuned defaults (or ``params``) as a :data:`DisparityMethod`."""

    def run(left: np.ndarray, right: np.ndarray, max_disp: int) -> tuple[np.ndarray, np.ndarray]:
        return SGBMMatcher(max_disp, params).predict(left, right)

    return run


def network_method(predictor: Any) -> DisparityMethod:
    """A :class:`stereo.inference.Predictor` as a :data:`DisparityMethod` (search range set per sample)."""

    def run(left: np.ndarray, right: np.ndarray, max_disp: int) -> tuple[np.ndarray, None]:
        predictor.set_max_disp(max_disp)
        return predictor.predict(left, right).disparity, None

    return run


def evaluate_method(
    method: DisparityMethod,
    dataset: Dataset,
    cap: int = DEFAULT_CAP,
    names: Iterable[str] | None = None,
    desc: str = "evaluate",
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``method`` on every raw sample of ``dataset`` (or those whose name is in ``names``).

    Returns ``{"rows": [per-image dict], "summary": {mean over images ...}, "protocol": {...}}``.
    """
    wanted = set(names) if names is not None else None
    indices = [i for i in range(len(dataset)) if wanted is None or _name(dataset, i) in wanted]
    if not indices:
        raise ValueError(f"no sample to evaluate (dataset of {len(dataset)}, names {sorted(wanted or [])})")
    rows = []
    for index in tqdm(indices, desc=desc, unit="pair", disable=not progress):
        sample = dataset[index]
        rows.append(score_sample(method, sample, cap))
    return {"rows": rows, "summary": summarize(rows), "protocol": protocol_record(cap)}


def score_sample(method: DisparityMethod, sample: Mapping[str, Any], cap: int = DEFAULT_CAP) -> dict[str, Any]:
    """One raw sample (docs/data.md#sample-format) -> its metric row."""
    gt, valid = np.asarray(sample["disparity"], np.float32), np.asarray(sample["valid"], bool)
    max_disp = sample_max_disp(gt, valid, cap)
    started = time.perf_counter()
    prediction, raw_valid = method(sample["left"], sample["right"], max_disp)
    seconds = time.perf_counter() - started
    prediction = np.asarray(prediction, np.float32)
    if prediction.shape != gt.shape:
        raise ValueError(f"{sample['name']}: method returned {prediction.shape}, ground truth is {gt.shape}")
    mask = metrics.evaluation_mask(gt, valid, 0.0, float(max_disp))
    row: dict[str, Any] = {"name": sample["name"], "height": gt.shape[0], "width": gt.shape[1],
                           "max_disp": max_disp, "gt_max": float(gt[valid].max()) if valid.any() else math.nan}
    row.update({k: float(v[0]) for k, v in metrics.all_metrics(prediction, gt, mask).items()})
    if raw_valid is None:
        row["coverage"], row["raw_epe"] = 100.0, row["epe"]
    else:
        raw_mask = mask.numpy() & np.asarray(raw_valid, bool)
        scored = max(int(mask.sum()), 1)
        row["coverage"] = 100.0 * int(raw_mask.sum()) / scored
        row["raw_epe"] = float(metrics.epe(prediction, gt, raw_mask)[0])
    row["seconds"] = seconds
    return row


def summarize(rows: list[Mapping[str, Any]]) -> dict[str, float]:
    """Mean over images of every metric (images without a scored pixel excluded), plus coverage/time."""
    summary = metrics.summarize(rows, "per_image")
    for key in ("coverage", "raw_epe"):
        summary[key] = metrics.mean_over_images([float(r[key]) for r in rows])[0]
    summary["seconds"] = float(sum(r["seconds"] for r in rows))
    return summary


def protocol_record(cap: int) -> dict[str, Any]:
    """The rule, written next to every result so the numbers can be compared (or not) knowingly."""
    return {
        "resolution": "full (no resizing)",
        "max_disp": f"per sample: largest valid GT disparity rounded up past the next multiple of 16, capped at {cap}",
        "mask": "dataset valid AND 0 < gt < max_disp (all pixels with GT, occluded included)",
        "metrics": "EPE, bad-1/2/3 (% of scored pixels with |e| > tau), D1 (|e| > 3 px and > 5 % of gt)",
        "averaging": "mean over images of per-image values",
        "dense": "methods are scored on dense maps; SGBM holes filled with the row background (KITTI devkit rule)",
    }


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
