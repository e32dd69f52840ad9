"""A light 3-D head for low-resolution volumes: PSMNet's stem at a narrow width, ``blocks`` residual
3-D blocks, one classifier. Every convolution has stride 1, so any volume size works (no hourglass
halvings); global context comes from attention inserted at ``dres1`` (``ea_light``).

Insertion points: ``dres1`` (after the stem) and ``output`` (before the classifier), ``channels`` wide.

``zero_init_residuals``: the last BatchNorm of each of the ``blocks`` residual blocks (not the stem's
``dres1``) starts with weight 0, so the block starts as the identity (Goyal et al. 2017, torchvision's
``zero_init_residual``): a trained head given more blocks (``init_from`` with ``init_strict=false``)
starts as exactly the trained network. Set at construction and again after the network's own init.
"""

from __future__ import annotations

import torch
from torch import nn

from ..activation_checkpointing import maybe_checkpoint
from .blocks import CostStem, classifier, residual_3d


class LightAggregation(CostStem):
    """Volume → [cost], N×1×levels×h×w."""

    def __init__(self, in_channels: int, channels: int = 16, blocks: int = 1, zero_init_residuals: bool = False) -> None:
        if not isinstance(blocks, int) or blocks < 0 or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"LightAggregation needs channels >= 1 and blocks >= 0, got {channels!r}, {blocks!r}")
        if not isinstance(zero_init_residuals, bool):
            raise ValueError(f"LightAggregation: zero_init_residuals must be true or false, got {zero_init_residuals!r}")
        super().__init__(in_channels, channels)
        self.zero_init_residuals = zero_init_residuals
        self.insertion_points["output"] = channels
        self.residuals = nn.ModuleList(residual_3d(channels) for _ in range(blocks))
        self.classify = classifier(channels)
        self.after_network_init()  # a head built on its own starts as the identity too

    def after_network_init(self) -> None:
        if self.zero_init_residuals:
            for block in self.residuals:
                nn.init.zeros_(block[-1][1].weight)  # conv_bn_3d's BatchNorm3d

    def forward(self, volume: torch.Tensor) -> list[torch.Tensor]:
        cost = self.stem(volume)
        for block in self.residuals:
            cost = maybe_checkpoint(self.checkpointing, self, block, cost) + cost
        return [maybe_checkpoint(self.checkpointing, self, self.classify, self.insert("output", cost))]
