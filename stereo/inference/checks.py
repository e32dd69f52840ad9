"""Checks on what users hand the predictor: image type, size and shape, pair consistency, a swapped-pair
test that needs no network, the precision the device really has, and weights that are all finite.
Each refusal is one ``InputError`` naming the file."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

# Below this a 1/4-resolution feature map has fewer than 8 cells: nothing meaningful can be matched.
MIN_SIDE = 32
# cost(correct direction) / cost(opposite) above this => warn. On the real samples in
# ../shared/data/real (Middlebury 2001-2006, KITTI 2012/2015, FlyingThings3D) correct pairs score
# 0.16-0.43 and the same pairs swapped 2.3-7.2, so 1.5 leaves a wide margin both ways.
SWAP_RATIO = 1.5


class InputError(ValueError):
    """A stereo pair that cannot be processed (wrong size, type or shape); names the files."""


class SwappedPairWarning(UserWarning):
    """The right image appears to be the left camera's view and vice versa."""


def as_rgb_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Bring grey (H×W or H×W×1) and RGBA images to H×W×3 uint8 RGB; reject anything else clearly."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"{name}: expected 8-bit pixels (uint8), got {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise InputError(f"{name}: expected an H×W, H×W×3 or H×W×4 image, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def check_pair(
    left: np.ndarray, right: np.ndarray, left_name: str = "left", right_name: str = "right"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one pair (same size, large enough) and return both as H×W×3 uint8."""
    left, right = as_rgb_uint8(left, left_name), as_rgb_uint8(right, right_name)
    if left.shape != right.shape:
        raise InputError(
            f"{left_name} is {left.shape[1]}x{left.shape[0]} but {right_name} is "
            f"{right.shape[1]}x{right.shape[0]} (width x height): a rectified pair must have equal sizes"
        )
    height, width = left.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise InputError(
            f"{left_name}: image is {width}x{height}, too small for stereo matching "
            f"(need at least {MIN_SIDE}x{MIN_SIDE} pixels)"
        )
    return left, right


def swap_score(left: np.ndarray, right: np.ndarray, max_disp: int, work_width: int = 320) -> float:
    """How much better the pair matches with the *wrong* shift direction (> 1 suggests swapped views).

    For a correct rectified pair, ``left(x) ≈ right(x - d)`` with d ≥ 0. This cheap, network-free
    check block-matches a small grey copy in both directions (best of 1..max_disp shifts per pixel,
    5×5 box-filtered absolute differences) and returns cost(correct direction) / cost(opposite).
    Independent of the network, so it also works with an untrained or wrong model.
    """
    import cv2

    height, width = left.shape[:2]
    scale = min(1.0, work_width / width)
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    grey_l = cv2.resize(cv2.cvtColor(left, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
    grey_r = cv2.resize(cv2.cvtColor(right, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
    grey_l, grey_r = grey_l.astype(np.float32), grey_r.astype(np.float32)
    # at most a quarter of the width, so the columns a shift wraps around (excluded) leave half
    shifts = range(1, max(2, min(size[0] // 4, math.ceil(max_disp * scale))) + 1)
    margin = shifts[-1]
    costs = {}
    for direction in (1, -1):
        best = np.full(grey_l.shape, np.inf, np.float32)
        for s in shifts:
            shifted = np.roll(grey_r, direction * s, axis=1)  # right(x - direction*s)
            best = np.minimum(best, cv2.blur(np.abs(grey_l - shifted), (5, 5)))
        costs[direction] = float(best[:, margin:-margin].mean()) + 1e-6
    return costs[1] / costs[-1]


def warn_if_swapped(left: np.ndarray, right: np.ndarray, disparity: np.ndarray, max_disp: int, name: str) -> None:
    """Warn (``SwappedPairWarning``) when the pair matches much better with the views exchanged."""
    score = swap_score(left, right, max_disp)
    if score > SWAP_RATIO:
        warnings.warn(
            f"{name}: the pair matches {score:.2f}x better with the views exchanged "
            f"(median predicted disparity {float(np.median(disparity)):.1f} px); "
            "left and right look swapped — pass the left camera's image as 'left'",
            SwappedPairWarning,
            stacklevel=3,
        )


def cpu_has_native(precision: str) -> bool:
    """Whether this CPU computes ``precision`` (bf16, fp16) natively (oneDNN's own probe; True where this
    torch build cannot tell)."""
    check = {"bf16": "_is_mkldnn_bf16_supported", "fp16": "_is_mkldnn_fp16_supported"}[precision]
    supported = getattr(torch.ops.mkldnn, check, None)
    return supported is None or bool(supported())


def warn_if_precision_is_emulated(device: torch.device, precision: str, option: str | None = None) -> None:
    """bf16/fp16 on a CPU without native units is emulated: measured >20× slower than fp32 here.
    ``option``: the setting as the user wrote it (default ``precision=<precision>``)."""
    if device.type != "cpu" or precision == "fp32":
        return
    if not cpu_has_native(precision):
        warnings.warn(
            f"{option or f'precision={precision}'} on this CPU has no native {precision} support: autocast emulates it "
            "and runs far slower than fp32 (use fp32 on this machine, bf16/fp16 on GPUs or AMX CPUs)",
            RuntimeWarning,
            stacklevel=3,
        )


def check_finite_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Refuse a network with NaN/inf weights (a diverged run's checkpoint): its every output is NaN."""
    bad = {name: int((~torch.isfinite(t)).sum()) for name, t in model.state_dict().items()
           if t.is_floating_point() and not torch.isfinite(t).all()}
    if bad:
        first = next(iter(bad))
        raise InputError(f"{path}: {sum(bad.values())} weight value(s) in {len(bad)} tensor(s) are NaN/inf (first: "
                         f"{first}); the checkpoint comes from a diverged or corrupted run: use an earlier checkpoint")
