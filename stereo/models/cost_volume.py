"""PSMNet's concatenation cost volume, built with one gather instead of a loop over disparities."""

from __future__ import annotations

import torch


def concatenation_volume(left: torch.Tensor, right: torch.Tensor, levels: int) -> torch.Tensor:
    """N×C×H×W features of both views → N×2C×levels×H×W volume.

    Level i holds the left feature at columns i.. and the right feature shifted right by i; columns
    < i are zero in both halves (exactly the authors' layout, which their weights expect).
    """
    if left.shape != right.shape or left.dim() != 4:
        raise ValueError(
            f"left and right features must both be N×C×H×W of the same shape, "
            f"got {tuple(left.shape)} and {tuple(right.shape)}"
        )
    if levels < 1:
        raise ValueError(f"the cost volume needs at least one disparity level, got {levels}")
    batch, channels, height, width = left.shape
    device = left.device
    level = torch.arange(levels, device=device).view(levels, 1)
    column = torch.arange(width, device=device).view(1, width)
    # Source column per (half, level, column): left reads column x, right reads column x - i.
    source = torch.stack([column.expand(levels, width), (column - level).clamp(min=0)])
    index = source.view(2, 1, levels, 1, width).expand(2, channels, levels, height, width)
    index = index.reshape(1, 2 * channels, levels, height, width).expand(batch, -1, -1, -1, -1)
    features = torch.cat([left, right], dim=1).unsqueeze(2).expand(-1, -1, levels, -1, -1)
    volume = features.gather(4, index)
    return volume.masked_fill_((column < level).unsqueeze(1), 0)
