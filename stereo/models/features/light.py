"""A light 2-D feature extractor for low-resolution cost volumes (``ea_light``).

A strided stem and one stage per further halving, each a stride-2 conv followed by ``blocks``
PSMNet-style residual blocks: ``channels`` [16, 32, 64] gives 64-channel features at 1/8 in about
a tenth of a GFLOP per 256×512 view, where PSMNet's extractor (128 channels at 1/4) spends ~55.
"""

from __future__ import annotations

import torch
from torch import nn

from ..components import FeatureExtractor
from .psmnet import BasicBlock, conv_bn


class LightFeatures(FeatureExtractor):
    """N×3×H×W → N×``out_channels``×H/s×W/s with s = 2^len(channels)."""

    def __init__(self, channels: list[int] = (16, 32, 64), blocks: int = 2, out_channels: int = 64) -> None:
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1 or blocks < 0 or out_channels < 1:
            raise ValueError(f"LightFeatures needs positive channels, blocks >= 0 and out_channels, "
                             f"got channels={channels}, blocks={blocks}, out_channels={out_channels}")
        self.out_channels = int(out_channels)
        self.stride = 2 ** len(channels)
        self.insertion_points = {"output": self.out_channels}
        stages = [nn.Sequential(conv_bn(3, channels[0], 3, 2, 1, 1), nn.ReLU(inplace=True))]
        for c_in, c_out in zip(channels, channels[1:]):
            stages.append(nn.Sequential(
                conv_bn(c_in, c_out, 3, 2, 1, 1), nn.ReLU(inplace=True),
                *[BasicBlock(c_out, c_out, 1, None, 1) for _ in range(blocks)],
            ))
        self.stages = nn.Sequential(*stages)
        self.project = nn.Conv2d(channels[-1], self.out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.insert("output", self.project(self.stages(x)))
