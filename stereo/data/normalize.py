"""ImageNet normalisation, the input convention of PSMNet and of every network here.

One place for the constants so training, evaluation, inference and export cannot drift apart.
"""

from __future__ import annotations

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 RGB -> 3×H×W float32 tensor, ImageNet-normalised."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H×W×3 uint8 RGB image, got {image.dtype} {image.shape}")
    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return chw.sub_(mean).div_(std)


def denormalize_image(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """3×H×W ImageNet-normalised image -> H×W×3 uint8 RGB (for display)."""
    chw = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    chw = chw * np.asarray(IMAGENET_STD, np.float32)[:, None, None] + np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    return (np.clip(chw.transpose(1, 2, 0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
