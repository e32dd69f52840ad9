"""Sample transforms: raw dataset dict (uint8 numpy) -> model-ready tensors (docs/data.md#sample-format).

Training crops first and works on the uint8 crop (cheap look-up tables, no full-frame float copy),
so everything beyond image decoding stays a small fraction of a sample's time. Randomness comes from
a ``numpy.random.Generator`` that is either passed in or bound lazily to the process's torch seed,
which differs per DataLoader worker, per rank and per epoch yet is reproducible from the global seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from stereo.data.normalize import normalize_image

RIGHT_VIEW_KEYS = ("right", "disparity_right", "valid_right")  # cropped with the right view's offset
IMAGE_KEYS = ("left", "right")


def _process_seed() -> int:
    """The torch seed of this process (a DataLoader worker has its own), mixed with the DDP rank."""
    seed = torch.initial_seed()
    if torch.utils.data.get_worker_info() is None and torch.distributed.is_available() and torch.distributed.is_initialized():
        seed = seed * 1000003 + torch.distributed.get_rank()  # workers get the rank from Lightning's init fn
    return seed


def to_tensors(sample: dict[str, Any]) -> dict[str, Any]:
    """Images -> ImageNet-normalised 3×H×W float32; other arrays -> tensors (float32 or bool)."""
    out: dict[str, Any] = {}
    for key, value in sample.items():
        if key in IMAGE_KEYS:
            out[key] = normalize_image(np.ascontiguousarray(value))
        elif isinstance(value, np.ndarray):
            array = np.ascontiguousarray(value if value.dtype == np.bool_ else value.astype(np.float32, copy=False))
            out[key] = torch.from_numpy(array)
        else:
            out[key] = value
    return out


class EvalTransform:
    """Normalisation only: evaluation sees full images (the model pads them with ``Padder``)."""

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        return to_tensors(sample)


class ColorAugment:
    """Photometric jitter of one uint8 image: saturation, contrast, brightness, then gamma.

    Ranges follow common stereo training practice (RAFT-Stereo / OpenStereo); the caller draws
    parameters separately per view, so the two views differ as real camera pairs do. The three
    linear adjustments fold into one weighted sum with the grey image, gamma into one look-up table.
    """

    def __init__(self, brightness: tuple[float, float] = (0.6, 1.4), contrast: tuple[float, float] = (0.6, 1.4),
                 gamma: tuple[float, float] = (0.8, 1.2), saturation: tuple[float, float] = (0.0, 1.4)) -> None:
        self.brightness, self.contrast, self.gamma, self.saturation = brightness, contrast, gamma, saturation

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        brightness = rng.uniform(*self.brightness)
        contrast = rng.uniform(*self.contrast)
        gamma = rng.uniform(*self.gamma)
        saturation = rng.uniform(*self.saturation)
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        mean = float(cv2.mean(grey)[0])
        # brightness·(contrast·(saturation·x + (1 − saturation)·grey) + (1 − contrast)·mean)
        linear = cv2.addWeighted(image, brightness * contrast * saturation,
                                 cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB), brightness * contrast * (1.0 - saturation),
                                 brightness * (1.0 - contrast) * mean)
        table = ((np.arange(256, dtype=np.float32) / 255.0) ** gamma * 255.0 + 0.5).astype(np.uint8)
        return cv2.LUT(linear, table)


class TrainTransform:
    """Same random crop on both views and all maps, asymmetric colour jitter, optional vertical jitter.

    ``vertical_jitter`` (pixels) shifts the right view's crop up or down by a random integer, leaving
    the ground truth unchanged: it teaches robustness to imperfect rectification.
    """

    def __init__(self, crop_size: Sequence[int], color: bool = True, vertical_jitter: int = 0,
                 rng: np.random.Generator | None = None) -> None:
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"crop_size must be [height, width] with positive values, got {list(crop_size)}")
        if vertical_jitter < 0:
            raise ValueError(f"vertical_jitter must be >= 0 pixels, got {vertical_jitter}")
        self.crop_height, self.crop_width = int(crop_size[0]), int(crop_size[1])
        self.color = ColorAugment() if color else None
        self.vertical_jitter = int(vertical_jitter)
        self._fixed_rng = rng
        self._rng: np.random.Generator | None = None
        self._bound_seed: int | None = None

    def _generator(self) -> np.random.Generator:
        if self._fixed_rng is not None:
            return self._fixed_rng
        seed = _process_seed()
        if seed != self._bound_seed:
            self._rng, self._bound_seed = np.random.default_rng(seed), seed
        return self._rng

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        rng = self._generator()
        height, width = sample["left"].shape[:2]
        if height < self.crop_height or width < self.crop_width:
            raise ValueError(
                f"{sample.get('name', '?')}: image is {width}x{height}, smaller than the training crop "
                f"{self.crop_width}x{self.crop_height}; lower data.crop_size or use larger images")
        y0 = int(rng.integers(height - self.crop_height + 1))
        x0 = int(rng.integers(width - self.crop_width + 1))
        y_right = y0
        if self.vertical_jitter:
            y_right = int(np.clip(y0 + rng.integers(-self.vertical_jitter, self.vertical_jitter + 1),
                                  0, height - self.crop_height))
        out: dict[str, Any] = {}
        for key, value in sample.items():
            if isinstance(value, np.ndarray) and value.shape[:2] == (height, width):
                top = y_right if key in RIGHT_VIEW_KEYS else y0
                value = value[top:top + self.crop_height, x0:x0 + self.crop_width]
            out[key] = value
        if self.color is not None:
            out["left"] = self.color(np.ascontiguousarray(out["left"]), rng)
            out["right"] = self.color(np.ascontiguousarray(out["right"]), rng)
        return to_tensors(out)
