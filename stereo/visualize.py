"""Colour maps for disparity and error, shared by TensorBoard, evaluation exports and inference.

Ranges are always explicit: a per-frame min/max makes colours flicker across steps and video frames,
so callers pass a fixed range (e.g. 0..max_disp) or one computed once per sequence.
"""

from __future__ import annotations

import cv2
import numpy as np

# KITTI devkit error colours: |e| bins in px (upper bounds) and BGR->RGB colours, blue (good) to red.
_ERROR_BINS = np.array([0.1875, 0.375, 0.75, 1.5, 3.0, 6.0, 12.0, 24.0, 48.0, np.inf])
_ERROR_COLORS = np.array(
    [
        [49, 54, 149], [69, 117, 180], [116, 173, 209], [171, 217, 233], [224, 243, 248],
        [254, 224, 144], [253, 174, 97], [244, 109, 67], [215, 48, 39], [165, 0, 38],
    ],
    dtype=np.uint8,
)


def colorize_disparity(
    disparity: np.ndarray, vmin: float, vmax: float, valid: np.ndarray | None = None
) -> np.ndarray:
    """H×W disparity -> H×W×3 uint8 RGB (turbo colour map over the fixed range [vmin, vmax]).

    Pixels outside ``valid`` (and non-finite ones) are black.
    """
    if vmax <= vmin:
        raise ValueError(f"colour range must have vmax > vmin, got [{vmin}, {vmax}]")
    disp = np.asarray(disparity, dtype=np.float32)
    scaled = np.nan_to_num((disp - vmin) / (vmax - vmin), nan=0.0, posinf=1.0, neginf=0.0)
    grey = (np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    rgb = cv2.applyColorMap(grey, cv2.COLORMAP_TURBO)[..., ::-1]
    mask = np.isfinite(disp) if valid is None else (np.asarray(valid, bool) & np.isfinite(disp))
    return np.where(mask[..., None], rgb, 0).astype(np.uint8)


def colorize_error(
    prediction: np.ndarray, target: np.ndarray, valid: np.ndarray
) -> np.ndarray:
    """KITTI-style absolute-error map (H×W×3 uint8 RGB): fixed bins, blue < 0.19 px ... red > 48 px.

    Pixels without ground truth are black.
    """
    error = np.abs(np.asarray(prediction, np.float32) - np.asarray(target, np.float32))
    index = np.searchsorted(_ERROR_BINS, np.nan_to_num(error, nan=np.inf), side="left")
    rgb = _ERROR_COLORS[np.minimum(index, len(_ERROR_COLORS) - 1)]
    return np.where(np.asarray(valid, bool)[..., None], rgb, 0).astype(np.uint8)
