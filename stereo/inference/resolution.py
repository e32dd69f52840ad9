"""``mode=downscale``: run at 1/``factor`` resolution and bring the disparity back to full size (4x
less memory and time at factor 2; it also halves the disparity range the network must search)."""

from __future__ import annotations

import math

import numpy as np

from stereo.inference.checks import MIN_SIDE, InputError


def downscaled_size(width: int, height: int, factor: float) -> tuple[int, int]:
    """(width, height) at 1/``factor``; refused below the smallest image stereo matching takes (a
    silent clamp would change the factor and the aspect ratio)."""
    small = (round(width / factor), round(height / factor))
    if min(small) < MIN_SIDE:
        raise InputError(f"downscale={factor:g}: a {width}x{height} image would become {small[0]}x{small[1]}, "
                         f"below the {MIN_SIDE}x{MIN_SIDE} minimum; use downscale <= "
                         f"{math.floor(100 * min(width, height) / MIN_SIDE) / 100:g}")
    return small


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``size`` (width, height) by area averaging."""
    import cv2

    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def enlarge(disparity: np.ndarray, confidence: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A small disparity and confidence brought back to ``width`` x ``height``; disparities are
    horizontal pixel offsets, so they scale by the width ratio."""
    import cv2

    factor = width / disparity.shape[1]
    disparity = cv2.resize(disparity, (width, height), interpolation=cv2.INTER_LINEAR) * factor
    confidence = cv2.resize(confidence, (width, height), interpolation=cv2.INTER_LINEAR)
    return disparity.astype(np.float32), np.clip(confidence, 0, 1).astype(np.float32)
