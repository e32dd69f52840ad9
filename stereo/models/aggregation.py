"""PSMNet's 3-D cost aggregation heads: ``basic`` (residual 3-D convs) and ``stackhourglass``.

Attribute names (dres0, dres1, dres2..dres4, classif1..3 / classify) follow the authors' code so
their checkpoints load with a fixed prefix (see ``checkpoints.py``). Optional attention blocks:
``volume_attention`` over the whole 1/4-resolution volume after dres1, and ``attention`` inside each
hourglass at its 1/16 bottleneck. Both are residual blocks, so with a zero reprojection they are
the identity and the head computes exactly the authors' function.

``checkpointing = True`` (set by ``PSMNet.checkpoint_aggregation = True``) recomputes each stage's
activations in backward instead of storing them: same gradients, less training memory.

``forward(volume)`` is ``head(entry(volume))``. ``PSMNet`` calls the two halves itself, handing the
volume over without keeping a reference, so that at inference the 64-channel volume (the largest
tensor: 400 MB at 544×960, max_disp 192) is freed right after dres0's first convolution has read it.
A module call cannot do that: ``nn.Module.__call__`` holds its arguments until forward returns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .performance import maybe_checkpoint


def conv_bn_3d(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """3×3×3 Conv3d without bias + BatchNorm3d."""
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(out_ch)
    )


def _deconv_bn_3d(in_ch: int, out_ch: int) -> nn.Sequential:
    """Stride-2 transposed 3×3×3 conv (exact ×2 upsampling) + BatchNorm3d."""
    return nn.Sequential(
        nn.ConvTranspose3d(in_ch, out_ch, kernel_size=3, stride=2, padding=1, output_padding=1, bias=False),
        nn.BatchNorm3d(out_ch),
    )


def _entry() -> nn.Sequential:
    """dres0: 64-channel concatenation volume → 32 channels."""
    return nn.Sequential(conv_bn_3d(64, 32), nn.ReLU(inplace=True), conv_bn_3d(32, 32), nn.ReLU(inplace=True))


def _residual_3d() -> nn.Sequential:
    """Residual branch conv-bn-ReLU-conv-bn (the caller adds the input; no ReLU after the add)."""
    return nn.Sequential(conv_bn_3d(32, 32), nn.ReLU(inplace=True), conv_bn_3d(32, 32))


def _classifier() -> nn.Sequential:
    """32 channels → 1-channel matching cost."""
    return nn.Sequential(
        conv_bn_3d(32, 32), nn.ReLU(inplace=True), nn.Conv3d(32, 1, kernel_size=3, padding=1, bias=False)
    )


class Hourglass(nn.Module):
    """Encoder-decoder over the volume (1/4 → 1/16 → 1/4) with the authors' skip wiring."""

    def __init__(self, channels: int = 32, attention: nn.Module | None = None) -> None:
        super().__init__()
        wide = 2 * channels
        self.conv1 = nn.Sequential(conv_bn_3d(channels, wide, stride=2), nn.ReLU(inplace=True))
        self.conv2 = conv_bn_3d(wide, wide)
        self.conv3 = nn.Sequential(conv_bn_3d(wide, wide, stride=2), nn.ReLU(inplace=True))
        self.conv4 = nn.Sequential(conv_bn_3d(wide, wide), nn.ReLU(inplace=True))
        self.attention = attention
        self.conv5 = _deconv_bn_3d(wide, wide)
        self.conv6 = _deconv_bn_3d(wide, channels)

    def forward(
        self, x: torch.Tensor, presqu: torch.Tensor | None, postsqu: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (output at 1/4, ``pre`` at 1/8, ``post`` at 1/8) as the next hourglasses need."""
        pre = self.conv2(self.conv1(x))
        pre = F.relu(pre + postsqu) if postsqu is not None else F.relu(pre)
        bottleneck = self.conv4(self.conv3(pre))
        if self.attention is not None:
            bottleneck = self.attention(bottleneck)
        post = F.relu(self.conv5(bottleneck) + (presqu if presqu is not None else pre))
        return self.conv6(post), pre, post


class _CostStem(nn.Module):
    """What both heads share: dres0, the residual dres1 and the optional cost-volume attention.

    The attribute names are the authors' (dres0, dres1), so their checkpoints load by name.
    """

    def __init__(self, volume_attention: nn.Module | None) -> None:
        super().__init__()
        self.checkpointing = False
        self.dres0 = _entry()
        self.dres1 = _residual_3d()
        self.volume_attention = volume_attention

    def forward(self, volume: torch.Tensor) -> list[torch.Tensor]:
        """N×64×D/4×H/4×W/4 volume → list of N×1×D/4×H/4×W/4 costs (the last one is the output)."""
        return self.head(self.entry(volume))

    def entry(self, volume: torch.Tensor) -> torch.Tensor:
        """dres0: volume → 32-channel cost. Pass the volume without keeping a reference to let it go early."""
        if self.checkpointing and torch.is_grad_enabled():
            return maybe_checkpoint(True, self, self.dres0, volume)
        for layer in self.dres0:  # layer by layer, rebinding the one name: each input is freed once read
            volume = layer(volume)
        return volume

    def _refine(self, cost: torch.Tensor) -> torch.Tensor:
        cost = self.dres1(cost).add_(cost)  # dres1 ends in a BatchNorm/conv output nothing else holds
        if self.volume_attention is not None:
            cost = self.volume_attention(cost)
        return cost

    def head(self, cost: torch.Tensor) -> list[torch.Tensor]:
        """dres0's output → the costs (implemented by each head)."""
        raise NotImplementedError


class StackedHourglass(_CostStem):
    """dres0, dres1, three stacked hourglasses, three classifiers with accumulated costs."""

    def __init__(
        self, volume_attention: nn.Module | None = None, hourglass_attention: list[nn.Module | None] | None = None
    ) -> None:
        super().__init__(volume_attention)
        hourglass_attention = hourglass_attention or [None, None, None]
        self.dres2 = Hourglass(32, hourglass_attention[0])
        self.dres3 = Hourglass(32, hourglass_attention[1])
        self.dres4 = Hourglass(32, hourglass_attention[2])
        self.classif1 = _classifier()
        self.classif2 = _classifier()
        self.classif3 = _classifier()

    def head(self, cost: torch.Tensor) -> list[torch.Tensor]:
        """dres0's output → [cost1, cost2, cost3], each N×1×D/4×H/4×W/4."""
        def stage(function, *args):
            return maybe_checkpoint(self.checkpointing, self, function, *args)

        cost0 = stage(self._refine, cost)
        del cost
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


class BasicAggregation(_CostStem):
    """dres0, four residual 3-D blocks, one classifier."""

    def __init__(self, volume_attention: nn.Module | None = None) -> None:
        super().__init__(volume_attention)
        self.dres2 = _residual_3d()
        self.dres3 = _residual_3d()
        self.dres4 = _residual_3d()
        self.classify = _classifier()

    def head(self, cost: torch.Tensor) -> list[torch.Tensor]:
        """dres0's output → [cost], N×1×D/4×H/4×W/4."""
        cost = maybe_checkpoint(self.checkpointing, self, self._refine, cost)
        for block in (self.dres2, self.dres3, self.dres4):
            cost = maybe_checkpoint(self.checkpointing, self, block, cost) + cost
        return [maybe_checkpoint(self.checkpointing, self, self.classify, cost)]
