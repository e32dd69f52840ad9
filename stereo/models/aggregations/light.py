"""A light 3-D head for low-resolution volumes: PSMNet's stem at a narrow width, ``blocks`` residual
3-D blocks, ``context_blocks`` residual blocks through half resolution, one classifier. Global context
comes from attention inserted at ``dres1`` (``ea_light``). The full-resolution blocks take any volume
size; a context block halves the volume once, which the networks' size rules already allow (inputs
multiples of 16 and ``max_disp`` of 16 make every 1/8 volume even in depth, height and width).

Insertion points: ``dres1`` (after the stem) and ``output`` (before the classifier), ``channels`` wide.

``zero_init_residuals``: the last BatchNorm of each of the ``blocks`` and ``context_blocks`` residual
blocks (not the stem's ``dres1``) starts with weight 0, so the block starts as the identity (Goyal et al. 2017, torchvision's
``zero_init_residual``): a trained head given more blocks (``init_from`` with ``init_strict=false``)
starts as exactly the trained network. Set at construction and again after the network's own init.
"""

from __future__ import annotations

import torch
from torch import nn

from ..activation_checkpointing import maybe_checkpoint
from ..components import FLOAT_BYTES, InferenceShape
from .blocks import CostStem, classifier, coarse_residual_3d, residual_3d


class LightAggregation(CostStem):
    """Volume → [cost], N×1×levels×h×w."""

    def __init__(self, in_channels: int, channels: int = 16, blocks: int = 1, context_blocks: int = 0,
                 zero_init_residuals: bool = False) -> None:
        for name, value, least in (("channels", channels, 1), ("blocks", blocks, 0), ("context_blocks", context_blocks, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"LightAggregation: {name} must be a whole number >= {least}, got {value!r}")
        if not isinstance(zero_init_residuals, bool):
            raise ValueError(f"LightAggregation: zero_init_residuals must be true or false, got {zero_init_residuals!r}")
        super().__init__(in_channels, channels)
        self.zero_init_residuals = zero_init_residuals
        self.insertion_points["output"] = channels
        self.residuals = nn.ModuleList(residual_3d(channels) for _ in range(blocks))
        self.context = nn.ModuleList(coarse_residual_3d(channels) for _ in range(context_blocks))
        self.classify = classifier(channels)
        self.after_network_init()  # a head built on its own starts as the identity too

    def inference_bytes(self, shape: InferenceShape, optimized: bool) -> float:
        """The full-resolution layers (``channels`` wide) are the widest live activations: the context
        blocks' twice-as-wide layers run on an eighth of the volume's cells."""
        return FLOAT_BYTES * self.live_activations * self.channels * shape.cells

    def after_network_init(self) -> None:
        if self.zero_init_residuals:
            for block in (*self.residuals, *self.context):
                nn.init.zeros_(block[-1][1].weight)  # the last conv_bn_3d's / deconv_bn_3d's BatchNorm3d

    def forward(self, volume: torch.Tensor) -> list[torch.Tensor]:
        cost = self.stem(volume)
        for block in (*self.residuals, *self.context):
            cost = maybe_checkpoint(self.checkpointing, self, block, cost) + cost
        return [maybe_checkpoint(self.checkpointing, self, self.classify, self.insert("output", cost))]
