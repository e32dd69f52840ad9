"""PSMNet's 2-D feature extractor: residual trunk at 1/4 resolution + spatial pyramid pooling.

Submodule names and ``nn.Sequential`` layouts follow the authors' public code on purpose, so their
state-dict keys (``feature_extraction.layer2.0.conv1.0.0.weight`` ...) load into this module
unchanged. Insertion points: ``layer4`` (128 channels, after layer4: the EA-PSMNet paper's attention
placement) and ``output`` (32 channels); inserted blocks live under ``inserted.<point>``, keys the
authors' checkpoints simply do not contain.

The SPP branches are upsampled with ``upsample_bilinear``: the authors' bilinear interpolation
written as two small interpolation matrices, because CUDA's ``F.interpolate`` backward accumulates
with atomics and refuses to run under ``torch.use_deterministic_algorithms``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..components import FeatureExtractor
from ..interpolation import upsample_bilinear


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, pad: int, dilation: int) -> nn.Sequential:
    """Conv2d without bias + BatchNorm; dilated convs pad by the dilation (as the authors do)."""
    padding = dilation if dilation > 1 else pad
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
    )


class BasicBlock(nn.Module):
    """conv-bn-ReLU → conv-bn, plus shortcut; PSMNet has no ReLU after the addition."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, downsample: nn.Module | None, dilation: int):
        super().__init__()
        self.conv1 = nn.Sequential(conv_bn(in_ch, out_ch, 3, stride, 1, dilation), nn.ReLU(inplace=True))
        self.conv2 = conv_bn(out_ch, out_ch, 3, 1, 1, dilation)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.conv2(self.conv1(x)) + shortcut


def _residual_layer(in_ch: int, out_ch: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
        )
    layers = [BasicBlock(in_ch, out_ch, stride, downsample, dilation)]
    layers += [BasicBlock(out_ch, out_ch, 1, None, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _pool_branch(pool: int) -> nn.Sequential:
    return nn.Sequential(nn.AvgPool2d(pool, stride=pool), conv_bn(128, 32, 1, 1, 0, 1), nn.ReLU(inplace=True))


class PSMNetFeatures(FeatureExtractor):
    """N×3×H×W image → N×32×H/4×W/4 matching feature (shared between the two views).

    ``align_corners`` of the SPP upsampling: the authors' current weights expect False.
    """

    out_channels = 32
    stride = 4
    min_input_size = 256  # the SPP's coarsest branch average-pools 64×64 cells of the 1/4 map

    def check_training_batch(self, shape: torch.Size) -> None:
        cells = shape[0] * (shape[2] // 4 // 64) * (shape[3] // 4 // 64)
        if cells < 2:
            raise ValueError(
                f"training on a batch of {shape[0]} at {shape[2]}x{shape[3]} leaves the SPP's "
                "64x64-pooled BatchNorm one value per channel; use crops of at least 256x512 or a batch of 2+"
            )

    def __init__(self, align_corners: bool = False) -> None:
        super().__init__()
        self.insertion_points = {"layer4": 128, "output": self.out_channels}
        self.align_corners = bool(align_corners)
        self.firstconv = nn.Sequential(
            conv_bn(3, 32, 3, 2, 1, 1), nn.ReLU(inplace=True),
            conv_bn(32, 32, 3, 1, 1, 1), nn.ReLU(inplace=True),
            conv_bn(32, 32, 3, 1, 1, 1), nn.ReLU(inplace=True),
        )
        self.layer1 = _residual_layer(32, 32, blocks=3, stride=1, dilation=1)
        self.layer2 = _residual_layer(32, 64, blocks=16, stride=2, dilation=1)
        self.layer3 = _residual_layer(64, 128, blocks=3, stride=1, dilation=1)
        self.layer4 = _residual_layer(128, 128, blocks=3, stride=1, dilation=2)
        # SPP; the authors name them branch1 (coarsest, 64×64 pooling) .. branch4 (8×8).
        self.branch1 = _pool_branch(64)
        self.branch2 = _pool_branch(32)
        self.branch3 = _pool_branch(16)
        self.branch4 = _pool_branch(8)
        self.lastconv = nn.Sequential(
            conv_bn(320, 128, 3, 1, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(128, 32, kernel_size=1, padding=0, stride=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = self.layer2(self.layer1(self.firstconv(x)))
        skip = self.insert("layer4", self.layer4(self.layer3(raw)))
        size = tuple(skip.shape[-2:])
        pooled = [
            upsample_bilinear(branch(skip), size, self.align_corners)
            for branch in (self.branch4, self.branch3, self.branch2, self.branch1)
        ]
        return self.insert("output", self.lastconv(torch.cat([raw, skip, *pooled], dim=1)))
