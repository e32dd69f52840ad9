"""The classical baseline every network here must beat: OpenCV's semi-global block matching.

StereoSGBM leaves pixels it cannot match (occlusions, left/right inconsistencies, speckles removed by
its filter) marked invalid. A network predicts every pixel, so for a fair *dense* comparison those
holes are filled the way the KITTI devkit interpolates sparse submissions (each hole takes the
smaller — background — of the nearest valid disparities left and right on its row, borders take the
nearest valid value); the raw valid coverage is reported next to it.

The defaults below were chosen on the synthetic TEST split only (``python -m stereo.tune_sgbm``), never on
the real pairs, which are the held-out test set.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from stereo.inference.checks import check_pair
from stereo.models import check_max_disp

MODES = ("sgbm", "sgbm_3way", "hh", "hh4")


def fill_invalid(disparity: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Dense disparity: holes take the background (min) of their row neighbours, as the KITTI devkit does.

    Inside a row a hole gets ``min(nearest valid left, nearest valid right)``; holes touching the
    image border get the nearest valid value of their row. Rows without any valid pixel take the
    nearest filled row above/below; an image without any valid pixel becomes all zeros.
    """
    disparity = np.asarray(disparity, dtype=np.float32)
    valid = np.asarray(valid, dtype=bool)
    if disparity.shape != valid.shape or disparity.ndim != 2:
        raise ValueError(f"disparity {disparity.shape} and valid {valid.shape} must be the same H×W shape")
    if not valid.any():
        return np.zeros_like(disparity)
    filled = _fill_rows(disparity, valid)
    row_has_valid = valid.any(axis=1)
    if not row_has_valid.all():  # whole rows without a match: copy the nearest filled row (columns as rows)
        row_mask = np.repeat(row_has_valid[:, None], disparity.shape[1], axis=1)
        filled = _fill_rows(filled.T, row_mask.T, background=False).T
    return np.ascontiguousarray(filled)


def _fill_rows(values: np.ndarray, valid: np.ndarray, background: bool = True) -> np.ndarray:
    """Fill invalid entries of each row from the nearest valid entries left/right (min of both, or nearest)."""
    height, width = values.shape
    columns = np.arange(width)
    left_index = np.maximum.accumulate(np.where(valid, columns, -1), axis=1)
    right_index = np.minimum.accumulate(np.where(valid, columns, width)[:, ::-1], axis=1)[:, ::-1]
    has_left, has_right = left_index >= 0, right_index < width
    left_value = np.take_along_axis(values, np.clip(left_index, 0, width - 1), axis=1)
    right_value = np.take_along_axis(values, np.clip(right_index, 0, width - 1), axis=1)
    if background:
        both = np.minimum(left_value, right_value)
    else:
        both = np.where(columns - left_index <= right_index - columns, left_value, right_value)
    fill = np.where(has_left & has_right, both, np.where(has_left, left_value, right_value))
    return np.where(valid, values, fill).astype(np.float32)


@dataclass(frozen=True)
class SGBMParams:
    """StereoSGBM settings. P1/P2 follow OpenCV's recommendation ``8·cn·bs²`` / ``32·cn·bs²`` (cn = 3).

    ``pad_left``: SGBM cannot match the leftmost ``num_disparities`` columns (their match would lie
    outside the right image); padding both images on the left by that many replicated columns lets
    it return values there instead of a blank strip.

    Defaults chosen by ``python -m stereo.tune_sgbm`` on the 20 synthetic TEST pairs (320×640, disparities
    < 96) over block size {3, 5, 7} × mode {sgbm_3way, hh} × uniqueness {5, 15} × pad_left: block 3,
    full-DP "hh", uniqueness 15, pad_left had the lowest mean dense EPE (1.50 px, bad-3 3.75 %; the
    OpenCV-sample-like block 5 / 3-way / 5 scored 1.74 px). Every setting ranked pad_left first
    (−0.4 px EPE), a smaller block and a higher uniqueness ratio were better throughout, hh beat 3-way
    by ~0.05 px. Uniqueness 15 is the grid's edge; larger values were not tried.
    """

    block_size: int = 3
    mode: str = "hh"
    uniqueness_ratio: int = 15
    speckle_window_size: int = 100
    speckle_range: int = 2
    disp12_max_diff: int = 1
    pre_filter_cap: int = 63
    p1_factor: int = 8
    p2_factor: int = 32
    pad_left: bool = True

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.block_size % 2 == 0:
            raise ValueError(f"block_size must be odd and >= 1, got {self.block_size}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 0 < self.p1_factor < self.p2_factor:
            raise ValueError(f"need 0 < p1_factor < p2_factor, got {self.p1_factor}, {self.p2_factor}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class SGBMMatcher:
    """OpenCV StereoSGBM on uint8 RGB pairs; ``predict`` returns (dense disparity, raw-valid mask)."""

    def __init__(self, max_disp: int, params: SGBMParams | None = None) -> None:
        self.max_disp = check_max_disp(max_disp)  # OpenCV's numDisparities, like the networks' max_disp
        self.params = params or SGBMParams()

    def _matcher(self):
        import cv2

        p, channels = self.params, 3
        modes = {"sgbm": cv2.STEREO_SGBM_MODE_SGBM, "sgbm_3way": cv2.STEREO_SGBM_MODE_SGBM_3WAY,
                 "hh": cv2.STEREO_SGBM_MODE_HH, "hh4": cv2.STEREO_SGBM_MODE_HH4}
        return cv2.StereoSGBM_create(
            minDisparity=0,
            numDisparities=self.max_disp,
            blockSize=p.block_size,
            P1=p.p1_factor * channels * p.block_size**2,
            P2=p.p2_factor * channels * p.block_size**2,
            disp12MaxDiff=p.disp12_max_diff,
            preFilterCap=p.pre_filter_cap,
            uniquenessRatio=p.uniqueness_ratio,
            speckleWindowSize=p.speckle_window_size,
            speckleRange=p.speckle_range,
            mode=modes[p.mode],
        )

    def predict_raw(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(disparity in pixels, valid) straight from SGBM; invalid pixels hold -1."""
        import cv2

        left, right = check_pair(left, right)
        pad = self.max_disp if self.params.pad_left else 0
        if pad:
            left = cv2.copyMakeBorder(left, 0, 0, pad, 0, cv2.BORDER_REPLICATE)
            right = cv2.copyMakeBorder(right, 0, 0, pad, 0, cv2.BORDER_REPLICATE)
        # OpenCV matches the byte order it is given; RGB vs BGR only swaps P1's channel roles (symmetric)
        fixed_point = self._matcher().compute(left, right)[:, pad:]
        valid = fixed_point >= 0
        disparity = np.where(valid, fixed_point.astype(np.float32) / 16.0, -1.0).astype(np.float32)
        return disparity, valid

    def predict(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(dense disparity float32 H×W with holes filled by :func:`fill_invalid`, raw SGBM valid mask)."""
        disparity, valid = self.predict_raw(left, right)
        return fill_invalid(disparity, valid), valid

