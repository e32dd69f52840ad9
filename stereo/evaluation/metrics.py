"""Disparity error metrics as pure functions (torch tensors or numpy arrays in, tensors out).

Conventions, stated once because papers differ (docs/evaluation.md#metrics):
- Inputs are H×W or N×H×W; an H×W input is treated as one image. Results are per image (shape N)
  unless ``pooled=True`` (one value over every valid pixel of the batch).
- ``mask`` says which pixels count; build it with :func:`evaluation_mask` (dataset ``valid`` AND gt
  range AND optionally the non-occluded mask). Non-finite predictions or gt inside the mask count as
  invalid pixels (never silently as 0 error).
- Rates (bad-τ, D1) are percentages of the valid pixels.
- An image without any valid pixel yields NaN; :func:`mean_over_images` and :func:`summarize`
  exclude those explicitly and report how many were excluded.
- Non-finite ground truth (NaN/inf pixels: a broken or partial gt file) is never scored, and never
  dropped silently either: ``nonfinite_gt`` counts those pixels per image, and the summary reports
  the total and how many images have any.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch

BAD_THRESHOLDS = (1.0, 2.0, 3.0)
METRIC_NAMES = ("epe", "bad1", "bad2", "bad3", "d1")
AVERAGING_MODES = ("per_image", "pooled", "per_batch")

ArrayLike = torch.Tensor | np.ndarray


def _as_batch(x: ArrayLike) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3:
        raise ValueError(f"expected H×W or N×H×W, got shape {tuple(t.shape)}")
    return t


def evaluation_mask(
    gt: ArrayLike,
    valid: ArrayLike | None = None,
    min_disp: float | None = 0.0,
    max_disp: float | None = None,
    noc: ArrayLike | None = None,
) -> torch.Tensor:
    """Pixels to score: finite gt with ``min_disp < gt < max_disp`` (None = no bound), AND ``valid``, AND ``noc``."""
    gt_t = torch.as_tensor(gt)
    mask = torch.isfinite(gt_t)
    if min_disp is not None:
        mask &= gt_t > min_disp
    if max_disp is not None:
        mask &= gt_t < max_disp
    if valid is not None:
        mask &= torch.as_tensor(valid).bool()
    if noc is not None:
        mask &= torch.as_tensor(noc).bool()
    return mask


def _masked_error(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    pred_t, gt_t = _as_batch(pred).double(), _as_batch(gt).double()
    mask_t = _as_batch(mask).bool()
    if not (pred_t.shape == gt_t.shape == mask_t.shape):
        raise ValueError(
            f"shapes differ: prediction {tuple(pred_t.shape)}, gt {tuple(gt_t.shape)}, mask {tuple(mask_t.shape)}"
        )
    error = (pred_t - gt_t).abs()
    mask_t = mask_t & torch.isfinite(error)
    return torch.where(mask_t, error, torch.zeros_like(error)), mask_t


def _reduce(hits: torch.Tensor, mask: torch.Tensor, pooled: bool) -> torch.Tensor:
    """Mean of ``hits`` over ``mask`` per image (or pooled); NaN where there is no valid pixel."""
    dims = (0, 1, 2) if pooled else (1, 2)
    count = mask.sum(dim=dims).double()
    total = (hits * mask).sum(dim=dims).double()
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


def valid_pixel_count(mask: ArrayLike) -> torch.Tensor:
    """Number of scored pixels per image (shape N)."""
    return _as_batch(mask).bool().sum(dim=(1, 2))


def nonfinite_count(gt: ArrayLike) -> torch.Tensor:
    """Number of NaN/inf ground-truth pixels per image (shape N)."""
    return (~torch.isfinite(_as_batch(gt))).sum(dim=(1, 2))


def epe(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike, pooled: bool = False) -> torch.Tensor:
    """End-point error: mean |pred − gt| over the mask, in pixels."""
    error, mask_t = _masked_error(pred, gt, mask)
    return _reduce(error, mask_t, pooled)


def bad_pixel_rate(
    pred: ArrayLike, gt: ArrayLike, mask: ArrayLike, threshold: float, pooled: bool = False
) -> torch.Tensor:
    """bad-τ: percentage of masked pixels with |pred − gt| > τ."""
    error, mask_t = _masked_error(pred, gt, mask)
    return 100.0 * _reduce((error > threshold).double(), mask_t, pooled)


def d1(
    pred: ArrayLike, gt: ArrayLike, mask: ArrayLike, pooled: bool = False,
    abs_threshold: float = 3.0, rel_threshold: float = 0.05,
) -> torch.Tensor:
    """KITTI D1: percentage of masked pixels with |e| > 3 px AND |e| > 5 % of gt."""
    error, mask_t = _masked_error(pred, gt, mask)
    gt_abs = _as_batch(gt).double().abs()
    outlier = (error > abs_threshold) & (error > rel_threshold * gt_abs)
    return 100.0 * _reduce(outlier.double(), mask_t, pooled)


def all_metrics(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike, pooled: bool = False) -> dict[str, torch.Tensor]:
    """epe, bad1, bad2, bad3, d1, the valid pixel count ``pixels`` and the non-finite gt pixel count
    ``nonfinite_gt``, per image (or pooled)."""
    result = {"epe": epe(pred, gt, mask, pooled)}
    for tau in BAD_THRESHOLDS:
        result[f"bad{tau:g}"] = bad_pixel_rate(pred, gt, mask, tau, pooled)
    result["d1"] = d1(pred, gt, mask, pooled)
    pixels = valid_pixel_count(mask)
    result["pixels"] = pixels.sum().reshape(1) if pooled else pixels
    nonfinite = nonfinite_count(gt)
    result["nonfinite_gt"] = nonfinite.sum().reshape(1) if pooled else nonfinite
    return result


def mean_over_images(values: ArrayLike) -> tuple[float, int]:
    """Mean of per-image values excluding NaN (images without valid pixels); returns (mean, images used)."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    finite = v[~torch.isnan(v)]
    return (finite.mean().item() if finite.numel() else math.nan), int(finite.numel())


