"""Faster evaluations of the same network: BatchNorm folding, channels-last layout, banded
regression at inference, and BatchNorm-safe activation checkpointing for training (plain PyTorch;
the CPU convolution routes are the opt-in backend in ``stereo/accel/``).

None of these changes the model's function. Folding BatchNorm into the preceding convolution and the
channels-last convolution kernels change float rounding only (≈1e-6 relative); the banded
regression is exact. ``tests/test_performance_paths.py`` checks each against the plain path.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.checkpoint import checkpoint

# 1/4-resolution rows per band in the banded regression: 8 rows = 32 output rows, i.e. a
# 192×32×960 probability band (24 MB) at 544×960 instead of the 400 MB full volume.
DEFAULT_CHUNK_ROWS = 8
_CONVS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}  # by parameter rank


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


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that directly follows a convolution inside an
    ``nn.Sequential`` into that convolution (in place; the BN becomes ``nn.Identity``).

    Returns the number of folded pairs. Inference only: the folded network no longer has BN
    buffers, so do not train it or save its state dict as a checkpoint.
    """
    if module.training:
        raise ValueError("fold_batchnorm needs an eval-mode module (BatchNorm must use running statistics)")
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, _CONVS) and isinstance(bn, _BatchNorm) and bn.track_running_stats:
                transpose = isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d))
                seq[i] = fuse_conv_bn_eval(conv, bn, transpose=transpose)
                seq[i + 1] = nn.Identity()
                folded += 1
    return folded


def optimize_for_inference(model: nn.Module, chunk_rows: int | None = DEFAULT_CHUNK_ROWS) -> nn.Module:
    """An eval-mode copy of a ``StereoNetwork`` with every inference-only evaluation switched on:
    BatchNorm folded, channels-last convolutions, the cost volume built in place and handed over to
    the aggregation (``release_volume``), streaming efficient attention (``chunk_positions``) and
    banded regression (``chunk_rows`` low-resolution rows per band, where the regression has one and
    it is exact; None = whole volume at once).

    The original model is left untouched (it stays the one to train, save or export). Run the copy
    under ``torch.inference_mode()`` (the streaming and in-place paths refuse to record gradients).
    """
    from .attention import DEFAULT_CHUNK_POSITIONS

    fast = copy.deepcopy(model).eval()
    fold_batchnorm(fast)
    fast.channels_last = True
    fast.release_volume = True
    volume, regression = getattr(fast, "cost_volume", None), getattr(fast, "regression", None)
    if hasattr(volume, "in_place"):
        volume.in_place = True
    if hasattr(regression, "chunk_rows") and not regression.align_corners:
        fast.regression_chunk_rows = chunk_rows
    for module in fast.modules():
        if hasattr(module, "chunk_positions"):
            module.chunk_positions = DEFAULT_CHUNK_POSITIONS
    return fast


@contextmanager
def frozen_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorms normalise with batch statistics but leave running statistics and
    ``num_batches_tracked`` as they were: what a checkpointed segment's recomputation must do, or
    every recomputed BN would apply its momentum update twice per step. (Momentum 0 rather than
    ``track_running_stats=False``, so the recomputation saves the same tensors as the forward.)"""
    layers = [(m, m.momentum, m.num_batches_tracked.clone()) for m in module.modules()
              if isinstance(m, _BatchNorm) and m.track_running_stats]
    for layer, _, _ in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, momentum, tracked in layers:
            layer.momentum = momentum
            layer.num_batches_tracked.copy_(tracked)


def maybe_checkpoint(enabled: bool, owner: nn.Module, function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)``, with its activations recomputed in backward instead of stored when
    ``enabled`` and gradients are being recorded (BatchNorm statistics updated once, see above)."""
    if not (enabled and torch.is_grad_enabled()):
        return function(*args)
    return checkpoint(
        function, *args, use_reentrant=False,
        context_fn=lambda: (nullcontext(), frozen_batchnorm_statistics(owner)),
    )
