"""Stitching strips back into one image: each strip is run alone (padded as the network needs), and
neighbouring strips cross-fade linearly over their overlap.

Strips cut the vertical context of the network (PSMNet's SPP pools up to 256 px, the 3-D hourglasses
reach further), so the result approximates the full-image one; the overlap hides most of the seams
(docs/inference.md#high-resolution-images-within-a-memory-budget).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from stereo.inference.strips import strip_starts

# N×3×h×W normalised left, right -> (N×h×W disparity, N×h×W confidence)
Run = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def run_in_strips(run: Run, left: torch.Tensor, right: torch.Tensor, strip: int, overlap: int,
                  after_first: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``run`` over full-width strips of ``strip`` rows overlapping by ``overlap``, blended into
    N×H×W disparity and confidence; ``after_first(count)`` is called once the first strip is done."""
    batch, _, height, width = left.shape
    starts = strip_starts(height, strip, overlap)
    disparity = torch.zeros(batch, height, width)
    confidence = torch.zeros(batch, height, width)
    weight_sum = torch.zeros(height, 1)
    for index, start in enumerate(starts):
        stop = min(start + strip, height)
        d, c = run(left[..., start:stop, :], right[..., start:stop, :])
        if index == 0 and after_first is not None:
            after_first(len(starts))
        w = blend_weights(stop - start, overlap, first=start == 0, last=stop == height)
        disparity[:, start:stop] += d * w
        confidence[:, start:stop] += c * w
        weight_sum[start:stop] += w
    return disparity / weight_sum, confidence / weight_sum


def blend_weights(rows: int, overlap: int, first: bool, last: bool) -> torch.Tensor:
    """rows×1 weights: linear ramps over the overlaps so neighbouring strips cross-fade."""
    weights = torch.ones(rows, 1)
    ramp = torch.linspace(0.0, 1.0, overlap + 2)[1:-1, None] if overlap else torch.ones(0, 1)
    if not first and overlap:
        weights[:overlap] = ramp
    if not last and overlap:
        weights[-overlap:] = ramp.flip(0)
    return weights
