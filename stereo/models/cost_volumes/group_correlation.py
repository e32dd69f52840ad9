"""GwcNet's group-wise correlation volume (Guo et al., CVPR 2019).

The C feature channels of each view are split into ``groups`` contiguous groups of C/groups; at
level d, group g holds the mean over the group's channels of f_l(y, x) · f_r(y, x - d), and zero
where x - d < 0. ``groups=1`` is the full (DispNetC-style) correlation, see ``correlation.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..components import CostVolume


def group_correlation_volume(left: torch.Tensor, right: torch.Tensor, levels: int, groups: int) -> torch.Tensor:
    """N×C×H×W features of both views → N×groups×levels×H×W volume (out of place: autograd-friendly)."""
    if left.shape != right.shape or left.dim() != 4:
        raise ValueError(f"left and right features must both be N×C×H×W of the same shape, "
                         f"got {tuple(left.shape)} and {tuple(right.shape)}")
    batch, channels, height, width = left.shape
    if channels % groups:
        raise ValueError(f"group-wise correlation: {channels} feature channels do not split into {groups} groups")

    def correlate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).view(batch, groups, channels // groups, height, -1).mean(dim=2)

    planes = [correlate(left, right)]
    for d in range(1, levels):
        if d < width:
            planes.append(F.pad(correlate(left[..., d:], right[..., :-d]), (d, 0)))
        else:  # a shift past the image: nothing to correlate
            planes.append(planes[0].new_zeros(planes[0].shape))
    return torch.stack(planes, dim=2)


class GroupCorrelationVolume(CostVolume):
    """Group-wise correlation: ``groups`` channels (``in_channels`` must be a multiple of it)."""

    def __init__(self, in_channels: int, levels: int, groups: int = 8) -> None:
        super().__init__()
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1 or in_channels % groups:
            raise ValueError(f"groups must be a positive divisor of the features' {in_channels} channels, got {groups!r}")
        if levels < 1:
            raise ValueError(f"the cost volume needs at least one disparity level, got {levels}")
        self.levels = levels
        self.groups = groups
        self.out_channels = groups

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return group_correlation_volume(left, right, self.levels, self.groups)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, groups={self.groups}"
