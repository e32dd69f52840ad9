"""Refinement from a local matching cost, guided by the left image, with convex upsampling.

A network that regresses at 1/8 and upsamples bilinearly cannot place an edge within 3 px, and its
coarse levels blur thin structures. Light networks recover detail with a refinement at a finer
resolution (StereoNet's edge-aware refinement, RAFT's look-up + convex upsampling). This one works
at 1/``resolution`` (default: the features' own 1/``stride``; a coarser one, a multiple of it, costs
a fraction and still matches at the features' precision):

1. the coarse disparity is brought to that resolution and *detached* (the refinement learns a
   correction, as RAFT-Stereo's updates do; the coarse output keeps its own loss);
2. a local cost is looked up around it: the correlation of the left features with the right
   features sampled at x − (d + δ), δ = −radius..radius feature pixels (linear interpolation along
   x, at the features' resolution), the same matching cost the volume used;
3. a small 2-D network of dilated residual blocks reads [local cost, disparity, left image] and
   predicts a residual and a convex-upsampling mask: each full-resolution pixel is a softmax-
   weighted mix of the 3×3 refined disparities around it (RAFT), so edges stay sharp instead of
   being smeared by bilinear interpolation.

``iterations`` repeats 2-3 with the same weights, looking the cost up again around the new
estimate: an edge the coarse level blurred over more than ``radius`` is reached in two updates.
``detail_channels`` > 0 adds a last step at full resolution on full-resolution census descriptors
(``detail.py``: sub-pixel precision the half-resolution cost cannot give), starting as the identity.
Training returns every iteration's refined disparity (each upsampled with its own mask, so each is
supervised, as RAFT's sequence loss does: an update trained only on the last iteration's input
would never see the coarse estimate it corrects first), and the full-resolution step's after them when
there is one; the loss weighs each.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..components import FLOAT_BYTES, InferenceShape, Refinement
from .blocks import DilatedBlock, convex_upsample, correction_input, correction_stem, local_cost
from .detail import FullResolutionDetail


class LocalCostRefinement(Refinement):
    """(disparity N×H×W, left/right images, left/right features at 1/``stride``) → refined N×H×W."""

    def __init__(self, feature_channels: int, stride: int, radius: int = 3, channels: int = 32,
                 dilations: Sequence[int] = (1, 2, 4, 8, 1), iterations: int = 1,
                 resolution: int | None = None, detail_channels: int = 0, detail_radius: int = 2) -> None:
        super().__init__()
        dilations = [int(d) for d in dilations]
        resolution = stride if resolution is None else resolution
        if radius < 1 or channels < 1 or iterations < 1 or not dilations or min(dilations) < 1:
            raise ValueError(f"LocalCostRefinement needs radius, channels, iterations and dilations >= 1, got "
                             f"radius={radius}, channels={channels}, iterations={iterations}, dilations={dilations}")
        if not isinstance(resolution, int) or resolution < stride or resolution % stride:
            raise ValueError(f"refinement.resolution must be a multiple of the features' stride {stride}, got {resolution!r}")
        self.step = resolution // stride  # feature pixels per refinement pixel
        self.stride, self.radius, self.iterations = resolution, radius, iterations
        self.insertion_points = {"hidden": channels}
        self.stem = correction_stem(radius, channels)
        self.blocks = nn.Sequential(*[DilatedBlock(channels, d) for d in dilations])
        self.residual = nn.Conv2d(channels, 1, 3, padding=1)
        self.mask = nn.Conv2d(channels, 9 * resolution * resolution, 1) if resolution > 1 else None
        nn.init.zeros_(self.residual.bias)  # the weight gets the network's init (init_authors_weights)
        if isinstance(detail_channels, bool) or not isinstance(detail_channels, int) or detail_channels < 0:
            raise ValueError(f"refinement.detail_channels must be a whole number >= 0 (0: no full-resolution step), "
                             f"got {detail_channels!r}")
        if isinstance(detail_radius, bool) or not isinstance(detail_radius, int) or detail_radius < 1:
            raise ValueError(f"refinement.detail_radius must be a whole number >= 1 (pixels looked up on each side), "
                             f"got {detail_radius!r}")
        self.detail = FullResolutionDetail(detail_channels, detail_radius) if detail_channels else None

    def inference_bytes(self, shape: InferenceShape, optimized: bool) -> float:
        """The full-resolution step's maps, which unlike the half-resolution ones weigh as much as the 1/8
        volume's share per pixel (77 floats counted, 161 MB at 544x960, where bench_model measured 139 MB
        more peak than without the step); nothing without it."""
        if self.detail is None:
            return 0.0
        return FLOAT_BYTES * shape.batch * shape.height * shape.width * self.detail.live_maps()

    def after_network_init(self) -> None:
        if self.detail is not None:
            self.detail.start_as_identity()

    def forward(self, disparity: torch.Tensor, left_image: torch.Tensor, right_image: torch.Tensor,
                left: torch.Tensor, right: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        height, width = left_image.shape[-2:]
        image = F.avg_pool2d(left_image, self.stride) if self.stride > 1 else left_image
        # the network's input is a multiple of 16, so a fixed stride-s window is the same average as an
        # adaptive one to image's size, and it has a static kernel (what ONNX export needs)
        current = disparity.unsqueeze(1)
        current = (F.avg_pool2d(current, self.stride) if self.stride > 1 else current) / self.stride
        steps = []  # training: every iteration's upsampled estimate (each is supervised, as in RAFT)
        for iteration in range(self.iterations):
            current = current.detach()  # each update learns a correction of the estimate it is given
            cost = local_cost(left, right, current * self.step, self.radius, self.step)
            hidden = self.blocks(self.stem(correction_input(cost, current, image)))
            hidden = self.insert("hidden", hidden)
            current = F.relu(current + self.residual(hidden))
            if self.training or iteration == self.iterations - 1:
                steps.append(self._upsample(current, hidden).view(-1, height, width))
        if self.detail is not None:
            steps.append(self.detail(steps[-1].unsqueeze(1), left_image, right_image).view(-1, height, width))
        return tuple(steps) if self.training and len(steps) > 1 else steps[-1]

    def _upsample(self, current: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The estimate at full resolution: convex upsampling with the mask the last update predicts."""
        return current if self.mask is None else convex_upsample(current, self.mask(hidden), self.stride)
