"""The pieces the refinement steps share: the local matching cost around an estimate (linear
interpolation of the right features along x), the correction network's input and first layer, RAFT's
convex upsampling, and a dilated residual block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


def correction_stem(radius: int, channels: int) -> nn.Sequential:
    """The first layer of a correction network reading :func:`correction_input` with a ±``radius`` cost."""
    inputs = (2 * radius + 1) + 1 + 3  # local cost, disparity, left image
    return nn.Sequential(nn.Conv2d(inputs, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                         nn.LeakyReLU(0.2, inplace=True))


def correction_input(cost: torch.Tensor, disparity: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """[local cost, disparity, left image] at one resolution; the disparity as a fraction of the width
    (x4): inputs of the same order as the cost's and the image's, at any image size. The width stays a
    traced size (no ``float()``), so an exported graph divides by its input's width, not the trace's."""
    return torch.cat((cost, disparity / image.shape[-1] * 4.0, image), dim=1)


def convex_upsample(disparity: torch.Tensor, mask: torch.Tensor, factor: int) -> torch.Tensor:
    """N×1×h×w disparity (in pixels of this resolution) → N×1×(factor·h)×(factor·w) in full-resolution
    pixels: each output pixel a convex combination (softmax over 9 weights of ``mask``,
    N×(9·factor²)×h×w) of the 3×3 neighbourhood around its low-resolution pixel (RAFT)."""
    batch, _, height, width = disparity.shape
    weights = torch.softmax(mask.view(batch, 1, 9, factor, factor, height, width), dim=2)
    patches = F.unfold(disparity * factor, kernel_size=3, padding=1).view(batch, 1, 9, 1, 1, height, width)
    up = (weights * patches).sum(dim=2)  # N×1×f×f×h×w
    return up.permute(0, 1, 4, 2, 5, 3).reshape(batch, 1, factor * height, factor * width)


class DilatedBlock(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.bn1(self.conv1(x)), 0.2)
        return F.leaky_relu(x + self.bn2(self.conv2(y)), 0.2)
