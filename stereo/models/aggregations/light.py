"""A light 3-D head for low-resolution volumes: PSMNet's stem at a narrow width, ``blocks`` residual
3-D blocks, one classifier. Every convolution has stride 1, so any volume size works (no hourglass
halvings); global context comes from attention inserted at ``dres1`` (``ea_light``).

Insertion points: ``dres1`` (after the stem) and ``output`` (before the classifier), ``channels`` wide.
"""

from __future__ import annotations

import torch
from torch import nn

from ..activation_checkpointing import maybe_checkpoint
from .blocks import CostStem, classifier, residual_3d


class LightAggregation(CostStem):
    """Volume → [cost], N×1×levels×h×w."""

    def __init__(self, in_channels: int, channels: int = 16, blocks: int = 1) -> None:
        if not isinstance(blocks, int) or blocks < 0 or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"LightAggregation needs channels >= 1 and blocks >= 0, got {channels!r}, {blocks!r}")
        super().__init__(in_channels, channels)
        self.insertion_points["output"] = channels
        self.residuals = nn.ModuleList(residual_3d(channels) for _ in range(blocks))
        self.classify = classifier(channels)

    def forward(self, volume: torch.Tensor) -> list[torch.Tensor]:
        cost = self.stem(volume)
        for block in self.residuals:
            cost = maybe_checkpoint(self.checkpointing, self, block, cost) + cost
        return [maybe_checkpoint(self.checkpointing, self, self.classify, self.insert("output", cost))]
