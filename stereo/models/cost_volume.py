"""PSMNet's concatenation cost volume, written level by level into one preallocated tensor.

Each level is two strided slice copies (vectorised over channels, rows and columns); nothing but the
volume itself is allocated, directly in the memory format the 3-D convolutions want (a channels-last
copy of a finished volume would hold two volumes at once: +400 MB at 544×960, max_disp 192).

The backward pass is written out too (``_ConcatenationVolume``): autograd's own backward for 2·levels
in-place slice writes clones the whole volume gradient once per write (measured: 96 clones of the
100 MB gradient, 14 % of a 256×512 training step); the explicit one reads the gradient once.
"""

from __future__ import annotations

from typing import Any

import torch


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
    needs_backward = torch.is_grad_enabled() and (left.requires_grad or right.requires_grad)
    if needs_backward and not torch.jit.is_tracing():  # the ONNX tracer cannot export a Python Function
        return _ConcatenationVolume.apply(left, right, levels, channels_last)
    return _fill_volume(left, right, levels, channels_last)


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


class _ConcatenationVolume(torch.autograd.Function):
    """The volume's gradient reaches each feature map as a sum of its shifted level slices."""

    @staticmethod
    def forward(ctx: Any, left: torch.Tensor, right: torch.Tensor, levels: int, channels_last: bool) -> torch.Tensor:
        ctx.levels = levels
        return _fill_volume(left, right, levels, channels_last)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        batch, channels2, _, height, width = grad.shape
        channels = channels2 // 2
        grad_left = grad.new_zeros(batch, channels, height, width)
        grad_right = grad.new_zeros(batch, channels, height, width)
        for i in range(min(ctx.levels, width)):
            grad_left[:, :, :, i:] += grad[:, :channels, i, :, i:]
            grad_right[:, :, :, : width - i] += grad[:, channels:, i, :, i:]
        return grad_left, grad_right, None, None
