"""A last, full-resolution step of the refinement: sub-pixel precision from a full-resolution matching cost.

A refinement at 1/2 looks its cost up on descriptors of the half-resolution image, where one pixel
is two of the output's, and then upsamples: on real pairs that leaves the well-matched pixels
noisier than StereoSGBM's, whose sub-pixel step works on the full image (the error that separates the
shipped weights from it is almost all in errors under 3 px; docs/model_card.md). This step looks the
cost up again at full resolution, on soft census descriptors of the full-resolution grey image (the
same domain-invariant cost, ``features/census.py``), in a window of ±``radius`` pixels around the
estimate, and a small 2-D network reading [cost, disparity, left image] predicts a correction.

The estimate it is given is detached (a correction of what it is given, as the refinement's own
iterations), and the output layer starts at zero, so the step starts as the identity: added to
trained weights (``init_from`` with ``init_strict=false``) it changes nothing until it has learned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..features.census import CensusFeatures
from .blocks import DilatedBlock, correction_input, correction_stem, local_cost

# A 3x3 window (8 signs): a third of the 5x5 window's look-up cost at full resolution, where the
# look-up and the descriptors are most of this step's time, and only ±radius px to tell apart.
CENSUS_RADIUS = 1
CENSUS_SIGMA = 0.05  # the softness conf/model/ea_census.yaml gives the network's own descriptors


class FullResolutionDetail(nn.Module):
    """(N×1×H×W disparity, left image, right image) → N×1×H×W disparity, ±``radius`` px look-up."""

    def __init__(self, channels: int = 8, radius: int = 2, dilations: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        if channels < 1 or radius < 1 or not dilations or min(dilations) < 1:
            raise ValueError(f"the full-resolution step needs channels, radius and dilations >= 1, got "
                             f"channels={channels}, radius={radius}, dilations={list(dilations)}")
        self.radius = radius
        self.census = CensusFeatures(radius=CENSUS_RADIUS, scale=1, sigma=CENSUS_SIGMA)
        self.stem = correction_stem(radius, channels)
        self.blocks = nn.Sequential(*[DilatedBlock(channels, d) for d in dilations])
        self.residual = nn.Conv2d(channels, 1, 3, padding=1)

    def live_maps(self) -> int:
        """Full-resolution maps alive at this step's peak, per image, in floats per pixel: both views'
        descriptors, one look-up's shifted descriptors and their product, the cost (its slices and the
        stacked tensor), the stem's input, three hidden maps and the disparity in and out."""
        descriptors = self.census.out_channels
        window = 2 * self.radius + 1
        return 4 * descriptors + 2 * window + (window + 1 + 3) + 3 * self.stem[0].out_channels + 2

    def start_as_identity(self) -> None:
        """Zero the output layer (after the network's weight init, which would overwrite it)."""
        nn.init.zeros_(self.residual.weight)
        nn.init.zeros_(self.residual.bias)

    def forward(self, disparity: torch.Tensor, left_image: torch.Tensor, right_image: torch.Tensor) -> torch.Tensor:
        disparity = disparity.detach()
        cost = local_cost(self.census(left_image), self.census(right_image), disparity, self.radius)
        hidden = self.blocks(self.stem(correction_input(cost, disparity, left_image)))
        return F.relu(disparity + self.residual(hidden))
