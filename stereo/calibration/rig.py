"""The one representation of a calibrated stereo camera: :class:`StereoRig`.

Conventions are OpenCV's (``stereoCalibrate`` / ``stereoRectify``): a point X1 in the first
("left") camera's frame is ``X2 = R @ X1 + T`` in the second's; distortion is OpenCV's
(k1 k2 p1 p2 [k3 ...]). ``R1``/``R2`` rotate each camera into the common rectified frame and
``P1``/``P2`` project from the rectified *left* camera's frame: ``P1 = [K | 0]`` and
``P2 = [K' | (-f*B, 0, 0)]``, so the baseline ``B = -P2[0,3] / P2[0,0]`` is positive for a
textbook rig (the right camera at +x of the left one). Lengths (T, baseline, depth) are in
``unit``: the chessboard's square size decides it for our own calibrations.

A file that already describes a rectified pair (Middlebury, ETH3D, KITTI's ``P_rect``) becomes a
rig with ``R1 = R2 = I`` and no distortion: rectifying it is the identity, and ``needs_remap`` is
False so inference skips the remap entirely.

Every rig is validated when it is built (:meth:`StereoRig.__post_init__`, whichever reader or
calibration made it): finite matrices of the right shapes, cameras with positive focal lengths,
rotations that are rotations, projections that can be inverted and a baseline of at least
``MIN_BASELINE``. A rig that fails would rectify to black images and give depth that is 0, NaN or
infinite everywhere, so it is refused with one line naming the file and the field, before anything
is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from stereo.data.io import MAX_IMAGE_PIXELS, Calibration, DataError


class CalibrationError(DataError):
    """A calibration file or a calibration result is unusable (names the file and the field)."""


# The shortest baseline a rig may have, in its own unit: 1 µm when the unit is metres (the largest
# unit calibrations use), far below any stereo camera. Shorter means both views were taken from one
# place (the same images given as left and right, one camera's file given twice): depth would be 0
# or meaningless everywhere.
MIN_BASELINE = 1e-6
# How far R^T R may be from the identity for R to count as a rotation: files written with 6
# significant digits (ROS, KITTI) are orthonormal to about 1e-6.
ROTATION_TOLERANCE = 1e-3
CAMERA_NAMES = {"1": "left camera", "2": "right camera"}
FIX = "fix the file or calibrate again (python -m stereo.calibrate, docs/rig.md)"


def _named(name: str) -> str:
    """``K1 (left camera)``: which camera a per-camera field belongs to."""
    camera = CAMERA_NAMES.get(name[-1]) if name[:-1] in ("K", "D", "R", "P") else None
    return f"{name} ({camera})" if camera else name


def as_matrix(value: np.ndarray, shape: tuple[int, ...], name: str, source: str) -> np.ndarray:
    """``value`` as a finite float64 array of ``shape``, or one line naming ``source`` and the field."""
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{source}: {_named(name)} is not a list of numbers; {FIX}") from None
    if array.size != int(np.prod(shape)):
        raise CalibrationError(f"{source}: {_named(name)} has {array.size} values, expected "
                               f"{'x'.join(map(str, shape))}; {FIX}")
    array = array.reshape(shape)
    if not np.all(np.isfinite(array)):
        raise CalibrationError(f"{source}: {_named(name)} holds NaN or infinite values; {FIX}")
    return array


def check_distortion(value: np.ndarray | None, name: str, source: str) -> np.ndarray:
    array = np.zeros(5) if value is None else np.asarray(value, np.float64).ravel()
    if array.size not in (4, 5, 8, 12, 14):
        raise CalibrationError(f"{source}: {_named(name)} has {array.size} values; OpenCV distortion has 4, 5, 8, "
                               f"12 or 14; {FIX}")
    return as_matrix(array, array.shape, name, source)


def check_camera(K: np.ndarray, name: str, source: str) -> np.ndarray:
    """A 3x3 camera matrix [fx s cx; 0 fy cy; 0 0 1] with positive focal lengths (so it can be inverted)."""
    K = as_matrix(K, (3, 3), name, source)
    if not (K[0, 0] > 0 and K[1, 1] > 0) or not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
        raise CalibrationError(f"{source}: {_named(name)} = {K.ravel().tolist()} is not a camera matrix "
                               f"[fx 0 cx; 0 fy cy; 0 0 1] with positive focal lengths; {FIX}")
    return K


def check_rotation(R: np.ndarray, name: str, source: str) -> np.ndarray:
    R = as_matrix(R, (3, 3), name, source)
    if np.abs(R.T @ R - np.eye(3)).max() > ROTATION_TOLERANCE or np.linalg.det(R) <= 0:
        raise CalibrationError(f"{source}: {_named(name)} is not a rotation matrix (R^T R = I, det R = 1); {FIX}")
    return R


def check_projection(P: np.ndarray, name: str, source: str) -> np.ndarray:
    """A 3x4 projection [K' | t] whose K' is a camera matrix (singular: every pixel maps nowhere)."""
    P = as_matrix(P, (3, 4), name, source)
    if not (P[0, 0] > 0 and P[1, 1] > 0) or abs(np.linalg.det(P[:, :3])) < 1e-12 * P[0, 0] * P[1, 1]:
        raise CalibrationError(f"{source}: {_named(name)} = {P.ravel().tolist()} is singular or has a focal length "
                               f"that is not positive (a projection is [f 0 cx tx; 0 f cy 0; 0 0 1 0]); {FIX}")
    return P


def disparity_to_depth_matrix(P1: np.ndarray, P2: np.ndarray) -> np.ndarray:
    """OpenCV's Q for a rectified pair: [x, y, d, 1] -> homogeneous [X, Y, Z, W] in the left frame."""
    f, cx, cy = P1[0, 0], P1[0, 2], P1[1, 2]
    tx = P2[0, 3] / P2[0, 0]  # = -B
    return np.array([[1, 0, 0, -cx], [0, 1, 0, -cy], [0, 0, 0, f], [0, 0, -1 / tx, (cx - P2[0, 2]) / tx]])


@dataclass(frozen=True)
class StereoRig:
    """Intrinsics, distortion and relative pose of two cameras, and their rectification.

    ``image_size`` and ``rectified_size`` are (width, height). ``ndisp`` is a disparity-range hint
    some formats carry (Middlebury). ``source`` names the file it came from (for error lines and the
    manifest).
    """

    K1: np.ndarray
    D1: np.ndarray
    K2: np.ndarray
    D2: np.ndarray
    R: np.ndarray
    T: np.ndarray
    image_size: tuple[int, int]
    R1: np.ndarray
    R2: np.ndarray
    P1: np.ndarray
    P2: np.ndarray
    Q: np.ndarray
    rectified_size: tuple[int, int]
    unit: str = "unit"
    ndisp: int | None = None
    source: str = "calibration"
    needs_remap: bool = True
    alpha: float = 0.0  # stereoRectify's free scaling: 0 = valid pixels only, 1 = every source pixel kept
    files: tuple[str, ...] = ()  # the file(s) it was read from (``source`` joins them with commas, for messages)

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_pose(cls, K1, D1, K2, D2, R, T, image_size, *, unit: str = "unit", source: str = "calibration",
                  alpha: float = 0.0, rectified_size: tuple[int, int] | None = None) -> "StereoRig":
        """Compute the rectification with ``cv2.stereoRectify`` (CALIB_ZERO_DISPARITY: equal principal
        points, so disparity is plain xl - xr; ``alpha=0`` crops to valid pixels only)."""
        K1, K2 = check_camera(K1, "K1", source), check_camera(K2, "K2", source)
        D1, D2 = check_distortion(D1, "D1", source), check_distortion(D2, "D2", source)
        R, T = check_rotation(R, "R", source), as_matrix(T, (3, 1), "T", source)
        check_baseline(float(np.linalg.norm(T)), "T", unit, source)
        size = as_size(image_size, "image_size", source)
        out_size = as_size(rectified_size, "rectified_size", source) if rectified_size else size
        R1, R2, P1, P2, Q, _, _ = cv2.stereoRectify(K1, D1, K2, D2, size, R, T, flags=cv2.CALIB_ZERO_DISPARITY,
                                                    alpha=alpha, newImageSize=out_size)
        return cls(K1, D1, K2, D2, R, T, size, R1, R2, P1, P2, Q, out_size, unit, None, source, alpha=float(alpha))

    @classmethod
    def from_rectified(cls, P1, P2, image_size, *, unit: str = "unit", source: str = "calibration",
                       ndisp: int | None = None) -> "StereoRig":
        """A pair whose images are already rectified: only the two 3x4 projections matter.

        The projections are re-expressed in the rectified left camera's frame (KITTI's P_rect carry
        an offset to camera 0: only their difference is the baseline)."""
        P1, P2 = check_projection(P1, "P1", source), check_projection(P2, "P2", source)
        size = as_size(image_size, "image_size", source)
        K1, K2 = P1[:, :3].copy(), P2[:, :3].copy()
        baseline = P1[0, 3] / P1[0, 0] - P2[0, 3] / P2[0, 0]
        check_baseline(baseline, "P1 and P2", unit, source)
        P1n, P2n = np.hstack([K1, np.zeros((3, 1))]), np.hstack([K2, np.zeros((3, 1))])
        P2n[0, 3] = -K2[0, 0] * baseline
        T = np.array([[-baseline], [0.0], [0.0]])
        eye = np.eye(3)
        return cls(K1, np.zeros(5), K2, np.zeros(5), eye, T, size, eye, eye, P1n, P2n,
                   disparity_to_depth_matrix(P1n, P2n), size, unit, ndisp, source, needs_remap=False)

    def __post_init__(self) -> None:
        """Refuse a rig that cannot rectify or give depth (see the module's docstring), whatever built it."""
        source = self.source
        for name in ("K1", "K2"):
            check_camera(getattr(self, name), name, source)
        for name in ("D1", "D2"):
            check_distortion(getattr(self, name), name, source)
        for name in ("R", "R1", "R2"):
            check_rotation(getattr(self, name), name, source)
        as_matrix(self.T, (3, 1), "T", source)
        for name in ("P1", "P2"):
            check_projection(getattr(self, name), name, source)
        check_baseline(self.baseline, "P1 and P2", self.unit, source)
        as_matrix(self.Q, (4, 4), "Q", source)
        if not (0 <= self.alpha <= 1 or self.alpha == -1):  # stereoRectify's range (-1: OpenCV's default scaling)
            raise CalibrationError(f"{source}: alpha={self.alpha} is not a number from 0 to 1; {FIX}")
        as_size(self.image_size, "image_size", source)
        as_size(self.rectified_size, "rectified_size", source)

    # ---- geometry of the rectified pair --------------------------------------------------------
    @property
    def focal(self) -> float:
        return float(self.P1[0, 0])

    @property
    def baseline(self) -> float:
        """Signed distance between the rectified centres, in ``unit``; negative = views swapped."""
        return float(self.P1[0, 3] / self.P1[0, 0] - self.P2[0, 3] / self.P2[0, 0])

    @property
    def views_swapped(self) -> bool:
        """True when the camera named right lies to the left of the one named left (T's x > 0)."""
        return self.baseline < 0

    def exchanged(self) -> "StereoRig":
        """The same rig with the views' roles exchanged (the camera named right becomes the reference)."""
        if not self.needs_remap:
            return StereoRig.from_rectified(self.P2, self.P1, self.image_size, unit=self.unit, source=self.source,
                                            ndisp=self.ndisp)
        R = self.R.T
        return StereoRig.from_pose(self.K2, self.D2, self.K1, self.D1, R, -R @ self.T, self.image_size,
                                   unit=self.unit, source=self.source, alpha=self.alpha,
                                   rectified_size=self.rectified_size)

    def depth_geometry(self) -> Calibration:
        """Focal, principal point, baseline and doffs of the rectified reference view: Z = f*B/(d + doffs).

        The reference is the left view, or the view named right when the views are swapped (the
        pair is then fed to the network exchanged, see ``Rectifier``)."""
        if self.views_swapped:
            return self.exchanged().depth_geometry()
        width, height = self.rectified_size
        return Calibration(focal=self.focal, cx=float(self.P1[0, 2]), cy=float(self.P1[1, 2]),
                           baseline=self.baseline, doffs=float(self.P2[0, 2] - self.P1[0, 2]),
                           ndisp=self.ndisp, width=int(width), height=int(height))


def as_size(value, name: str, source: str) -> tuple[int, int]:
    """(width, height) from two numbers, or one line naming ``source`` and the field."""
    try:
        width, height = (int(round(float(v))) for v in np.asarray(value).ravel())
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite size
        raise CalibrationError(f"{source}: {name} must be two numbers (width height), got {value!r}") from None
    if width <= 0 or height <= 0:
        raise CalibrationError(f"{source}: {name} {width}x{height} is not a positive size")
    if width * height > MAX_IMAGE_PIXELS:  # rectification maps of that size would not fit in memory
        raise CalibrationError(f"{source}: {name} {width}x{height} is larger than any image this program reads "
                               f"({MAX_IMAGE_PIXELS:,} pixels)")
    return width, height


def check_baseline(baseline: float, fields: str, unit: str, source: str) -> None:
    if not abs(baseline) >= MIN_BASELINE:  # also NaN
        raise CalibrationError(f"{source}: the baseline ({fields}) is {abs(baseline):.3g} {unit}: both views were taken "
                               "from the same place (the same images or camera given as left and right?); a stereo rig "
                               f"needs at least {MIN_BASELINE:g} {unit}; {FIX}")
