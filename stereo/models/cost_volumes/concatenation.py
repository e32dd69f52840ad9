"""PSMNet's concatenation cost volume: N×2C×levels×H×W, the two views' features side by side.

Two evaluations of the same values (bit for bit), chosen explicitly with ``in_place``:

- out of place (the default): pad, concatenate, stack. Autograd's backward only slices the volume
  gradient (the in-place level writes below would make it clone the whole volume gradient once per
  write: 2·levels clones of a 100 MB gradient per 256×512 sample).
- ``in_place=True`` (the inference form, ``for_inference``; refused while gradients are recorded): level
  by level into one preallocated tensor, two strided slice copies per level, directly in the memory
  format the 3-D convolutions want. Nothing but the volume is allocated (the stacked planes and a
  channels-last copy would each hold a second volume: +400 MB at 544×960, max_disp 192).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..components import CostVolume


class ConcatenationVolume(CostVolume):
    """PSMNet's volume: ``2 * in_channels`` channels. ``channels_last`` (NDHWC strides, the network's
    layout) and ``in_place`` are run-time settings, not architecture."""

    def __init__(self, in_channels: int, levels: int) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"the cost volume needs at least one disparity level, got {levels}")
        self.levels = levels
        self.out_channels = 2 * in_channels
        self.in_place = False

    def for_inference(self) -> ConcatenationVolume:
        """Built in place: one volume in memory instead of the stacked planes and the volume."""
        self.in_place = True
        return self

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return concatenation_volume(left, right, self.levels, self.channels_last, self.in_place)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


def concatenation_volume(
    left: torch.Tensor, right: torch.Tensor, levels: int, channels_last: bool = False, in_place: bool = False
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
    if not in_place:
        volume = _stacked_volume(left, right, levels)
        return volume.contiguous(memory_format=torch.channels_last_3d) if channels_last else volume
    if torch.is_grad_enabled() and (left.requires_grad or right.requires_grad):
        raise ValueError("the in-place concatenation volume is for inference (no gradients); "
                         "train with in_place=False (a network optimize_for_inference did not make)")
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
