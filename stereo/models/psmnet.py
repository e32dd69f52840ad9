"""PSMNet (Chang & Chen, CVPR 2018) and EA-PSMNet: the authors' network plus optional attention.

Pipeline: shared feature extractor → concatenation cost volume at 1/4 resolution → 3-D aggregation
(``stackhourglass`` or ``basic``) → trilinear upsampling + softmax disparity regression. Without
attention the network is the authors' (same parameters, wiring, init and interpolation), so their
checkpoints give their disparities. Attention placements (each ``efficient`` or ``dot_product``):

- ``feature``: after layer4 of the feature extractor (128 ch, 1/4 res; the EA-PSMNet paper's place),
- ``volume``: over the whole 32-channel 3-D cost volume after dres1 (what this project is named for),
- ``hourglass``: at each hourglass's 64-channel 1/16 bottleneck (stackhourglass only).

The constructor takes the architecture only (what a checkpoint must record to rebuild the network).
How it runs is set on the built network and never changes its function (see ``performance.py``):
``checkpoint_aggregation`` / ``checkpoint_features`` (recompute the 3-D head and the regression /
the feature extractor in backward: less training memory; ``activation_checkpointing`` in
conf/train.yaml), ``channels_last`` (NHWC / NDHWC weights and activations) and
``regression_chunk_rows`` (banded upsampling + soft-argmax at inference: the full-resolution
probability volume never exists), both set by ``stereo.models.optimize_for_inference`` together with
BatchNorm folding. The CPU training backend (``stereo.accel``) is applied to a built network too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .aggregation import BasicAggregation, StackedHourglass
from .attention import DotProductAttention, EfficientAttention, _AttentionBlock
from .cost_volume import concatenation_volume
from .features import FeatureExtraction
from .performance import maybe_checkpoint, set_memory_format
from .regression import regress_disparity

AGGREGATIONS = ("stackhourglass", "basic")
ATTENTION_KINDS = {"efficient": EfficientAttention, "dot_product": DotProductAttention}
# Channel count of the tensor each placement attends over.
PLACEMENT_CHANNELS = {"feature": 128, "volume": 32, "hourglass": 64}
_SPEC_KEYS = ("kind", "key_channels", "value_channels", "heads", "normalization", "zero_init")
SIZE_DIVISOR = 16
# The SPP's coarsest branch average-pools 64×64 cells of the 1/4-resolution map.
MIN_INPUT_SIZE = 256


def attention_spec(placement: str, spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """Complete one placement's settings with defaults (key = in/2, value = in channels, 1 head,
    softmax, zero-initialised reprojection so the block starts as the identity)."""
    if placement not in PLACEMENT_CHANNELS:
        raise ValueError(f"unknown attention placement {placement!r}; choose from {tuple(PLACEMENT_CHANNELS)}")
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping):
        raise ValueError(f"attention.{placement} must be a kind name or a mapping, got {spec!r}")
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"attention.{placement}: unknown settings {unknown}; allowed: {list(_SPEC_KEYS)}")
    channels = PLACEMENT_CHANNELS[placement]
    full = {"kind": "efficient", "key_channels": channels // 2, "value_channels": channels,
            "heads": 1, "normalization": "softmax", "zero_init": True}
    full.update(spec)
    if full["kind"] not in ATTENTION_KINDS:
        raise ValueError(f"attention.{placement}.kind must be one of {tuple(ATTENTION_KINDS)}, got {full['kind']!r}")
    return full


def _build_attention(placement: str, spec: dict[str, Any]) -> nn.Module:
    settings = {k: v for k, v in spec.items() if k != "kind"}
    return ATTENTION_KINDS[spec["kind"]](PLACEMENT_CHANNELS[placement], **settings)


def init_authors_weights(module: nn.Module) -> None:
    """The authors' init: conv weights N(0, √(2/(k^dims·out_ch))), BN weight 1 / bias 0;
    transposed convs keep PyTorch's default. Attention blocks keep their own init."""
    skip = {id(m) for block in module.modules() if isinstance(block, _AttentionBlock) for m in block.modules()}
    for m in module.modules():
        if id(m) in skip:
            continue
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            fan = math.prod(m.kernel_size) * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PSMNet(nn.Module):
    """PSMNet / EA-PSMNet.

    ``forward(left, right)`` takes ImageNet-normalised N×3×H×W views (H, W multiples of 16 and at
    least 256). Training mode: tuple of N×H×W disparities (3 for stackhourglass, 1 for basic).
    Eval mode: one N×H×W tensor, or ``(disparity, confidence)`` with ``return_confidence=True``.
    """

    def __init__(
        self,
        max_disp: int = 192,
        aggregation: str = "stackhourglass",
        attention: Mapping[str, Any] | None = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(max_disp, int) or max_disp < SIZE_DIVISOR or max_disp % SIZE_DIVISOR:
            raise ValueError(f"max_disp must be a positive multiple of {SIZE_DIVISOR}, got {max_disp!r}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        specs = {p: attention_spec(p, s) for p, s in dict(attention or {}).items() if s is not None}
        if aggregation == "basic" and "hourglass" in specs:
            raise ValueError("the 'hourglass' attention placement needs aggregation='stackhourglass'")
        self.max_disp = max_disp
        self.aggregation_name = aggregation
        self.align_corners = bool(align_corners)
        self.attention_config = specs

        def block(placement: str) -> nn.Module | None:
            return _build_attention(placement, specs[placement]) if placement in specs else None

        self.feature_extraction = FeatureExtraction(block("feature"), align_corners=self.align_corners)
        if aggregation == "stackhourglass":
            hourglass = [block("hourglass") for _ in range(3)]
            self.aggregation = StackedHourglass(block("volume"), hourglass)
        else:
            self.aggregation = BasicAggregation(block("volume"))
        init_authors_weights(self)
        self.checkpoint_features = False
        self.regression_chunk_rows = None
        self._channels_last = False

    @property
    def channels_last(self) -> bool:
        """NHWC/NDHWC activations *and* weights (``optimize_for_inference`` turns it on). Not a training
        layout: PyTorch's CPU channels-last BatchNorm3d in train mode makes gradients ~8x less exact
        than the plain layout's float32 rounding."""
        return self._channels_last

    @channels_last.setter
    def channels_last(self, enabled: bool) -> None:
        self._channels_last = bool(enabled)
        set_memory_format(self, self._channels_last)

    @property
    def regression_chunk_rows(self) -> int | None:
        """1/4-resolution rows per band of the inference regression (None: the whole volume at once)."""
        return self._regression_chunk_rows

    @regression_chunk_rows.setter
    def regression_chunk_rows(self, rows: int | None) -> None:
        if rows is not None and (not isinstance(rows, int) or isinstance(rows, bool) or rows < 1):
            raise ValueError(f"regression_chunk_rows must be a positive integer or None, got {rows!r}")
        self._regression_chunk_rows = rows

    @property
    def checkpoint_aggregation(self) -> bool:
        """Recompute the 3-D head's and the regression's activations in backward (training memory)."""
        return self.aggregation.checkpointing

    @checkpoint_aggregation.setter
    def checkpoint_aggregation(self, enabled: bool) -> None:
        self.aggregation.checkpointing = bool(enabled)

    def _check_inputs(self, left: torch.Tensor, right: torch.Tensor) -> None:
        if left.dim() != 4 or left.shape[1] != 3 or left.shape != right.shape:
            raise ValueError(
                f"left and right must be N×3×H×W of the same shape, got {tuple(left.shape)} and {tuple(right.shape)}"
            )
        height, width = left.shape[-2:]
        if height % SIZE_DIVISOR or width % SIZE_DIVISOR or min(height, width) < MIN_INPUT_SIZE:
            raise ValueError(
                f"PSMNet needs H and W to be multiples of {SIZE_DIVISOR} and at least {MIN_INPUT_SIZE}, "
                f"got {height}x{width}; pad with stereo.models.padding.Padder(height, width, "
                f"divisor={SIZE_DIVISOR}, min_size=({MIN_INPUT_SIZE}, {MIN_INPUT_SIZE})) and unpad the output"
            )

    def _entry_cost(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Cost volume → dres0. No local holds the volume, so dres0 can free it after one convolution."""
        return self.aggregation.entry(concatenation_volume(
            self._features(left), self._features(right), self.max_disp // 4, self.channels_last
        ))

    def _features(self, image: torch.Tensor) -> torch.Tensor:
        """One view's 1/4-resolution features; with ``checkpoint_features`` only the image is kept for
        backward (the ~40 stored 2-D activations per view are recomputed: ~300 MB per view at 256×512)."""
        return maybe_checkpoint(self.checkpoint_features, self.feature_extraction, self.feature_extraction, image)

    def forward(
        self, left: torch.Tensor, right: torch.Tensor, return_confidence: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        self._check_inputs(left, right)
        if return_confidence and self.training:
            raise ValueError("return_confidence=True is only available in eval mode (model.eval())")
        cells = left.shape[0] * (left.shape[2] // 4 // 64) * (left.shape[3] // 4 // 64)
        if self.training and cells < 2:
            raise ValueError(
                f"training on a batch of {left.shape[0]} at {left.shape[2]}x{left.shape[3]} leaves the SPP's "
                "64x64-pooled BatchNorm one value per channel; use crops of at least 256x512 or a batch of 2+"
            )
        height, width = left.shape[-2:]
        if self.channels_last:
            left = left.contiguous(memory_format=torch.channels_last)
            right = right.contiguous(memory_format=torch.channels_last)
        # Plain method calls, not module calls: see stereo/models/aggregation.py on freeing the volume.
        costs = self.aggregation.head(self._entry_cost(left, right))
        if self.training:
            return tuple(
                maybe_checkpoint(self.checkpoint_aggregation, self.aggregation, regress_disparity,
                                 c, self.max_disp, height, width, self.align_corners)
                for c in costs
            )
        return regress_disparity(costs[-1], self.max_disp, height, width, self.align_corners, return_confidence,
                                 chunk_rows=self.regression_chunk_rows)
