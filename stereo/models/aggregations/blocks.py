"""3-D building blocks the aggregations share: conv+BN, PSMNet's entry / residual / classifier
stages and their common stem (dres0, dres1), which takes the volume over from the network.

Attribute names (dres0, dres1, classif1..3 / classify) follow the authors' code so their
checkpoints load with a fixed prefix (see ``checkpoints.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..activation_checkpointing import maybe_checkpoint
from ..components import Aggregation, take_volume


def conv_bn_3d(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """3×3×3 Conv3d without bias + BatchNorm3d."""
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(out_ch)
    )


def deconv_bn_3d(in_ch: int, out_ch: int) -> nn.Sequential:
    """Stride-2 transposed 3×3×3 conv (exact ×2 upsampling) + BatchNorm3d."""
    return nn.Sequential(
        nn.ConvTranspose3d(in_ch, out_ch, kernel_size=3, stride=2, padding=1, output_padding=1, bias=False),
        nn.BatchNorm3d(out_ch),
    )


def entry(in_ch: int, channels: int) -> nn.Sequential:
    """dres0: the volume's ``in_ch`` channels → ``channels``."""
    return nn.Sequential(conv_bn_3d(in_ch, channels), nn.ReLU(inplace=True),
                         conv_bn_3d(channels, channels), nn.ReLU(inplace=True))


def residual_3d(channels: int) -> nn.Sequential:
    """Residual branch conv-bn-ReLU-conv-bn (the caller adds the input; no ReLU after the add)."""
    return nn.Sequential(conv_bn_3d(channels, channels), nn.ReLU(inplace=True), conv_bn_3d(channels, channels))


def coarse_residual_3d(channels: int) -> nn.Sequential:
    """Residual branch through half the volume's resolution, at twice the width (PSMNet's hourglass
    step): stride-2 conv-bn-ReLU, conv-bn-ReLU, transposed conv-bn back to the input's size (the caller
    adds the input). It widens the receptive field twice as fast as a full-resolution block
    (``residual_3d``) for about half its cost. Needs even depth, height and width."""
    return nn.Sequential(conv_bn_3d(channels, 2 * channels, stride=2), nn.ReLU(inplace=True),
                         conv_bn_3d(2 * channels, 2 * channels), nn.ReLU(inplace=True),
                         deconv_bn_3d(2 * channels, channels))


def classifier(channels: int) -> nn.Sequential:
    """``channels`` → 1-channel matching cost."""
    return nn.Sequential(conv_bn_3d(channels, channels), nn.ReLU(inplace=True),
                         nn.Conv3d(channels, 1, kernel_size=3, padding=1, bias=False))


class CostStem(Aggregation):
    """What PSMNet's heads share: dres0, the residual dres1 and the insertion point ``dres1`` after it.

    ``checkpointing = True`` recomputes each stage's activations in backward instead of storing them.
    The stem takes a handed-over volume (``takes_volume_handoff``) and releases it once read.
    """

    takes_volume_handoff = True

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.insertion_points = {"dres1": channels}
        self.dres0 = entry(in_channels, channels)
        self.dres1 = residual_3d(channels)

    def stem(self, volume: torch.Tensor) -> torch.Tensor:
        """dres0, dres1 (+ what is inserted there). A handed-over volume (``components.VolumeHandoff``)
        is released as soon as dres0's first convolution has read it."""
        volume = take_volume(volume)
        if self.checkpointing and torch.is_grad_enabled():
            cost = maybe_checkpoint(True, self, self.dres0, volume)
        else:
            for layer in self.dres0:  # layer by layer, rebinding the one name: each input is freed once read
                volume = layer(volume)
            cost = volume
        del volume
        return maybe_checkpoint(self.checkpointing, self, self._refine, cost)

    def _refine(self, cost: torch.Tensor) -> torch.Tensor:
        return self.insert("dres1", self.dres1(cost).add_(cost))  # dres1 ends in a BN output nothing else holds
