"""Full correlation (DispNetC-style): one channel, the mean over all feature channels of
f_l(y, x) · f_r(y, x - d). The cheapest volume (levels × H × W)."""

from __future__ import annotations

from .group_correlation import GroupCorrelationVolume


class CorrelationVolume(GroupCorrelationVolume):
    """Group-wise correlation with a single group."""

    def __init__(self, in_channels: int, levels: int) -> None:
        super().__init__(in_channels, levels, groups=1)
