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
estimate. Training returns the refined disparity of the last iteration.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..components import Refinement


def shift_right_features(right: torch.Tensor, disparity: torch.Tensor, step: int = 1) -> torch.Tensor:
    """``right`` (N×C×H×W) sampled at (step·x − disparity(y, x), step·y) by linear interpolation
    along x, for every pixel (x, y) of ``disparity`` (N×1×H/step×W/step, in ``right``'s pixels);
    zero outside the image."""
    batch, _, height, width = right.shape
    rows, cols = disparity.shape[-2:]
    xs = torch.arange(cols, device=right.device, dtype=right.dtype).view(1, 1, cols) * step
    ys = torch.arange(rows, device=right.device, dtype=right.dtype).view(1, rows, 1) * step
    x = (xs - disparity.squeeze(1)) * (2.0 / max(width - 1, 1)) - 1.0
    y = (ys * (2.0 / max(height - 1, 1)) - 1.0).expand(batch, rows, cols)
    grid = torch.stack((x, y), dim=-1)
    return F.grid_sample(right, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def local_cost(left: torch.Tensor, right: torch.Tensor, disparity: torch.Tensor, radius: int,
               step: int = 1) -> torch.Tensor:
    """N×(2·radius+1)×h×w: mean over channels of left(x) · right(x − d − δ), δ = −radius..radius, at
    every ``step``-th pixel of the features (``disparity`` is N×1×h×w at that grid, in feature pixels)."""
    left = left[..., ::step, ::step]
    return torch.stack([(left * shift_right_features(right, disparity + delta, step)).mean(dim=1)
                        for delta in range(-radius, radius + 1)], dim=1)


def convex_upsample(disparity: torch.Tensor, mask: torch.Tensor, factor: int) -> torch.Tensor:
    """N×1×h×w disparity (in pixels of this resolution) → N×1×(factor·h)×(factor·w) in full-resolution
    pixels: each output pixel a convex combination (softmax over 9 weights of ``mask``,
    N×(9·factor²)×h×w) of the 3×3 neighbourhood around its low-resolution pixel (RAFT)."""
    batch, _, height, width = disparity.shape
    weights = torch.softmax(mask.view(batch, 1, 9, factor, factor, height, width), dim=2)
    patches = F.unfold(disparity * factor, kernel_size=3, padding=1).view(batch, 1, 9, 1, 1, height, width)
    up = (weights * patches).sum(dim=2)  # N×1×f×f×h×w
    return up.permute(0, 1, 4, 2, 5, 3).reshape(batch, 1, factor * height, factor * width)


class _DilatedBlock(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.bn1(self.conv1(x)), 0.2)
        return F.leaky_relu(x + self.bn2(self.conv2(y)), 0.2)


class LocalCostRefinement(Refinement):
    """(disparity N×H×W, left image, left/right features at 1/``stride``) → refined N×H×W."""

    def __init__(self, feature_channels: int, stride: int, radius: int = 3, channels: int = 32,
                 dilations: Sequence[int] = (1, 2, 4, 8, 1), iterations: int = 1,
                 resolution: int | None = None) -> None:
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
        inputs = (2 * radius + 1) + 1 + 3  # local cost, disparity, left image
        self.stem = nn.Sequential(nn.Conv2d(inputs, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.LeakyReLU(0.2, inplace=True))
        self.blocks = nn.Sequential(*[_DilatedBlock(channels, d) for d in dilations])
        self.residual = nn.Conv2d(channels, 1, 3, padding=1)
        self.mask = nn.Conv2d(channels, 9 * resolution * resolution, 1) if resolution > 1 else None
        nn.init.zeros_(self.residual.bias)  # the weight gets the network's init (init_authors_weights)

    def forward(self, disparity: torch.Tensor, left_image: torch.Tensor, left: torch.Tensor,
                right: torch.Tensor) -> torch.Tensor:
        height, width = left_image.shape[-2:]
        image = F.avg_pool2d(left_image, self.stride) if self.stride > 1 else left_image
        current = F.adaptive_avg_pool2d(disparity.unsqueeze(1), image.shape[-2:]) / self.stride
        scale = float(image.shape[-1])  # disparities as a fraction of the width: well-conditioned inputs
        for _ in range(self.iterations):
            current = current.detach()  # each update learns a correction of the estimate it is given
            cost = local_cost(left, right, current * self.step, self.radius, self.step)
            hidden = self.blocks(self.stem(torch.cat((cost, current / scale * 4.0, image), dim=1)))
            hidden = self.insert("hidden", hidden)
            current = F.relu(current + self.residual(hidden))
        if self.mask is None:
            return current.squeeze(1)
        return convex_upsample(current, self.mask(hidden), self.stride).view(-1, height, width)
