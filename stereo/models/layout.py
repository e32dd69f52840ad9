"""Memory layouts: which layout a tensor is in, a (N, C, positions) view of it, and laying out a
module's weights channels-last (NHWC / NDHWC) or contiguous.

Channels-last is an inference layout here (``StereoNetwork.channels_last``, switched on by
``optimize_for_inference``); the attention blocks and the CPU backend read both layouts without copies.
"""

from __future__ import annotations

import torch
from torch import nn

_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}  # by tensor rank


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """The layout ``x`` is stored in: channels-last (for its rank) when unambiguously so, else
    contiguous — what a same-layout output of an operation on ``x`` should be allocated in."""
    layout = _CHANNELS_LAST.get(x.dim())
    return layout if layout and x.is_contiguous(memory_format=layout) and not x.is_contiguous() else torch.contiguous_format


def positions_view(x: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) → (N, C, positions) as a view (no copy) for contiguous and channels-last tensors."""
    if x.is_contiguous():
        return x.flatten(2)
    moved = x.movedim(1, -1)  # channels-last data is contiguous in this order
    if moved.is_contiguous():
        return moved.flatten(1, -2).transpose(1, 2)
    return x.flatten(2)


def set_memory_format(module: nn.Module, channels_last: bool) -> None:
    """Lay out every 4-D parameter NHWC and every 5-D one NDHWC (``channels_last``), or all
    contiguous, in place: parameter identities (and so optimisers holding them) are kept."""
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.dim() in _CHANNELS_LAST:
                layout = _CHANNELS_LAST[parameter.dim()] if channels_last else torch.contiguous_format
                parameter.data = parameter.data.contiguous(memory_format=layout)
