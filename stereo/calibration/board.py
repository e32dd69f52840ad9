"""Chessboard corners for calibration: detection, sub-pixel refinement, board coverage.

Detection follows OpenCV's ``stereo_calib`` sample: ``findChessboardCorners`` with adaptive
threshold and image normalisation, then ``cornerSubPix`` on an 11x11 window (corners of a printed
board are accurate to a few hundredths of a pixel after refinement, where detection alone gives
about half a pixel, and stereo reprojection RMS follows that).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DETECTION_FLAGS = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
SUBPIX_WINDOW = (11, 11)
SUBPIX_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 0.01)
COVERAGE_GRID = 8  # board coverage is the share of an 8x8 grid of image cells that some corner falls in


@dataclass(frozen=True)
class Board:
    """A chessboard: ``columns`` x ``rows`` *inner* corners, squares of ``square_size`` (any unit)."""

    columns: int
    rows: int
    square_size: float = 1.0

    @property
    def pattern(self) -> tuple[int, int]:
        return self.columns, self.rows

    def object_points(self) -> np.ndarray:
        """Corner positions on the board plane (z = 0), in the square size's unit, row-major as OpenCV finds them."""
        grid = np.zeros((self.rows * self.columns, 3), np.float32)
        grid[:, :2] = np.mgrid[0:self.columns, 0:self.rows].T.reshape(-1, 2) * self.square_size
        return grid


def to_gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)


def find_corners(image: np.ndarray, board: Board) -> np.ndarray | None:
    """The board's inner corners (N x 1 x 2 float32, refined to sub-pixel), or None when not all are found."""
    gray = to_gray(image)
    found, corners = cv2.findChessboardCorners(gray, board.pattern, flags=DETECTION_FLAGS)
    if not found:
        return None
    corners = cv2.cornerSubPix(gray, corners, SUBPIX_WINDOW, (-1, -1), SUBPIX_CRITERIA)
    return corners.reshape(-1, 1, 2).astype(np.float32)


def coverage(corner_sets: list[np.ndarray], image_size: tuple[int, int]) -> float:
    """Share of the image (an 8x8 grid of cells) that the boards' corners reach, in [0, 1].

    Lens distortion is strongest at the borders; a calibration whose boards never reach them
    extrapolates there, so a low coverage is reported next to the RMS."""
    width, height = image_size
    cells = np.zeros((COVERAGE_GRID, COVERAGE_GRID), bool)
    for corners in corner_sets:
        xy = corners.reshape(-1, 2)
        column = np.clip((xy[:, 0] / width * COVERAGE_GRID).astype(int), 0, COVERAGE_GRID - 1)
        row = np.clip((xy[:, 1] / height * COVERAGE_GRID).astype(int), 0, COVERAGE_GRID - 1)
        cells[row, column] = True
    return float(cells.mean())
