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
    return torch.device(device)
