"""Pad/unpad pair: the networks need H and W divisible by 16, users' images rarely are.

``top_right`` is what PSMNet's authors do (zeros above and to the right of the image, so the
bottom-left pixel grid and therefore the disparities are unchanged); ``center`` splits the padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

PAD_MODES = ("top_right", "center")


class Padder:
    """Pads N×C×H×W (or N×H×W) tensors to a multiple of ``divisor`` (or to at least ``min_size``)."""

    def __init__(
        self,
        height: int,
        width: int,
        divisor: int = 16,
        mode: str = "top_right",
        min_size: tuple[int, int] | None = None,
    ) -> None:
        if mode not in PAD_MODES:
            raise ValueError(f"pad mode must be one of {PAD_MODES}, got {mode!r}")
        target_h = max(height, min_size[0] if min_size else 0)
        target_w = max(width, min_size[1] if min_size else 0)
        target_h = math.ceil(target_h / divisor) * divisor
        target_w = math.ceil(target_w / divisor) * divisor
        dh, dw = target_h - height, target_w - width
        if mode == "top_right":
            self.top, self.bottom, self.left, self.right = dh, 0, 0, dw
        else:
            self.top, self.left = dh // 2, dw // 2
            self.bottom, self.right = dh - self.top, dw - self.left
        self.height, self.width = height, width
        self.padded_size = (target_h, target_w)

    def pad(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Zero-pad each tensor's last two dimensions."""
        widths = (self.left, self.right, self.top, self.bottom)
        return [F.pad(t, widths) for t in tensors]

    def unpad(self, tensor: torch.Tensor) -> torch.Tensor:
        """Crop the last two dimensions back to the original height and width."""
        return tensor[..., self.top : self.top + self.height, self.left : self.left + self.width]


@dataclass(frozen=True)
class InputSpec:
    """What a network accepts (``StereoNetwork.input_spec``): height and width multiples of ``divisor``
    and at least ``min_size`` each. Every caller pads to it (evaluation, inference, export's checks)
    instead of assuming PSMNet's 256, which the light networks' features do not need."""

    divisor: int
    min_size: int

    def padder(self, height: int, width: int, mode: str = "top_right") -> Padder:
        """The padder that brings a ``height`` x ``width`` input to what the network accepts."""
        return Padder(height, width, self.divisor, mode=mode, min_size=(self.min_size, self.min_size))

    def padded_size(self, height: int, width: int) -> tuple[int, int]:
        return self.padder(height, width).padded_size

    def to_dict(self) -> dict[str, int]:
        return {"divisor": self.divisor, "min_size": self.min_size}


def run_padded(network: torch.nn.Module, left: torch.Tensor, right: torch.Tensor, mode: str = "top_right",
               **options) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """The full-image route, the one way every caller runs a network on a whole image (the predictor,
    evaluation, validation): N×3×H×W views zero-padded to ``network.input_spec`` (``mode``), the
    network's output(s) cropped back to H×W. ``options`` go to the network's forward."""
    padder = network.input_spec.padder(left.shape[-2], left.shape[-1], mode)
    output = network(*padder.pad(left, right), **options)
    if isinstance(output, (tuple, list)):
        return tuple(padder.unpad(t) for t in output)
    return padder.unpad(output)
