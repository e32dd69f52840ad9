"""``python -m stereo.calibrate`` on the real unrectified XIMEA rig (../shared/data/real/stereo_calibration_ximea):
calibrate on pairs 01-14, rectify the held-out pairs 15-20 and measure how well their rows match.

Chessboard detection is the cost (about 0.1 s per image), so the calibration runs once per module.
"""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from stereo.calibrate import calibration_pairs, run
from stereo.calibration.board import Board, coverage, find_corners
from stereo.calibration.calibrate import MAX_RMS, calibrate_pairs
from stereo.calibration.diagnostics import MAX_VERTICAL_PX, vertical_misalignment
from stereo.calibration.readers import read_calibration
from stereo.calibration.rectify import Rectifier
from stereo.calibration.rig import CalibrationError
from stereo.calibration.storage import read_opencv, write_opencv
from stereo.config import compose
from stereo.data.io import read_image
from stereo.inference.inputs import PairError

BOARD = Board(9, 6)
CALIBRATION_PAIRS = range(1, 15)
HELD_OUT_PAIRS = range(15, 21)
# The brief's bound for held-out pairs; OpenCV's own pipeline reaches about 0.1 px on this rig.
MAX_HELD_OUT_DY = 0.3


def ximea_pair(root, index):
    return root / "left" / f"left{index:02d}.jpg", root / "right" / f"right{index:02d}.jpg"


@pytest.fixture(scope="module")
def ximea(real_data_dir):
    root = real_data_dir / "stereo_calibration_ximea"
    if not root.is_dir():
        pytest.skip(f"{root} not available")
    return root


@pytest.fixture(scope="module")
def calibrated(ximea, tmp_path_factory):
    """stereo.calibrate on a list file of pairs 01-14 plus one pair without a board (rejected).

    alpha=1 keeps every source pixel: this rig's cameras are rotated by a few degrees, and with alpha=0
    (valid pixels only) the rectified views crop the boards of held-out pairs 16, 18 and 19."""
    folder = tmp_path_factory.mktemp("calibrate")
    blank = folder / "blank.png"
    cv2.imwrite(str(blank), np.full((512, 640), 128, np.uint8))
    lines = [f"{left} {right}" for left, right in (ximea_pair(ximea, i) for i in CALIBRATION_PAIRS)]
    lines.append(f"{blank} {ximea_pair(ximea, 1)[1]}")
    (folder / "pairs.txt").write_text("\n".join(lines) + "\n")
    cfg = compose("calibrate", [f"list_file={folder / 'pairs.txt'}", "board.square_size=0.025",
                                f"output={folder / 'rig.yaml'}", "alpha=1"])
    report = run(cfg)
    return folder / "rig.yaml", report


def test_calibration_file_is_opencv_filestorage_with_every_field(calibrated):
    path, _ = calibrated
    storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)  # plain OpenCV, not our reader
    shapes = {name: storage.getNode(name).mat().shape for name in ("K1", "D1", "K2", "D2", "R", "T", "R1", "R2", "P1", "P2", "Q")}
    assert shapes == {"K1": (3, 3), "D1": (1, 5), "K2": (3, 3), "D2": (1, 5), "R": (3, 3), "T": (3, 1),
                      "R1": (3, 3), "R2": (3, 3), "P1": (3, 4), "P2": (3, 4), "Q": (4, 4)}
    assert (storage.getNode("image_width").real(), storage.getNode("image_height").real()) == (640, 512)
    assert storage.getNode("unit").string() == "m"
    # T is in the square size's unit: the rig's cameras are a few squares of 25 mm apart.
    assert 0.05 < float(np.linalg.norm(storage.getNode("T").mat())) < 0.2
    storage.release()


def test_report_lists_per_pair_errors_rejections_and_coverage(calibrated):
    path, report = calibrated
    saved = json.loads(path.with_name("rig_report.json").read_text())
    assert saved["pairs_used"] == len(CALIBRATION_PAIRS) and saved["pairs_rejected"] == 1
    rejected = [p for p in saved["pairs"] if not p["used"]]
    assert rejected[0]["left"].endswith("blank.png") and "not found in the left image" in rejected[0]["reason"]
    used = [p for p in saved["pairs"] if p["used"]]
    assert all(0 < p["rms_left"] < MAX_RMS and 0 < p["rms_right"] < MAX_RMS for p in used)
    # OpenCV's stereo RMS runs over the corners of both views; the per-pair errors of each view give it back
    # (54 corners in every image, so the mean over pairs of squared per-pair RMS is each view's mean square)
    per_view = [np.mean([p[f"rms_{view}"] ** 2 for p in used]) for view in ("left", "right")]
    assert saved["rms_stereo"] == pytest.approx(np.sqrt(np.mean(per_view)), rel=1e-6)
    assert 0 < saved["coverage_left"] <= 1 and 0 < saved["coverage_right"] <= 1
    # SOURCES.md: this rig is not a textbook left/right pair; the report says so
    assert saved["views_swapped"] is True


