"""Stereo datasets and the file formats they use.

The readers and writers of the formats are re-exported here (``from stereo.data import read_pfm``);
the datasets live in their own modules (``stereo.data.sceneflow.SceneFlowDataset``,
``stereo.data.kitti``, ``stereo.data.middlebury``, ``stereo.data.eth3d``, ``stereo.data.real_samples``),
which is also how the configs name them. The pair type they fill and the datasets' folder layouts,
shared with inference and submissions, are in ``stereo.data.pairs``.
"""

from __future__ import annotations

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
    write_png16,
)

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
    "write_png16",
]
