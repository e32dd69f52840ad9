"""Running the network at another resolution than the input's, and bringing the result back.

- ``mode=downscale``: 1/``factor`` resolution (4x less memory and time at factor 2; it also halves the
  disparity range the network must search), for images too large for the memory budget.
- ``min_width``: a pair narrower than the images a network was trained on is enlarged to that width
  (bicubic, at most :data:`MAX_ENLARGEMENT` times). A network that matches at 1/8 sees a small image's
  structures a few cells wide; enlarged, they span the cells its training images gave them. Measured for
  the shipped weights (trained on 768-wide images) on the six Middlebury pairs, which are 384-671 px wide:
  better on every one (docs/evaluation.md#narrow-pairs).

Disparities are horizontal pixel offsets, so a result brought back to the input's width is multiplied by
the width ratio.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from stereo.inference.checks import MIN_SIDE, InputError

# Bicubic enlargement adds no detail beyond this; memory and time grow with its square.
MAX_ENLARGEMENT = 2.0


def downscaled_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """(width, height) at 1/``factor``; refused below the smallest image stereo matching takes (a
    silent clamp would change the factor and the aspect ratio)."""
    small = (round(width / factor), round(height / factor))
    if min(small) < MIN_SIDE:
        raise InputError(f"downscale={factor:g}: a {width}x{height} image would become {small[0]}x{small[1]}, "
                         f"below the {MIN_SIDE}x{MIN_SIDE} minimum; use downscale <= "
                         f"{math.floor(100 * min(width, height) / MIN_SIDE) / 100:g}")
    return small


def enlarged_size(width: int, height: int, min_width: int) -> tuple[int, int]:
    """(width, height) a pair runs at under ``min_width`` (0: off): its own when at least that wide,
    otherwise enlarged to ``min_width`` (at most :data:`MAX_ENLARGEMENT` times), the aspect ratio kept."""
    if width >= min_width:
        return width, height
    factor = min(MAX_ENLARGEMENT, min_width / width)
    return round(width * factor), round(height * factor)


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``size`` (width, height) by area averaging."""
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def enlarge_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A uint8 image enlarged to ``size`` (width, height), bicubic (saturated to 0..255)."""
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)


def to_input_size(disparity: np.ndarray, confidence: np.ndarray, width: int,
                  height: int) -> tuple[np.ndarray, np.ndarray]:
    """A disparity and confidence computed at another resolution brought back to ``width`` x ``height``:
    linear interpolation from a smaller map, area averaging from a larger one; disparities scaled by
    the width ratio."""
    factor = width / disparity.shape[1]
    interpolation = cv2.INTER_LINEAR if factor > 1 else cv2.INTER_AREA
    disparity = cv2.resize(disparity, (width, height), interpolation=interpolation) * factor
    confidence = cv2.resize(confidence, (width, height), interpolation=interpolation)
    return disparity.astype(np.float32), np.clip(confidence, 0, 1).astype(np.float32)