def test_held_out_pairs_rectify_to_matching_rows(calibrated, ximea):
    """Corners of pairs the calibration did not see: median |dy| <= 0.3 px after rectification (20-30 px before)."""
    rectifier = Rectifier(read_calibration(calibrated[0]))
    assert rectifier.exchanged, "the camera named right lies on the left: the views are exchanged"
    before, after, disparity = [], [], []
    for index in HELD_OUT_PAIRS:
        left, right = (read_image(p) for p in ximea_pair(ximea, index))
        raw = find_corners(left, BOARD), find_corners(right, BOARD)
        before.append(np.abs(raw[0][:, 0, 1] - raw[1][:, 0, 1]))
        reference, other = rectifier.rectify(left, right)
        assert reference.shape == (512, 640, 3) and other.shape == (512, 640, 3)
        rectified = find_corners(reference, BOARD), find_corners(other, BOARD)
        after.append(np.abs(rectified[0][:, 0, 1] - rectified[1][:, 0, 1]))
        disparity.append(rectified[0][:, 0, 0] - rectified[1][:, 0, 0])
    assert np.median(np.concatenate(before)) > 10
    assert np.median(np.concatenate(after)) <= MAX_HELD_OUT_DY
    assert np.all(np.concatenate(disparity) > 0), "the network sees positive disparities"


def test_feature_misalignment_warns_before_rectification_only(calibrated, ximea):
    left, right = (read_image(p) for p in ximea_pair(ximea, 16))
    raw = vertical_misalignment(right, left)  # exchanged, as the rectifier feeds them
    assert raw.median_dy > MAX_VERTICAL_PX and "calibrate the rig again" in raw.warning("rig.yaml")
    rectified = vertical_misalignment(*Rectifier(read_calibration(calibrated[0])).rectify(left, right))
    assert rectified.median_dy <= MAX_VERTICAL_PX and rectified.warning("rig.yaml") is None


def test_written_file_reads_back_to_the_same_rig(calibrated, tmp_path):
    rig = read_opencv(calibrated[0])
    write_opencv(tmp_path / "again.yaml", rig)
    again = read_opencv(tmp_path / "again.yaml")
    for name in ("K1", "D1", "K2", "D2", "R", "T", "R1", "R2", "P1", "P2", "Q"):
        np.testing.assert_array_equal(getattr(again, name), getattr(rig, name), err_msg=name)
    assert again.image_size == rig.image_size == (640, 512) and again.needs_remap


def test_untrustworthy_calibrations_are_refused(ximea):
    pairs = [ximea_pair(ximea, i) for i in range(1, 11)]
    with pytest.raises(CalibrationError, match=r"only 10 of 10 pairs are usable; .* at least 11 \(min_pairs\)"):
        calibrate_pairs(pairs, BOARD, read=read_image, min_pairs=11)
    with pytest.raises(CalibrationError, match=r"reprojection RMS 0\.\d+ px exceeds 0.01 px \(max_rms\)"):
        calibrate_pairs(pairs, BOARD, read=read_image, max_rms=0.01)


def test_cli_refusal_is_one_line_and_writes_nothing(ximea, tmp_path):
    left, right = ximea_pair(ximea, 1)
    done = subprocess.run([sys.executable, "-m", "stereo.calibrate", f"left={left}", f"right={right}",
                           "board.square_size=1", f"output={tmp_path / 'rig.yaml'}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: only 1 of 1 pairs are usable; calibration needs at least 10 (min_pairs) "
        "(set HYDRA_FULL_ERROR=1 for the traceback)"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override, message", [
    ("board.square_size=-1", r"board.square_size=-1: must be a number above 0"),
    ("board.columns=8.5", r"board.columns=8.5: must be a whole number above 1"),
    ("alpha=2", r"alpha=2: must be a number from 0"),
])
def test_bad_calibrate_options_are_named(ximea, tmp_path, override, message):
    cfg = compose("calibrate", [f"left={ximea / 'left'}", f"right={ximea / 'right'}", "board.square_size=1",
                                f"output={tmp_path / 'rig.yaml'}", override])
    with pytest.raises(ValueError, match=message):
        run(cfg)
    assert list(tmp_path.iterdir()) == []


def test_a_board_never_found_suggests_its_size(ximea, tmp_path):
    left, right = ximea_pair(ximea, 2)
    cfg = compose("calibrate", [f"left={left}", f"right={right}", "board.columns=8", "board.square_size=1",
                                f"output={tmp_path / 'rig.yaml'}"])
    with pytest.raises(CalibrationError, match=r"only 0 of 1 pairs are usable \(1 without the whole board in both views\); .*; is the board 8x6 inner corners"):
        run(cfg)


def test_pairs_from_two_folders_in_sorted_order(ximea, tmp_path):
    cfg = compose("calibrate", [f"left={ximea / 'left'}", f"right={ximea / 'right'}", "board.square_size=1"])
    pairs = calibration_pairs(cfg)
    assert len(pairs) == 20 and [(l.name, r.name) for l, r in pairs[:2]] == [("left01.jpg", "right01.jpg"),
                                                                            ("left02.jpg", "right02.jpg")]
    (tmp_path / "one").mkdir()
    with pytest.raises(PairError, match=r"holds 20 images and right=.*one 0"):
        calibration_pairs(compose("calibrate", [f"left={ximea / 'left'}", f"right={tmp_path / 'one'}",
                                                "board.square_size=1"]))


def test_coverage_counts_grid_cells_reached():
    corners = np.array([[[0.0, 0.0]], [[639.0, 511.0]]], np.float32)  # two opposite corner cells of 8x8
    assert coverage([corners], (640, 512)) == 2 / 64
