"""Stereo datasets and the file formats they use.

The readers/writers load instantly; the dataset classes (which import torch) are resolved on first
use, so ``from stereo.data import read_pfm`` stays cheap for scripts that only convert files.
"""

from __future__ import annotations

import importlib
from typing import Any

from stereo.data.io import (
    Calibration,
    DataError,
    read_disparity,
    read_image,
    read_mask,
    read_pfm,
    write_disparity_png16,
    write_image,
    write_pfm,
)

_LAZY = {
    "SceneFlowDataset": "stereo.data.sceneflow",
    "KITTIDataset": "stereo.data.kitti",
    "MiddleburyDataset": "stereo.data.middlebury",
    "LegacyMiddleburyDataset": "stereo.data.middlebury",
    "ETH3DDataset": "stereo.data.eth3d",
    "load_real_samples": "stereo.data.real_samples",
}

__all__ = [
    "Calibration",
    "DataError",
    "read_disparity",
    "read_image",
    "read_mask",
    "read_pfm",
    "write_disparity_png16",
    "write_image",
    "write_pfm",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stereo.data' has no attribute {name!r}")
