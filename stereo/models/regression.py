"""Full-resolution disparity from a 1/4-resolution matching cost: upsample, softmax, soft-argmax.

Kept in one small function so that a memory-bounded (chunked) variant can replace it in one place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Confidence = probability mass of the bins round(d̂)-2 .. round(d̂)+2 (±2 px around the estimate):
# near 1 for a single sharp mode, low for flat or multi-modal distributions.
CONFIDENCE_RADIUS = 2


def regress_disparity(
    cost: torch.Tensor,
    max_disp: int,
    height: int,
    width: int,
    align_corners: bool = False,
    return_confidence: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """N×1×D/4×H/4×W/4 cost → N×H×W disparity Σ_d d·softmax_d(cost), d = 0..max_disp-1.

    Trilinear upsampling to max_disp×H×W (``align_corners`` explicit: the authors' current weights
    expect False), softmax over the disparity axis in fp32 even under autocast. With
    ``return_confidence`` also returns an N×H×W confidence in [0, 1] (see ``CONFIDENCE_RADIUS``).
    """
    cost = F.interpolate(cost, size=(max_disp, height, width), mode="trilinear", align_corners=align_corners)
    # fp32 even under autocast: a bf16 soft-argmax would quantise disparities to ~0.5 px steps.
    with torch.autocast(device_type=cost.device.type, enabled=False):
        prob = torch.softmax(cost.squeeze(1).float(), dim=1)  # N×D×H×W
        del cost
        values = torch.arange(max_disp, dtype=prob.dtype, device=prob.device)
        disparity = torch.einsum("ndhw,d->nhw", prob, values)
        if not return_confidence:
            return disparity
        offsets = torch.arange(-CONFIDENCE_RADIUS, CONFIDENCE_RADIUS + 1, device=prob.device).view(1, -1, 1, 1)
        bins = disparity.detach().round().long().unsqueeze(1) + offsets  # N×5×H×W
        inside = (bins >= 0) & (bins < max_disp)
        mass = prob.gather(1, bins.clamp(0, max_disp - 1)) * inside
        confidence = mass.sum(dim=1).clamp(0.0, 1.0)
    return disparity, confidence
