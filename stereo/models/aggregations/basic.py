"""PSMNet's "basic" 3-D head: dres0, dres1, three more residual 3-D blocks, one classifier."""

from __future__ import annotations

import torch

from ..activation_checkpointing import maybe_checkpoint
from .blocks import CostStem, classifier, residual_3d


class BasicAggregation(CostStem):
    """Volume → [cost], N×1×levels×h×w. ``channels`` 32 is the authors'."""

    def __init__(self, in_channels: int, channels: int = 32) -> None:
        super().__init__(in_channels, channels)
        self.dres2 = residual_3d(channels)
        self.dres3 = residual_3d(channels)
        self.dres4 = residual_3d(channels)
        self.classify = classifier(channels)

    def forward(self, volume: torch.Tensor) -> list[torch.Tensor]:
        cost = self.stem(volume)
        for block in (self.dres2, self.dres3, self.dres4):
            cost = maybe_checkpoint(self.checkpointing, self, block, cost) + cost
        return [maybe_checkpoint(self.checkpointing, self, self.classify, cost)]
