"""A correlation volume matched at the features' resolution and pooled to a coarser one.

A network that aggregates at 1/8 usually also *matches* at 1/8, so a disparity level is 8 pixels
wide and a 16-pixel search range (Middlebury's Tsukuba) leaves two candidates. Here every disparity
of the features' resolution is matched (full correlation, the mean over channels of
f_l(y, x) · f_r(y, x − d), zero where x − d < 0), then ``pool`` consecutive disparities become
``pool`` channels of one coarse level and each pool×pool block of pixels is averaged (a box
aggregation, as block matching does). Nothing is thrown away in disparity: the aggregation sees
every fine disparity's cost, and the network's volume is ``pool`` times coarser in x, y and d.

Built with ``levels`` = disparities at the features' resolution (max_disp / feature stride), which
must be a multiple of ``pool``; ``out_channels`` = ``pool``; the network's stride is the features'
times ``pool``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..components import FLOAT_BYTES, CostVolume, InferenceShape
from .group_correlation import group_correlation_volume


class PooledCorrelationVolume(CostVolume):
    """N×C×h×w features → N×pool×(levels/pool)×(h/pool)×(w/pool)."""

    def __init__(self, in_channels: int, levels: int, pool: int = 4) -> None:
        super().__init__()
        if not isinstance(pool, int) or isinstance(pool, bool) or pool < 1:
            raise ValueError(f"pool must be a positive integer, got {pool!r}")
        self.pool = pool
        self.out_channels = pool
        self.levels = levels

    @property
    def levels(self) -> int:
        return self._levels

    @levels.setter
    def levels(self, levels: int) -> None:
        if levels < self.pool or levels % self.pool:
            raise ValueError(f"the pooled volume needs a multiple of pool={self.pool} disparity levels, got {levels}")
        self._levels = levels

    def inference_bytes(self, shape: InferenceShape, optimized: bool) -> float:
        """The one-channel correlation at the features' resolution (``pool``³ times the pooled
        volume's cells) beside the pooled copy it becomes: larger than the pooled volume itself."""
        return FLOAT_BYTES * shape.cells * self.pool**3 + super().inference_bytes(shape, optimized)

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = left.shape
        if height % self.pool or width % self.pool:
            raise ValueError(f"features of {height}x{width} do not pool by {self.pool}")
        volume = group_correlation_volume(left, right, self.levels, groups=1)  # N×1×levels×h×w
        # Pool each fine level over pixels first, then regroup level l = c·pool + k as channel k of coarse
        # level c: the regrouping copies the pooled volume (pool² times smaller), not the fine one.
        pooled = F.avg_pool2d(volume.view(batch, self.levels, height, width), self.pool)
        coarse = self.levels // self.pool
        pooled = pooled.view(batch, coarse, self.pool, height // self.pool, width // self.pool)
        return pooled.transpose(1, 2).contiguous()

    def extra_repr(self) -> str:
        return f"levels={self.levels}, pool={self.pool}"