def summarize(
    rows: Sequence[Mapping[str, float]],
    averaging: str = "per_image",
    batch_size: int = 8,
    names: Iterable[str] = METRIC_NAMES,
) -> dict[str, float]:
    """Dataset-level numbers from per-image rows (each holding the metrics and ``pixels``).

    - ``per_image``: mean of the per-image values (images without valid pixels excluded);
    - ``pooled``: every valid pixel of the dataset weighs the same (Σ value·pixels / Σ pixels);
    - ``per_batch``: PSMNet's test loop — pooled within consecutive groups of ``batch_size`` rows (in
      the given order), then the mean over groups (groups without valid pixels excluded; the authors'
      code counts them as 0).
    Adds ``count`` (rows), ``scored`` (images with ≥ 1 valid pixel) and ``excluded``; with rows that
    carry ``nonfinite_gt``, also its total and ``nonfinite_gt_images`` (images with any such pixel).
    """
    if averaging not in AVERAGING_MODES:
        raise ValueError(f"averaging must be one of {AVERAGING_MODES}, got {averaging!r}")
    names = list(names)
    pixels = np.array([float(r["pixels"]) for r in rows], dtype=np.float64)
    summary: dict[str, float] = {}
    for name in names:
        values = np.array([float(r[name]) for r in rows], dtype=np.float64)
        if averaging == "per_image":
            summary[name] = mean_over_images(values)[0]
        else:
            group = len(rows) if averaging == "pooled" else batch_size
            means = []
            for start in range(0, len(rows), max(group, 1)):
                v, p = values[start:start + group], pixels[start:start + group]
                keep = p > 0
                if keep.any():
                    means.append(float((v[keep] * p[keep]).sum() / p[keep].sum()))
            summary[name] = float(np.mean(means)) if means else math.nan
    scored = int((pixels > 0).sum())
    summary.update(count=len(rows), scored=scored, excluded=len(rows) - scored)
    if rows and all("nonfinite_gt" in r for r in rows):
        nonfinite = np.array([float(r["nonfinite_gt"]) for r in rows])
        summary.update(nonfinite_gt=int(nonfinite.sum()), nonfinite_gt_images=int((nonfinite > 0).sum()))
    return summary
