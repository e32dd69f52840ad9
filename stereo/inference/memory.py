"""The predictor's memory model: how much one forward pass needs, and how much the device has.

The network estimates its own peak (``StereoNetwork.inference_bytes``: each component says what it
adds, from measured figures for PSMNet's components and from channel counts and the volume's resolution
for the others: docs/inference.md#high-resolution-images-within-a-memory-budget); this module adds what
no component holds (interpreter, torch, weights) and headroom for allocator slack and for the figures
being measured on a few sizes only. With them PSMNet's stacked hourglass plans with 12 B (optimised) and
21 B (plain) per padded pixel x disparity level, as measured.
"""

from __future__ import annotations

import os

import torch

# Peak memory measured as ru_maxrss above the process baseline (~0.3 GB); the rest of the fixed part
# and the 1.2x headroom are planning margins, not measurements.
FIXED_OVERHEAD_BYTES = 0.5e9
HEADROOM = 1.2


def estimate_memory_gb(network: torch.nn.Module, height: int, width: int, max_disp: int, batch: int = 1,
                       optimized: bool = True) -> float:
    """Rough peak memory in GB of one full-image forward pass of ``network`` on ``batch`` padded
    ``height`` x ``width`` pairs searched over ``max_disp`` levels (CPU fp32; ``optimized``: through
    ``optimize_for_inference``)."""
    need = network.inference_bytes(height, width, max_disp, batch, bool(optimized))
    return (HEADROOM * need + FIXED_OVERHEAD_BYTES) / 1e9


def device_memory_gb(device: torch.device) -> float | None:
    """Total memory of ``device`` in GB (physical RAM for the CPU); None where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 1e9
    if device.type == "cpu":
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9
        except (ValueError, OSError, AttributeError):
            return None
    return None
