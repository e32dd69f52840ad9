"""Full precision inside autocast regions, on every device."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def autocast_off(device_type: str) -> AbstractContextManager:
    """``torch.autocast(device_type, enabled=False)`` where the device has autocast at all (CPU, CUDA,
    ...); nothing to switch off elsewhere (``meta``, on which the device-placement test runs)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return nullcontext()
