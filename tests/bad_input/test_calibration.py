"""Calibrations through the real commands: every file a reader accepts or a calibration produces is a
usable rig (one validator, ``StereoRig.__post_init__``); anything else is one line naming the file and
the field, exit status 2, and nothing written.

The calibration files are small synthetic ones written here; the chessboard cases use the real XIMEA
pairs (../shared/data/real/stereo_calibration_ximea) and are skipped without them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from bad_input.conftest import snapshot
from stereo.calibration.rig import StereoRig
from stereo.calibration.storage import render_opencv

SIZE = (96, 64)  # make_pair's images
K = np.array([[90.0, 0, 48], [0, 90.0, 32], [0, 0, 1]])


def good_rig(T=(-0.1, 0.002, 0.001)) -> StereoRig:
    R = cv2.Rodrigues(np.array([0.01, -0.02, 0.005]))[0]
    return StereoRig.from_pose(K, [-0.05, 0.01, 0.001, 0, 0], K, [-0.04, 0.0, 0, 0.001, 0], R, T, SIZE, unit="m")


def field_data(text: str, name: str, data: str) -> str:
    """``text`` (FileStorage YAML) with field ``name``'s data list replaced by ``data``."""
    start = text.index(f"{name}: !!opencv-matrix")
    begin = text.index("data: [", start) + len("data: [")
    return text[:begin] + data + text[text.index("]", begin):]


def ros_file(path: Path, P: np.ndarray, D=(0.0, 0.0, 0.0, 0.0, 0.0)) -> str:
    def block(name, rows, cols, values):
        return f"{name}:\n  rows: {rows}\n  cols: {cols}\n  data: [{', '.join(repr(float(v)) for v in np.ravel(values))}]\n"

    path.write_text(f"image_width: {SIZE[0]}\nimage_height: {SIZE[1]}\n" + block("camera_matrix", 3, 3, K)
                    + "distortion_model: plumb_bob\n" + block("distortion_coefficients", 1, 5, D)
                    + block("rectification_matrix", 3, 3, np.eye(3)) + block("projection_matrix", 3, 4, P))
    return path.name


def rectify(run_command, calib: str):
    """stereo.infer rectify_only=true: reads the calibration and rectifies the pair, no network."""
    return run_command("infer", f"calib={calib}", "rectify_only=true", "left=left.png", "right=right.png",
                       "output_dir=out", "swap_check=false")


P_LEFT = np.hstack([K, np.zeros((3, 1))])
P_RIGHT = np.hstack([K, [[-9.0], [0], [0]]])  # baseline 0.1


