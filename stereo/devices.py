"""One rule for turning a device setting into a ``torch.device``, shared by every entry point."""

from __future__ import annotations

import os

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: this process's GPU when CUDA is present (``LOCAL_RANK`` under torchrun), else the CPU.
    Anything else is passed to ``torch.device`` as it is (``cpu``, ``cuda``, ``cuda:1``)."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device}: not a device; use auto, cpu, cuda, cuda:<index> or mps") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device={device}: {build} (torch {torch.__version__}); use device=cpu or device=auto")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device={device}: only {torch.cuda.device_count()} CUDA device(s) are visible "
                             f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device}: MPS is not available on this machine; use device=cpu or device=auto")
    return resolved
