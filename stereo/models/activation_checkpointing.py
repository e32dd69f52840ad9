"""Activation checkpointing that is safe with BatchNorm: a stage's activations recomputed in
backward instead of stored (less training memory, more step time), with the same outputs, gradients
and running statistics as storing them (``tests/test_performance_paths.py``).

Used by the network (``checkpoint_features``, ``checkpoint_aggregation``) and by the aggregations'
stages (``Aggregation.checkpointing``). Not to be confused with ``checkpoints.py`` (checkpoint files).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint


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