def write_case(folder: Path, case: str) -> tuple[str, tuple[str, ...]]:
    """The calibration file(s) of one case, and the words its error line must hold."""
    text = render_opencv(good_rig())
    path = folder / "rig.yaml"
    if case == "nan R1":
        path.write_text(field_data(text, "R1", ".Nan, 0., 0., 0., 1., 0., 0., 0., 1."))
        return "rig.yaml", ("rig.yaml", "R1 (left camera)", "NaN")
    if case == "nan Q":
        path.write_text(field_data(text, "Q", ", ".join(["1."] * 15 + [".Nan"])))
        return "rig.yaml", ("rig.yaml", "Q", "NaN")
    if case == "nan D2":
        path.write_text(field_data(text, "D2", ".Nan, 0., 0., 0., 0."))
        return "rig.yaml", ("rig.yaml", "D2 (right camera)", "NaN")
    if case == "zero K":
        path.write_text(field_data(text, "K1", ", ".join(["0."] * 9)))
        return "rig.yaml", ("rig.yaml", "K1 (left camera)", "positive focal lengths")
    if case == "zero baseline":
        path.write_text(render_opencv(good_rig()).replace("T: !!opencv-matrix", "T_old: !!opencv-matrix", 1)
                        + "T: !!opencv-matrix\n   rows: 3\n   cols: 1\n   dt: d\n   data: [ 1.4e-10, 2e-11, 0. ]\n")
        return "rig.yaml", ("rig.yaml", "baseline (T) is 1.41e-10 m", "same place")
    if case == "8 values":
        path.write_text(field_data(text, "K1", "90., 0., 48., 0., 90., 32., 0., 0."))
        return "rig.yaml", ("rig.yaml", "field K1", "rows x cols values")
    if case == "truncated":
        path.write_text(text[: len(text) // 2])
        return "rig.yaml", ("rig.yaml", "not a readable OpenCV FileStorage file (line", "truncated")
    if case == "invalid yaml":
        path.write_text("%YAML:1.0\n---\nK1: [1, 2\n  : : :\n")
        return "rig.yaml", ("rig.yaml", "not a readable OpenCV FileStorage file (line 4")
    if case == "unterminated xml":
        storage = cv2.FileStorage(str(folder / "full.xml"), cv2.FILE_STORAGE_WRITE)
        storage.write("K1", K)
        storage.release()
        (folder / "rig.xml").write_text((folder / "full.xml").read_text().replace("</opencv_storage>", ""))
        return "rig.xml", ("rig.xml", "not a readable OpenCV FileStorage file")
    if case == "text width":
        path.write_text(text.replace(f"image_width: {SIZE[0]}", "image_width: wide"))
        return "rig.yaml", ("rig.yaml", "field image_width is not a number")
    if case == "ros one camera twice":
        ros_file(folder / "left.yaml", P_LEFT)
        return "[left.yaml,left.yaml]", ("left.yaml,left.yaml", "baseline (projection_matrix) is 0 m", "same place")
    if case == "ros singular projection":
        ros_file(folder / "left.yaml", P_LEFT)
        ros_file(folder / "right.yaml", np.zeros((3, 4)))
        return "[left.yaml,right.yaml]", ("right.yaml", "projection_matrix.data", "singular")
    if case == "ros nan distortion":
        ros_file(folder / "left.yaml", P_LEFT)
        ros_file(folder / "right.yaml", P_RIGHT, D=(float("nan"), 0, 0, 0, 0))
        return "[left.yaml,right.yaml]", ("right.yaml", "distortion_coefficients.data", "NaN")
    if case == "R a reflection":
        path.write_text(field_data(text, "R", "1., 0., 0., 0., 1., 0., 0., 0., -1."))
        return "rig.yaml", ("rig.yaml", "R is not a rotation matrix")
    if case == "alpha nan":
        path.write_text(text.replace("alpha: 0.", "alpha: .Nan"))
        return "rig.yaml", ("rig.yaml", "alpha=nan")
    if case == "infinite width":
        path.write_text(text.replace(f"image_width: {SIZE[0]}", "image_width: .Inf"))
        return "rig.yaml", ("rig.yaml", "image_width/image_height must be two numbers")
    if case == "huge rectified size":
        path.write_text(text.replace(f"rectified_width: {SIZE[0]}", "rectified_width: 1000000000"))
        return "rig.yaml", ("rig.yaml", "rectified_size 1000000000x64 is larger than any image")
    if case == "middlebury ndisp 1e400":
        (folder / "calib.txt").write_text("cam0=[90 0 48; 0 90 32; 0 0 1]\ncam1=[90 0 48; 0 90 32; 0 0 1]\ndoffs=0\n"
                                          f"baseline=100\nwidth={SIZE[0]}\nheight={SIZE[1]}\nndisp=1e400\n")
        return "calib.txt", ("calib.txt", "'ndisp=1e400' is not a finite number")
    raise AssertionError(case)


CASES = ["nan R1", "nan Q", "nan D2", "zero K", "zero baseline", "8 values", "truncated", "invalid yaml",
         "unterminated xml", "text width", "ros one camera twice", "ros singular projection", "ros nan distortion",
         "middlebury ndisp 1e400", "R a reflection", "alpha nan", "infinite width", "huge rectified size"]


@pytest.mark.parametrize("case", CASES)
def test_an_unusable_calibration_is_one_line_and_nothing_is_written(workspace, run_command, case):
    calib, words = write_case(workspace, case)
    before = snapshot(workspace)
    rectify(run_command, calib).error_line(*words)
    assert snapshot(workspace) == before  # no output folder, no manifest, every file as it was


def test_a_plain_list_instead_of_an_opencv_matrix_is_read(workspace, run_command):
    text = render_opencv(good_rig())
    numbers = text[text.index("data: [", text.index("K1:")) + 6:text.index("]", text.index("K1:")) + 1]
    start, end = text.index("K1: !!opencv-matrix"), text.index("D1:")
    (workspace / "rig.yaml").write_text(text[:start] + f"K1: {numbers}\n" + text[end:])
    assert rectify(run_command, "rig.yaml").status == 0
    assert (workspace / "out" / "left" / "left.png").is_file()


def test_a_path_with_a_comma_is_one_file_in_the_manifest(workspace, run_command):
    (workspace / "my,rig.yaml").write_text(render_opencv(good_rig()))
    assert rectify(run_command, '"my,rig.yaml"').status == 0
    recorded = json.loads((workspace / "out" / "manifest.json").read_text())["calibration"]
    assert recorded["files"] == [str(workspace / "my,rig.yaml")] and len(recorded["sha256"]) == 1


def test_a_comma_in_an_unquoted_path_says_how_to_quote(workspace, run_command):
    line = rectify(run_command, "my,rig.yaml").error_line("calib=my,rig.yaml", "quoted")
    assert "'calib=\"my,rig.yaml\"'" in line and "missing" not in line and "+key" not in line


# ---- stereo.calibrate ---------------------------------------------------------------------------
def calibrate(run_command, *overrides: str):
    return run_command("calibrate", "board.square_size=0.025", *overrides)


def test_the_same_folder_as_left_and_right_is_refused_before_calibrating(workspace, run_command):
    (workspace / "shots").mkdir()
    shutil.copy(workspace / "left.png", workspace / "shots" / "a.png")
    calibrate(run_command, "left=shots", "right=shots", "output=rig.yaml").error_line(
        "a.png", "both the left and the right image")
    assert not (workspace / "rig.yaml").exists() and not (workspace / "rig_report.json").exists()


@pytest.mark.parametrize("output, words", [("folder", ("output=folder", "is a folder", "folder/rig.yaml")),
                                           ("left.png/rig.yaml", ("output=left.png/rig.yaml", "is a file, not a folder")),
                                           ("rig.yaml max_rms=nan", ("max_rms=nan", "a number above 0"))])
def test_an_output_that_cannot_be_a_file_is_refused_before_calibrating(workspace, run_command, output, words):
    (workspace / "folder").mkdir()
    before = snapshot(workspace)
    # the pairs do not even exist: the output is checked first
    calibrate(run_command, "left=missing_l", "right=missing_r", *f"output={output}".split()).error_line(*words)
    assert snapshot(workspace) == before


@pytest.fixture
def ximea_copy(real_data_dir, tmp_path):
    """Pairs 01-12 of the real XIMEA rig, copied to tmp_path/left, tmp_path/right (edited per test)."""
    root = real_data_dir / "stereo_calibration_ximea"
    if not root.is_dir():
        pytest.skip(f"{root} not available")
    for view in ("left", "right"):
        (tmp_path / view).mkdir()
        for index in range(1, 13):
            shutil.copy(root / view / f"{view}{index:02d}.jpg", tmp_path / view)
    return tmp_path


def test_odd_sized_pairs_are_named_and_the_others_calibrate(ximea_copy, run_command, monkeypatch):
    monkeypatch.chdir(ximea_copy)
    for index in (1, 2):  # the first pairs are the odd ones: the most common size decides
        for view in ("left", "right"):
            path = ximea_copy / view / f"{view}{index:02d}.jpg"
            cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path)), (320, 256)))
    result = calibrate(run_command, "left=left", "right=right", "output=rig.xml")
    assert result.status == 0, result.stderr[-2000:]
    assert "warning: 2 of 12 pairs are not 640x512 like the others and are rejected: left01, left02" in result.stderr
    assert (ximea_copy / "rig.xml").read_text().startswith("<?xml")  # the format the suffix names
    report = json.loads((ximea_copy / "rig_report.json").read_text())
    assert report["pairs_used"] == 10 and report["image_size"] == [640, 512]
    # with too few left, the refusal counts why pairs were rejected
    calibrate(run_command, "left=left", "right=right", "output=rig2.yaml", "min_pairs=11").error_line(
        "only 10 of 12 pairs are usable (2 of another image size)", "min_pairs")
    assert not (ximea_copy / "rig2.yaml").exists()


def test_copies_of_one_camera_as_both_views_are_refused_unwritten(ximea_copy, run_command, monkeypatch):
    monkeypatch.chdir(ximea_copy)
    shutil.rmtree(ximea_copy / "right")
    shutil.copytree(ximea_copy / "left", ximea_copy / "right")
    before = snapshot(ximea_copy)
    calibrate(run_command, "left=left", "right=right", "output=rig.yaml", "min_pairs=10").error_line(
        "rig.yaml (not written): the baseline (T) is", "same place", "left and right are the two cameras' images")
    assert snapshot(ximea_copy) == before
