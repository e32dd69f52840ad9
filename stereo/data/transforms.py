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


def _scale_sample(sample: dict[str, Any], scale_x: float, scale_y: float) -> dict[str, Any]:
    """Every H×W array resized by (scale_x, scale_y); disparities multiplied by scale_x.

    Images are resampled linearly (area when shrinking); disparity maps and masks by nearest
    neighbour, so that no disparity is blended across a depth edge into a value no surface has.
    """
    height, width = sample["left"].shape[:2]
    size = (max(1, round(width * scale_x)), max(1, round(height * scale_y)))
    shrinking = scale_x * scale_y < 1.0
    out: dict[str, Any] = {}
    for key, value in sample.items():
        if not (isinstance(value, np.ndarray) and value.shape[:2] == (height, width)):
            out[key] = value
        elif key in IMAGE_KEYS:
            out[key] = cv2.resize(value, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        elif value.dtype == np.bool_:
            out[key] = cv2.resize(value.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        else:
            resized = cv2.resize(value, size, interpolation=cv2.INTER_NEAREST)
            out[key] = resized * np.float32(scale_x) if key.startswith("disparity") else resized
    return out


class TrainTransform:
    """Random scale, the same random crop on both views and all maps, then photometric and geometric
    perturbations of the views that leave the ground truth exact.

    Each option is one known to help zero-shot transfer from synthetic data (SPEC 8):

    - ``color``: brightness/contrast/gamma/saturation drawn separately per view (RAFT-Stereo,
      CREStereo: real cameras of a pair differ in gain and response);
    - ``scale`` = [lo, hi] log2 range and ``stretch`` (log2, x only): resize before cropping, the
      disparity multiplied by the horizontal factor (RAFT-Stereo's 2^[-0.2, 0.4] with ±0.2 stretch):
      disparities and object sizes the scenes did not have;
    - ``vertical_jitter`` (pixels): the right view's crop shifted up or down, the GT unchanged
      (imperfect rectification; RAFT-Stereo ±2 px, CREStereo ±2 px);
    - ``occlusion``: probability of pasting 1-2 patches of 50-100 px filled with the right view's
      mean colour onto the right view (RAFT-Stereo's eraser, CREStereo's occluding patch): the
      network learns to fill in what one view does not see instead of matching it;
    - ``grayscale``: probability of turning both views grey (cameras without colour).
    """

    def __init__(self, crop_size: Sequence[int], color: bool = True, vertical_jitter: int = 0,
                 scale: Sequence[float] | None = None, stretch: float = 0.0, occlusion: float = 0.0,
                 grayscale: float = 0.0, rng: np.random.Generator | None = None) -> None:
        if len(crop_size) != 2 or min(crop_size) <= 0:
            raise ValueError(f"crop_size must be [height, width] with positive values, got {list(crop_size)}")
        if vertical_jitter < 0:
            raise ValueError(f"vertical_jitter must be >= 0 pixels, got {vertical_jitter}")
        if scale is not None and (len(scale) != 2 or not -2.0 <= scale[0] <= scale[1] <= 2.0):
            raise ValueError(f"augment.scale must be null or [lo, hi] log2 factors in [-2, 2], got {scale}")
        if not 0.0 <= stretch <= 1.0:
            raise ValueError(f"augment.stretch must lie in [0, 1] (log2), got {stretch}")
        for name, p in (("occlusion", occlusion), ("grayscale", grayscale)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"augment.{name} is a probability in [0, 1], got {p}")
        self.crop_height, self.crop_width = int(crop_size[0]), int(crop_size[1])
        self.color = ColorAugment() if color else None
        self.vertical_jitter = int(vertical_jitter)
        self.scale = tuple(float(v) for v in scale) if scale is not None else None
        self.stretch, self.occlusion, self.grayscale = float(stretch), float(occlusion), float(grayscale)
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

    def _rescale(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        height, width = sample["left"].shape[:2]
        scale = 2.0 ** rng.uniform(*self.scale)
        scale_x = scale * 2.0 ** rng.uniform(-self.stretch, self.stretch) if self.stretch else scale
        # never below the crop: the factor is raised to what still fits
        scale_x = max(scale_x, (self.crop_width + 0.5) / width)
        scale_y = max(scale, (self.crop_height + 0.5) / height)
        return _scale_sample(sample, scale_x, scale_y)

    def _occlude(self, right: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        right = right.copy()
        mean = right.reshape(-1, 3).mean(axis=0).astype(np.uint8)
        height, width = right.shape[:2]
        for _ in range(int(rng.integers(1, 3))):
            patch_w, patch_h = int(rng.integers(50, 101)), int(rng.integers(50, 101))
            x0, y0 = int(rng.integers(0, max(1, width - patch_w))), int(rng.integers(0, max(1, height - patch_h)))
            right[y0:y0 + patch_h, x0:x0 + patch_w] = mean
        return right

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        rng = self._generator()
        if self.scale is not None:
            sample = self._rescale(sample, rng)
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
        if self.grayscale and rng.random() < self.grayscale:
            for key in IMAGE_KEYS:
                out[key] = cv2.cvtColor(cv2.cvtColor(np.ascontiguousarray(out[key]), cv2.COLOR_RGB2GRAY),
                                        cv2.COLOR_GRAY2RGB)
        if self.occlusion and rng.random() < self.occlusion:
            out["right"] = self._occlude(np.ascontiguousarray(out["right"]), rng)
        return to_tensors(out)
