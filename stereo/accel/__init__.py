"""Opt-in execution backends for a built network: ``apply_backend(model, "plain" | "cpu")``.

The network classes in ``stereo.models`` are plain PyTorch; a backend only changes *how* some of
their layers compute on a given device, never what they compute, and never their parameters or
state-dict keys (checkpoints do not record a backend). ``plain`` (the default) leaves the network
as built; ``cpu`` is ``stereo.accel.cpu``: convolution routes around slow PyTorch CPU kernels, for
CPU training (the ``demo_cpu`` recipe). GPU recipes use ``plain``. Inference takes the 3-D routes
through ``optimize_for_inference`` whatever the backend (they only act on CPU fp32 input).
"""

from __future__ import annotations

from torch import nn

from .cpu import use_cpu_convolutions, use_cpu_volume_convolutions, use_plain_convolutions

BACKENDS = ("plain", "cpu")


def apply_backend(model: nn.Module, backend: str) -> nn.Module:
    """Switch ``model``'s layers (in place) to ``backend``'s implementations; returns ``model``."""
    if backend not in BACKENDS:
        raise ValueError(f"model_backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "cpu":
        use_cpu_convolutions(model)
    else:
        use_plain_convolutions(model)
    return model


__all__ = ["BACKENDS", "apply_backend", "use_cpu_convolutions", "use_cpu_volume_convolutions", "use_plain_convolutions"]
