"""Rectify the pairs of a calibrated rig: :class:`Rectifier` builds the maps once and reuses them.

``rectify(left, right)`` returns the rectified pair in the rectified frame of the reference camera,
``rectified_size`` large (``alpha=0``: valid pixels only). For a rig whose camera named right lies
to the left (:attr:`StereoRig.views_swapped`) the views are exchanged and rectified with the rig's
roles exchanged, so the network always sees a positive disparity; its outputs are then in the frame
of the camera named right. A rig read
from an already-rectified format needs no remap: ``rectify`` only checks the image size.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from stereo.calibration.diagnostics import swapped_views_message, vertical_misalignment
from stereo.calibration.rig import CalibrationError, StereoRig
from stereo.data.io import Calibration


class Rectifier:
    """A rig's rectification, ready to apply: ``calibrated`` is the rig as read, ``rig`` the one applied
    (the calibrated rig with its roles exchanged when its views are swapped)."""

    def __init__(self, rig: StereoRig) -> None:
        self.calibrated = rig
        self.exchanged = rig.views_swapped
        self.rig = rig.exchanged() if self.exchanged else rig
        self._maps = None
        if self.rig.needs_remap:
            r = self.rig
            self._maps = [cv2.initUndistortRectifyMap(K, D, R, P, r.rectified_size, cv2.CV_16SC2)
                          for K, D, R, P in ((r.K1, r.D1, r.R1, r.P1), (r.K2, r.D2, r.R2, r.P2))]
        self._original_lookup: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._size_warned = False

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the images the calibration is for."""
        return self.rig.image_size

    @property
    def rectified_size(self) -> tuple[int, int]:
        return self.rig.rectified_size

    def depth_geometry(self) -> Calibration:
        """Focal, principal point and baseline of the rectified reference view (depth Z = f*B/d)."""
        return self.rig.depth_geometry()

    def check_size(self, image: np.ndarray, name: str = "image") -> None:
        """Refuse an image the calibration is not for (its maps would be wrong everywhere); for an
        already-rectified calibration only warn, once: its focal length and principal point then
        apply only if the images were not scaled or cropped."""
        height, width = image.shape[:2]
        if (width, height) == tuple(self.image_size):
            return
        message = (f"{name}: {width}x{height} image, but {self.calibrated.source} is a calibration for "
                   f"{self.image_size[0]}x{self.image_size[1]} images")
        if self._maps is not None:
            raise CalibrationError(f"{message}; use images from the calibrated cameras at their calibrated "
                                   "resolution (or calibrate again)")
        if not self._size_warned:
            print(f"warning: {message}; depth assumes the images were neither scaled nor cropped", file=sys.stderr)
            self._size_warned = True

    def rectify(self, left: np.ndarray, right: np.ndarray, names: tuple[str, str] = ("left", "right")) -> tuple[np.ndarray, np.ndarray]:
        """The rectified (reference, other) pair; reference = left unless the rig's views are swapped."""
        self.check_size(left, names[0])
        self.check_size(right, names[1])
        if self.exchanged:
            left, right = right, left
        if self._maps is None:
            return left, right
        return tuple(cv2.remap(image, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
                     for image, (m1, m2) in zip((left, right), self._maps))

    def frames(self, pairs: Iterable[tuple[np.ndarray, np.ndarray]],
               names: Iterable[tuple[str, str]] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Rectify a stream of pairs (video frames, image pairs), named by ``names`` in error lines. Says
        once that the views are exchanged, and warns when the first pair's rows do not match
        (``diagnostics.vertical_misalignment``)."""
        if self.exchanged:
            print(f"note: {swapped_views_message(self.calibrated)}", file=sys.stderr)
        names = iter(names) if names is not None else itertools.repeat(("left", "right"))
        for index, ((left, right), pair_names) in enumerate(zip(pairs, names)):
            rectified = self.rectify(left, right, pair_names)
            if index == 0:  # also for already-rectified calibrations: are these images the rectified ones?
                warning = vertical_misalignment(*rectified).warning(self.calibrated.source)
                if warning:
                    print(warning, file=sys.stderr)
            yield rectified

    def to_original(self, depth: np.ndarray) -> np.ndarray:
        """Depth in the rectified reference frame -> depth along the optical axis of the original
        (unrectified, distorted) reference image, pixel for pixel; inf where it is unknown.

        Each original pixel is mapped to its rectified position (``undistortPoints`` with R1, P1),
        the rectified depth is looked up there (nearest pixel: no blending across depth edges),
        the 3-D point is rebuilt and rotated back into the original camera (R1 transposed)."""
        if self._maps is None:
            return depth
        xs, ys, ray_z = self._lookup()
        height, width = depth.shape
        inside = (xs >= 0) & (xs <= width - 1) & (ys >= 0) & (ys <= height - 1)
        rounded_x = np.clip(np.rint(xs), 0, width - 1).astype(int)
        rounded_y = np.clip(np.rint(ys), 0, height - 1).astype(int)
        z_rectified = np.where(inside, depth[rounded_y, rounded_x], np.inf)
        original = z_rectified * ray_z
        return np.where(np.isfinite(original) & (original > 0), original, np.inf).astype(np.float32)

    def _lookup(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For every original pixel: its rectified (x, y) and the z factor from rectified to original depth."""
        if self._original_lookup is None:
            r = self.rig
            width, height = r.image_size
            grid = np.stack(np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)), -1)
            rectified = cv2.undistortPoints(grid.reshape(-1, 1, 2), r.K1, r.D1, R=r.R1, P=r.P1).reshape(height, width, 2)
            f, cx, cy = r.P1[0, 0], r.P1[0, 2], r.P1[1, 2]
            rays = np.stack([(rectified[..., 0] - cx) / f, (rectified[..., 1] - cy) / f, np.ones((height, width))], -1)
            ray_z = rays @ r.R1[:, 2]  # z of R1^T @ ray: original depth per unit rectified depth
            self._original_lookup = (rectified[..., 0], rectified[..., 1], ray_z)
        return self._original_lookup

    def provenance(self) -> dict:
        """What the manifest records: the file(s), their sha256, and the geometry used."""
        files = [Path(p) for p in self.calibrated.files or (self.calibrated.source,)]
        geometry = self.depth_geometry()
        return {"files": [str(p.resolve()) for p in files],
                "sha256": [hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p.is_file()],
                "views_exchanged": self.exchanged, "remapped": self.rig.needs_remap,
                "image_size": list(self.image_size), "rectified_size": list(self.rectified_size),
                "focal_px": geometry.focal, "baseline": geometry.baseline, "unit": self.rig.unit}
