"""PSMNet's concatenation cost volume, written level by level into one preallocated tensor.

Each level is two strided slice copies (vectorised over channels, rows and columns); nothing but the
volume itself is allocated, directly in the memory format the 3-D convolutions want (a channels-last
copy of a finished volume would hold two volumes at once: +400 MB at 544×960, max_disp 192).

When gradients are recorded the volume is built out of place instead (pad, concatenate, stack):
autograd's backward of the in-place level writes would clone the whole volume gradient once per
write (2·levels clones of a 100 MB gradient per 256×512 sample), the out-of-place one only slices it.
Both give the same values bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def concatenation_volume(
    left: torch.Tensor, right: torch.Tensor, levels: int, channels_last: bool = False
) -> torch.Tensor:
    """N×C×H×W features of both views → N×2C×levels×H×W volume (``channels_last``: NDHWC strides).

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
    if torch.is_grad_enabled() and (left.requires_grad or right.requires_grad):
        volume = _stacked_volume(left, right, levels)
        return volume.contiguous(memory_format=torch.channels_last_3d) if channels_last else volume
    return _fill_volume(left, right, levels, channels_last)


def _stacked_volume(left: torch.Tensor, right: torch.Tensor, levels: int) -> torch.Tensor:
    """The volume from out-of-place operations: level i = both halves shifted right by i, zero-padded."""
    width = left.shape[-1]
    planes = [torch.cat([left, right], dim=1)]
    for i in range(1, levels):
        if i < width:
            planes.append(F.pad(torch.cat([left[..., i:], right[..., :-i]], dim=1), (i, 0)))
        else:  # a shift past the image: nothing left in either half
            planes.append(planes[0].new_zeros(planes[0].shape))
    return torch.stack(planes, dim=2)


def _fill_volume(left: torch.Tensor, right: torch.Tensor, levels: int, channels_last: bool) -> torch.Tensor:
    batch, channels, height, width = left.shape
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    volume = torch.empty(batch, 2 * channels, levels, height, width, dtype=left.dtype, device=left.device,
                         memory_format=layout).zero_()
    volume[:, :channels, 0] = left
    volume[:, channels:, 0] = right
    for i in range(1, min(levels, width)):
        volume[:, :channels, i, :, i:] = left[:, :, :, i:]
        volume[:, channels:, i, :, i:] = right[:, :, :, :-i]
    return volume
