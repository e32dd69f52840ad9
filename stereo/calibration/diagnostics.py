"""Say what is wrong with a rig: swapped views, and vertical misalignment left after rectification.

(An image size that does not match the calibration is refused by :meth:`Rectifier.check_size`.)

Vertical misalignment is measured without a chessboard, on whatever the cameras see: SIFT features
matched between the rectified views (Lowe's ratio test keeps unambiguous matches, RANSAC on the
fundamental matrix drops those that fit no common geometry), and the median |dy| of the rest.
SIFT rather than ORB: ORB keypoints lie on its pyramid's pixel grid (|dy| comes out in whole
pixels) and its binary descriptors match repetitive or dark texture ambiguously; SIFT keypoints are
localised to sub-pixel. The measure needs texture: on a scene that is mostly one repeated pattern
(a chessboard filling the view) matches can still be ambiguous. A rectified pair has corresponding points on the same row; a median above
``MAX_VERTICAL_PX`` = 1 px means the calibration does not fit these images (cameras moved, another
rig, wrong resolution), and stereo networks, which search along rows only, lose accuracy fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stereo.calibration.board import to_gray
from stereo.calibration.rig import StereoRig

MAX_VERTICAL_PX = 1.0
RATIO = 0.75          # Lowe's ratio test
MAX_FEATURES = 2000
MIN_MATCHES = 20      # fewer matches than this: too little texture to judge
RANSAC_PX = 1.0       # epipolar distance that counts a match as consistent


@dataclass(frozen=True)
class Misalignment:
    median_dy: float | None
    matches: int

    def warning(self, where: str) -> str | None:
        if self.median_dy is None:
            return None
        if self.median_dy > MAX_VERTICAL_PX:
            return (f"warning: {where}: corresponding points differ by {self.median_dy:.2f} px vertically after "
                    f"rectification (median of {self.matches} SIFT matches; > {MAX_VERTICAL_PX} px): the calibration "
                    "does not fit these images; calibrate the rig again")
        return None


def vertical_misalignment(left: np.ndarray, right: np.ndarray) -> Misalignment:
    """Median |y_left - y_right| of SIFT matches (ratio test, RANSAC); median_dy None with too few matches."""
    sift = cv2.SIFT_create(nfeatures=MAX_FEATURES)
    keys_left, described_left = sift.detectAndCompute(to_gray(left), None)
    keys_right, described_right = sift.detectAndCompute(to_gray(right), None)
    if described_left is None or described_right is None or len(keys_right) < 2:
        return Misalignment(None, 0)
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(described_left, described_right, k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < RATIO * n.distance]
    if len(good) < MIN_MATCHES:
        return Misalignment(None, len(good))
    left_points = np.float32([keys_left[m.queryIdx].pt for m in good])
    right_points = np.float32([keys_right[m.trainIdx].pt for m in good])
    # Repetitive texture passes the ratio test with wrong partners: keep the matches consistent with
    # one epipolar geometry (RANSAC on the fundamental matrix; the geometry is estimated, not assumed
    # rectified, so a misaligned pair keeps its true matches and their offset is what is measured).
    _, inliers = cv2.findFundamentalMat(left_points, right_points, cv2.FM_RANSAC, RANSAC_PX, 0.999)
    if inliers is None or int(inliers.sum()) < MIN_MATCHES:
        return Misalignment(None, 0 if inliers is None else int(inliers.sum()))
    keep = inliers.ravel().astype(bool)
    dy = left_points[keep, 1] - right_points[keep, 1]
    return Misalignment(float(np.median(np.abs(dy))), int(keep.sum()))


def swapped_views_message(rig: StereoRig) -> str:
    return (f"{rig.source}: the camera named right lies {abs(rig.baseline):.4g} {rig.unit} to the LEFT of the one "
            "named left (T's x > 0); stereo.infer exchanges the views, so disparity and depth are in the rectified "
            "frame of the camera named right. To keep the names, calibrate again with the left and right images "
            "exchanged")
