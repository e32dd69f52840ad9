"""Full-resolution disparity from a 1/4-resolution matching cost: upsample, softmax, soft-argmax.

Two evaluations of the same function: the plain one materialises the N×D×H×W probability volume
(≈ 400 MB per image at 544×960, D = 192, plus the upsampled cost beside it); the chunked one walks
over bands of rows so that only a band's volume exists at a time. Trilinear upsampling by exactly ×4
with ``align_corners=False`` is shift-invariant, so a band of 1/4-resolution rows plus a one-row halo
on each side reproduces the plain path's values exactly (the halo rows' outputs are discarded).

Training upsamples with ``upsample_trilinear`` (``interpolation.py``): the same interpolation as
three 1-D matrix products, whose backward is deterministic on CUDA and fast on CPU. The soft-argmax is
plain autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .interpolation import upsample_trilinear

# Confidence = probability mass of the bins round(d̂)-2 .. round(d̂)+2 (±2 px around the estimate):
# near 1 for a single sharp mode, low for flat or multi-modal distributions.
CONFIDENCE_RADIUS = 2
UPSAMPLING = 4  # the cost volume lives at 1/4 resolution in disparity, height and width


def regress_disparity(
    cost: torch.Tensor,
    max_disp: int,
    height: int,
    width: int,
    align_corners: bool = False,
    return_confidence: bool = False,
    chunk_rows: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """N×1×D/4×H/4×W/4 cost → N×H×W disparity Σ_d d·softmax_d(cost), d = 0..max_disp-1.

    Trilinear upsampling to max_disp×H×W (``align_corners`` explicit: the authors' current weights
    expect False), softmax over the disparity axis in fp32 even under autocast. With
    ``return_confidence`` also returns an N×H×W confidence in [0, 1] (see ``CONFIDENCE_RADIUS``).
    ``chunk_rows`` (1/4-resolution rows per band) bounds memory; it applies when the band walk is
    exact (``align_corners=False``, ×4 in every axis) and the call is not being traced for export,
    and otherwise the plain path runs.
    """
    if torch.is_grad_enabled() and cost.requires_grad and not torch.jit.is_tracing():
        upsampled = upsample_trilinear(cost, (max_disp, height, width), align_corners)
        return _soft_argmax(upsampled, max_disp, return_confidence)
    rows = cost.shape[-2]
    exact_bands = (
        not align_corners
        and tuple(cost.shape[-3:]) == (max_disp // UPSAMPLING, height // UPSAMPLING, width // UPSAMPLING)
        and max_disp % UPSAMPLING == 0 and height % UPSAMPLING == 0 and width % UPSAMPLING == 0
    )
    if chunk_rows is None or chunk_rows >= rows or not exact_bands or torch.jit.is_tracing():
        cost = F.interpolate(cost, size=(max_disp, height, width), mode="trilinear", align_corners=align_corners)
        return _soft_argmax(cost, max_disp, return_confidence)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive number of rows, got {chunk_rows}")
    bands = [_regress_band(cost, start, min(start + chunk_rows, rows), max_disp, return_confidence)
             for start in range(0, rows, chunk_rows)]
    if not return_confidence:
        return torch.cat(bands, dim=1)
    return torch.cat([b[0] for b in bands], dim=1), torch.cat([b[1] for b in bands], dim=1)


def _regress_band(
    cost: torch.Tensor, start: int, stop: int, max_disp: int, return_confidence: bool
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Rows start·4 .. stop·4 of the full-resolution result, from 1/4 rows start-1 .. stop (halo)."""
    first, last = max(start - 1, 0), min(stop + 1, cost.shape[-2])
    band = F.interpolate(cost[..., first:last, :], scale_factor=float(UPSAMPLING), mode="trilinear",
                         align_corners=False)
    offset = (start - first) * UPSAMPLING
    band = band[..., offset:offset + (stop - start) * UPSAMPLING, :]
    return _soft_argmax(band, max_disp, return_confidence)


def _levels(prob: torch.Tensor) -> torch.Tensor:
    """The disparity of each bin: 0, 1, ..., D-1."""
    return torch.arange(prob.shape[1], dtype=prob.dtype, device=prob.device)


def _soft_argmax(
    cost: torch.Tensor, max_disp: int, return_confidence: bool
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """N×1×D×h×w upsampled cost → N×h×w disparity (and confidence)."""
    # fp32 even under autocast: a bf16 soft-argmax would quantise disparities to ~0.5 px steps.
    with torch.autocast(device_type=cost.device.type, enabled=False):
        prob = torch.softmax(cost.squeeze(1).float(), dim=1)  # N×D×H×W
        del cost
        disparity = torch.einsum("ndhw,d->nhw", prob, _levels(prob))
        if not return_confidence:
            return disparity
        offsets = torch.arange(-CONFIDENCE_RADIUS, CONFIDENCE_RADIUS + 1, device=prob.device).view(1, -1, 1, 1)
        bins = disparity.detach().round().long().unsqueeze(1) + offsets  # N×5×H×W
        inside = (bins >= 0) & (bins < max_disp)
        mass = prob.gather(1, bins.clamp(0, max_disp - 1)) * inside
        confidence = mass.sum(dim=1).clamp(0.0, 1.0)
    return disparity, confidence
