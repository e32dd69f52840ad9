"""PSMNet's stacked-hourglass 3-D head: dres0, dres1, three hourglasses, three classifiers.

Attribute names and wiring are the authors' (dres2..dres4 are the hourglasses). Insertion points:
``dres1`` (the whole volume after dres1, ``channels`` wide) and each hourglass's ``bottleneck``
(1/16 resolution, twice as wide), addressed as ``aggregation.dres2.bottleneck`` and so on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..activation_checkpointing import maybe_checkpoint
from ..components import FLOAT_BYTES, Component, InferenceShape
from .blocks import CostStem, classifier, conv_bn_3d, deconv_bn_3d


class Hourglass(Component):
    """Encoder-decoder over the volume (1/4 → 1/16 → 1/4) with the authors' skip wiring."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        wide = 2 * channels
        self.insertion_points = {"bottleneck": wide}
        self.conv1 = torch.nn.Sequential(conv_bn_3d(channels, wide, stride=2), torch.nn.ReLU(inplace=True))
        self.conv2 = conv_bn_3d(wide, wide)
        self.conv3 = torch.nn.Sequential(conv_bn_3d(wide, wide, stride=2), torch.nn.ReLU(inplace=True))
        self.conv4 = torch.nn.Sequential(conv_bn_3d(wide, wide), torch.nn.ReLU(inplace=True))
        self.conv5 = deconv_bn_3d(wide, wide)
        self.conv6 = deconv_bn_3d(wide, channels)

    def forward(
        self, x: torch.Tensor, presqu: torch.Tensor | None, postsqu: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (output at 1/4, ``pre`` at 1/8, ``post`` at 1/8) as the next hourglasses need."""
        pre = self.conv2(self.conv1(x))
        pre = F.relu(pre + postsqu) if postsqu is not None else F.relu(pre)
        bottleneck = self.insert("bottleneck", self.conv4(self.conv3(pre)))
        post = F.relu(self.conv5(bottleneck) + (presqu if presqu is not None else pre))
        return self.conv6(post), pre, post


class StackedHourglass(CostStem):
    """Volume → [cost1, cost2, cost3], each N×1×levels×h×w. ``channels`` 32 is the authors'."""

    def __init__(self, in_channels: int, channels: int = 32) -> None:
        super().__init__(in_channels, channels)
        self.dres2 = Hourglass(channels)
        self.dres3 = Hourglass(channels)
        self.dres4 = Hourglass(channels)
        self.classif1 = classifier(channels)
        self.classif2 = classifier(channels)
        self.classif3 = classifier(channels)

    def inference_bytes(self, shape: InferenceShape, optimized: bool) -> float:
        """Measured, not the default: peak memory (ru_maxrss above the process baseline, CPU fp32,
        ea_psmnet, max_disp 192, with confidence, through ``optimize_for_inference``: volume released,
        banded regression) was 9.8 B per pixel-level at 544×960 and 9.2 B at 768×1536, i.e. about five
        ``channels``-wide activations at the volume's 1/4 resolution (5 × 32 × 4 B / 4³ = 10 B): the
        cost0 skip, an hourglass's ``pre``/``post`` and its output beside the next one's input."""
        return FLOAT_BYTES * 5 * self.channels * shape.cells

    def forward(self, volume: torch.Tensor) -> list[torch.Tensor]:
        def stage(function, *args):
            return maybe_checkpoint(self.checkpointing, self, function, *args)

        cost0 = self.stem(volume)
        # Each classifier runs as soon as its hourglass output exists, so that at inference an
        # output is dropped once the next hourglass has read it (same operations, same values).
        out1, pre1, post1 = stage(self.dres2, cost0, None, None)
        out1 = out1 + cost0
        cost1 = stage(self.classif1, out1)
        out2, _, post2 = stage(self.dres3, out1, pre1, post1)
        del out1, post1
        out2 = out2 + cost0
        cost2 = stage(self.classif2, out2) + cost1
        out3, _, _ = stage(self.dres4, out2, pre1, post2)  # the authors feed hourglass 1's ``pre`` here
        del out2, pre1, post2
        out3 = out3 + cost0
        del cost0
        cost3 = stage(self.classif3, out3) + cost2
        return [cost1, cost2, cost3]
