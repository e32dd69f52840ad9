"""Chessboard pairs -> a :class:`StereoRig` and a report, or a refusal when it cannot be trusted.

Method: each camera is calibrated on its own (``calibrateCamera``, OpenCV's 5-parameter
radial-tangential model), ``stereoCalibrate`` with ``CALIB_FIX_INTRINSIC`` then estimates the pose
between them (6 unknowns: well conditioned), and a last ``stereoCalibrate`` refines everything
jointly from that start (``CALIB_USE_INTRINSIC_GUESS | CALIB_USE_EXTRINSIC_GUESS``), using that both
views saw the same board. OpenCV's ``stereo_calib`` sample optimises jointly from scratch and needs
strong priors (same focal length, no tangential distortion) to stay stable; the staged start
needs none. Per-pair and per-camera errors are those of the final joint model. Pairs whose board is not found in both views, whose image size
differs, or whose error is far above the others' (a moved board, blur) are rejected with a reason,
and the rest are calibrated again.

Refusal bounds:

* ``MIN_PAIRS = 10``: OpenCV's calibration tutorial asks for at least 10 board views; with fewer,
  the distortion terms are constrained only near the image centre and the rectification drifts at
  the borders, where it is not measured.
* ``MAX_RMS = 1.0`` px: ``cornerSubPix`` locates the corners of a sharp printed board to about
  0.1 px, and good rigs calibrate to 0.1-0.5 px RMS. One pixel or more means a wrong board size,
  corners ordered differently in the two views, a camera that moved between shots or a lens the
  model does not fit; the vertical offsets left after rectification are then of the same size,
  while stereo networks are trained on pairs rectified to a fraction of a pixel.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from stereo.calibration.board import Board, coverage, find_corners
from stereo.calibration.rig import FIX, CalibrationError, StereoRig

MIN_PAIRS = 10
MAX_RMS = 1.0
# A pair is an outlier when its error exceeds both this many times the median pair error and
# OUTLIER_MIN_PX (so a uniformly excellent set loses nothing to noise in the median).
OUTLIER_FACTOR = 3.0
OUTLIER_MIN_PX = 0.5
# Why pairs were rejected before calibrating, as the refusal line counts them (reason prefix, words).
REJECTIONS = (("image size", "of another image size"), ("board", "without the whole board in both views"),
              ("", "with corners ordered differently in the two views"))
STEREO_CRITERIA = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-6)


@dataclass
class PairResult:
    """What calibration made of one input pair, a row of the report: used or rejected (and why), with its
    reprojection errors when used. Not a pair type (that is ``stereo.data.pairs.StereoPair``): the
    report's rows keep the pair's name and files beside the outcome."""

    name: str
    left: str
    right: str
    used: bool = False
    reason: str = ""
    rms_left: float | None = None
    rms_right: float | None = None


@dataclass
class CalibrationReport:
    """What the calibration measured: ``rms_*`` in pixels, ``coverage_*`` in [0, 1] (board.coverage)."""

    board: dict
    image_size: tuple[int, int]
    pairs: list[PairResult] = field(default_factory=list)
    rms_left: float | None = None
    rms_right: float | None = None
    rms_stereo: float | None = None
    coverage_left: float | None = None
    coverage_right: float | None = None
    baseline: float | None = None
    unit: str = ""
    views_swapped: bool = False

    @property
    def used(self) -> list[PairResult]:
        return [p for p in self.pairs if p.used]

    def to_dict(self) -> dict:
        return asdict(self) | {"pairs_used": len(self.used), "pairs_rejected": len(self.pairs) - len(self.used)}

    def table(self) -> str:
        """A plain-text summary: totals, then one line per pair."""
        lines = [f"pairs used {len(self.used)} of {len(self.pairs)}; image {self.image_size[0]}x{self.image_size[1]}",
                 f"reprojection RMS (px): left {_fmt(self.rms_left)}  right {_fmt(self.rms_right)}  "
                 f"stereo {_fmt(self.rms_stereo)}",
                 f"board coverage: left {_pct(self.coverage_left)}  right {_pct(self.coverage_right)}",
                 f"baseline {_fmt(self.baseline, 4)} {self.unit}" + ("  (views swapped: see below)" if self.views_swapped else ""),
                 "", f"{'pair':<24} {'left px':>8} {'right px':>9}  status"]
        for p in self.pairs:
            lines.append(f"{p.name:<24} {_fmt(p.rms_left):>8} {_fmt(p.rms_right):>9}  {'used' if p.used else 'rejected: ' + p.reason}")
        return "\n".join(lines)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def detect(pairs: Sequence[tuple[str | Path, str | Path]], board: Board,
           read: Callable[[str | Path], np.ndarray]) -> tuple[list[PairResult], list[tuple[np.ndarray, np.ndarray]], tuple[int, int]]:
    """Find the board in every pair; returns the records, the corners of accepted pairs, the image size.

    The image size is the one most images share, not the first pair's: a few odd-sized shots must
    not reject all the others. Pairs of another size are rejected, and named in a warning."""
    if not pairs:
        raise CalibrationError("no calibration pairs given")
    records, sizes, found_corners = [], [], []
    for left, right in pairs:
        records.append(PairResult(Path(left).stem, str(left), str(right)))
        images = read(left), read(right)
        sizes.append(tuple(image.shape[1::-1] for image in images))
        found_corners.append(tuple(find_corners(image, board) for image in images))
    size = Counter(one for pair in sizes for one in pair).most_common(1)[0][0]
    odd = [record.name for record, pair in zip(records, sizes) if pair != (size, size)]
    if odd:
        print(f"warning: {len(odd)} of {len(records)} pairs are not {size[0]}x{size[1]} like the others and are rejected: "
              f"{', '.join(odd[:10])}{' ...' if len(odd) > 10 else ''}", file=sys.stderr)
    corners = []
    for record, (left_size, right_size), found in zip(records, sizes, found_corners):
        if (left_size, right_size) != (size, size):
            record.reason = f"image size {left_size[0]}x{left_size[1]} / {right_size[0]}x{right_size[1]}, others {size[0]}x{size[1]}"
            continue
        missing = [view for view, c in zip(("left", "right"), found) if c is None]
        if missing:
            record.reason = f"board ({board.columns}x{board.rows} inner corners) not found in the {' and '.join(missing)} image"
            continue
        # The first-to-last corner direction must agree: otherwise the views number the corners differently.
        directions = [c[-1, 0] - c[0, 0] for c in found]
        if float(np.dot(*directions)) <= 0:
            record.reason = "corners ordered differently in the two views (board seen from opposite sides?)"
            continue
        record.used = True
        corners.append(found)
    return records, corners, tuple(int(v) for v in size)


def _calibrate(object_points, corners, size):
    """(rms_left, rms_right, rms_stereo), (K1, D1, K2, D2, R, T), (per-pair RMS left, right), all in px."""
    lefts, rights = [c[0] for c in corners], [c[1] for c in corners]
    _, K1, D1, _, _ = cv2.calibrateCamera(object_points, lefts, size, None, None)
    _, K2, D2, _, _ = cv2.calibrateCamera(object_points, rights, size, None, None)
    _, K1, D1, K2, D2, R, T, _, _ = cv2.stereoCalibrate(object_points, lefts, rights, K1, D1, K2, D2, size,
                                                        flags=cv2.CALIB_FIX_INTRINSIC, criteria=STEREO_CRITERIA)
    rms, K1, D1, K2, D2, R, T, _, _, _, _, errors = cv2.stereoCalibrateExtended(
        object_points, lefts, rights, K1, D1, K2, D2, size, R, T,
        flags=cv2.CALIB_USE_INTRINSIC_GUESS | cv2.CALIB_USE_EXTRINSIC_GUESS, criteria=STEREO_CRITERIA)
    errors_left, errors_right = errors[:, 0], errors[:, 1]
    per_view = (float(np.sqrt(np.mean(errors_left ** 2))), float(np.sqrt(np.mean(errors_right ** 2))))
    return (*per_view, rms), (K1, D1, K2, D2, R, T), (errors_left, errors_right)


def calibrate_pairs(pairs: Sequence[tuple[str | Path, str | Path]], board: Board, *, unit: str = "unit",
                    read: Callable[[str | Path], np.ndarray], min_pairs: int = MIN_PAIRS, max_rms: float = MAX_RMS,
                    alpha: float = 0.0, source: str = "calibration") -> tuple[StereoRig, CalibrationReport]:
    """Calibrate from chessboard pairs; raises CalibrationError (one line) when the result cannot be trusted."""
    records, corners, size = detect(pairs, board, read)
    report = CalibrationReport(board=asdict(board), image_size=size, pairs=records, unit=unit)
    used = [r for r in records if r.used]
    if len(used) < min_pairs:
        hint = (f"; is the board {board.columns}x{board.rows} inner corners (board.columns, board.rows)?"
                if not used and all("not found" in r.reason for r in records) else "")
        why = Counter(next(kind for prefix, kind in REJECTIONS if r.reason.startswith(prefix)) for r in records if not r.used)
        why = f" ({', '.join(f'{count} {kind}' for kind, count in why.items())})" if why else ""
        raise CalibrationError(f"only {len(used)} of {len(records)} pairs are usable{why}; "
                               f"calibration needs at least {min_pairs} (min_pairs){hint}")
    object_points = [board.object_points()] * len(corners)
    rms, pose, errors = _calibrate(object_points, corners, size)
    pair_errors = np.maximum(*errors)
    bound = max(OUTLIER_FACTOR * float(np.median(pair_errors)), OUTLIER_MIN_PX)
    keep = pair_errors <= bound
    if not keep.all() and keep.sum() >= min_pairs:
        for record, error, kept in zip(used, pair_errors, keep):
            if not kept:
                record.used, record.reason = False, f"reprojection error {error:.2f} px > {bound:.2f} px (outlier)"
        corners = [c for c, kept in zip(corners, keep) if kept]
        rms, pose, errors = _calibrate(object_points[: len(corners)], corners, size)
    for record, left_error, right_error in zip([r for r in records if r.used], *errors):
        record.rms_left, record.rms_right = float(left_error), float(right_error)
    report.rms_left, report.rms_right, report.rms_stereo = (float(v) for v in rms)
    report.coverage_left = coverage([c[0] for c in corners], size)
    report.coverage_right = coverage([c[1] for c in corners], size)
    if max(rms) > max_rms:
        raise CalibrationError(f"reprojection RMS {max(rms):.2f} px exceeds {max_rms} px (max_rms): check the board "
                               "size (inner corners), that both cameras were fixed, and the rejected pairs")
    try:  # the validator's refusal names the file that was not written; its advice is for files read
        rig = StereoRig.from_pose(*pose, size, unit=unit, source=f"{source} (not written)", alpha=alpha)
    except CalibrationError as error:
        raise CalibrationError(str(error).replace(f"; {FIX}", "; check that left and right are the two cameras' images")) from None
    rig = replace(rig, source=source)
    report.baseline, report.views_swapped = abs(rig.baseline), rig.views_swapped
    return rig, report
