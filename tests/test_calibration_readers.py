"""Every calibration reader into the one StereoRig, against values read by hand from the file.

KITTI: the real raw-data ``calib_cam_to_cam.txt`` in ../shared/data/real/calibration_files (skipped without
it). Middlebury 2014, ETH3D, ROS and OpenCV files are written by the tests from their documented
formats (the Middlebury sample is the one on the Middlebury 2014 page; Adirondack-perfect's calib.txt is
quoted verbatim). A real MiddEval3 file is read when ``$STEREO_CALIBRATION_SAMPLES`` names a folder
holding ``middlebury2014_trainingQ/Adirondack/calib.txt`` (a copy of ``MiddEval3/trainingQ/Adirondack/calib.txt``
as committed in github.com/Homay0118/DDL_demo at c7639a21; kept out of the repository, skipped without it).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from stereo.calibration.readers import read_calibration, read_depth_geometry, read_middlebury
from stereo.calibration.rig import CalibrationError, StereoRig
from stereo.data.io import DataError

MIDDLEBURY_PAGE_SAMPLE = ("cam0=[3997.684 0 1176.728; 0 3997.684 1011.728; 0 0 1]\n"
                          "cam1=[3997.684 0 1307.839; 0 3997.684 1011.728; 0 0 1]\n"
                          "doffs=131.111\nbaseline=193.001\nwidth=2964\nheight=1988\nndisp=280\nisint=0\n"
                          "vmin=31\nvmax=257\ndyavg=0.918\ndymax=1.516\n")
ADIRONDACK_PERFECT = ("cam0=[4161.221 0 1445.577; 0 4161.221 984.686; 0 0 1]\n"
                      "cam1=[4161.221 0 1654.636; 0 4161.221 984.686; 0 0 1]\n"
                      "doffs=209.059\nbaseline=176.252\nwidth=2880\nheight=1988\nndisp=280\nisint=0\n"
                      "vmin=25\nvmax=248\ndyavg=0\ndymax=0\n")
REL = 1e-12  # values pass through one product/quotient or difference in float64


@pytest.fixture
def kitti_file(real_data_dir):
    path = real_data_dir / "calibration_files" / "kitti_raw" / "calib_cam_to_cam.txt"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


def test_kitti_rectified_pair_from_p_rect(kitti_file):
    rig = read_calibration(kitti_file)
    # by hand: P_rect_02 f = 707.0493, P_rect_02[0,3] = 45.75831, P_rect_03[0,3] = -334.1081, S_rect_02 = 1224 370
    assert rig.focal == 707.0493 and rig.rectified_size == (1224, 370) and rig.unit == "m"
    assert rig.baseline == pytest.approx((45.75831 + 334.1081) / 707.0493, rel=REL)
    assert not rig.needs_remap and not rig.views_swapped
    geometry = rig.depth_geometry()
    assert (geometry.cx, geometry.cy, geometry.doffs) == (604.0814, 180.5066, 0.0)


def test_kitti_raw_cameras(kitti_file):
    rig = read_calibration(kitti_file, kitti_raw=True)
    # by hand: K_02 = [956.9475 0 693.9767; 0 952.2352 238.6081; ...], D_02[0] = -0.3750956, K_03 fx = 901.1007
    assert (rig.K1[0, 0], rig.K1[0, 2], rig.K1[1, 1], rig.D1[0], rig.K2[0, 0]) == (956.9475, 693.9767, 952.2352,
                                                                                   -0.3750956, 901.1007)
    assert rig.image_size == (1392, 512) and rig.rectified_size == (1224, 370) and rig.needs_remap
    # KITTI's rectification, by hand: R_rect_02 = [9.998691e-01 1.512763e-02 ...], P_rect f = 707.0493
    assert (rig.R1[0, 0], rig.R1[0, 1], rig.R2[0, 1], rig.focal) == (0.9998691, 0.01512763, -0.006606294, 707.0493)
    # consistent with the poses: the rectified frames differ by a translation only (the file has 7 digits)
    np.testing.assert_allclose(rig.R2 @ rig.R @ rig.R1.T, np.eye(3), atol=1e-6)
    # T_03 - T_02 = (-0.4756270 - 0.05989688, ...): R = R_03 R_02^T differs from I by ~0.03, |T_02| ~ 0.06 m
    assert rig.T[0, 0] == pytest.approx(-0.4756270 - 0.05989688, abs=2e-3)


def test_kitti_file_without_the_pair_names_the_field(tmp_path):
    (tmp_path / "calib_cam_to_cam.txt").write_text("calib_time: 09-Jan-2012 13:58:50\nP_rect_02: 1 0 0 0 0 1 0 0 0 0 1 0\n"
                                                   "S_rect_02: 10 10\n")
    with pytest.raises(CalibrationError, match=r"calib_cam_to_cam.txt: no field P_rect_03"):
        read_calibration(tmp_path / "calib_cam_to_cam.txt")


@pytest.mark.parametrize("text, f, cx, cy, baseline, doffs, size", [
    (MIDDLEBURY_PAGE_SAMPLE, 3997.684, 1176.728, 1011.728, 193.001, 131.111, (2964, 1988)),
    (ADIRONDACK_PERFECT, 4161.221, 1445.577, 984.686, 176.252, 209.059, (2880, 1988)),
])
def test_middlebury_calib_txt(tmp_path, text, f, cx, cy, baseline, doffs, size):
    (tmp_path / "calib.txt").write_text(text)
    rig = read_calibration(tmp_path / "calib.txt")
    assert rig.unit == "mm" and rig.ndisp == 280 and rig.image_size == size and not rig.needs_remap
    geometry = read_depth_geometry(tmp_path / "calib.txt")
    assert (geometry.focal, geometry.cx, geometry.cy) == (f, cx, cy)
    assert (geometry.baseline, geometry.doffs) == pytest.approx((baseline, doffs), rel=REL)
    assert (geometry.width, geometry.height, geometry.ndisp) == (*size, 280)
    d = 68.889
    assert geometry.depth(np.array([d]))[0] == pytest.approx(baseline * f / (d + doffs), rel=1e-6)  # float32 depth


def test_real_middeval3_quarter_size_calib_txt():
    """Its lines carry stray blanks (' doffs= 53.271 ', '[ 1038.018 0 322.037 ; ...] ')."""
    path = Path(os.environ.get("STEREO_CALIBRATION_SAMPLES", "")) / "middlebury2014_trainingQ" / "Adirondack" / "calib.txt"
    if not os.environ.get("STEREO_CALIBRATION_SAMPLES") or not path.is_file():
        pytest.skip("set STEREO_CALIBRATION_SAMPLES to a folder with middlebury2014_trainingQ/Adirondack/calib.txt")
    geometry = read_depth_geometry(path)
    # by hand: cam0 f 1038.018, cx 322.037, cy 243.393; doffs 53.271 (= 375.308 - 322.037); baseline 176.252 mm
    assert (geometry.focal, geometry.cx, geometry.cy, geometry.width, geometry.height, geometry.ndisp) == (
        1038.018, 322.037, 243.393, 718, 496, 73)
    assert (geometry.baseline, geometry.doffs) == pytest.approx((176.252, 53.271), rel=REL)


def test_middlebury_without_doffs_and_contradictions(tmp_path):
    (tmp_path / "calib.txt").write_text("cam0=[500 0 100; 0 500 80; 0 0 1]\ncam1=[500 0 104.5; 0 500 80; 0 0 1]\n"
                                        "baseline=60\nwidth=200\nheight=160\n")
    geometry = read_middlebury(tmp_path / "calib.txt").depth_geometry()
    assert geometry.doffs == pytest.approx(4.5) and geometry.ndisp is None
    (tmp_path / "bad.txt").write_text("cam0=[500 0 100; 0 500 80; 0 0 1]\ndoffs=0\nwidth=200\nheight=160\n")
    with pytest.raises(DataError, match=r"bad.txt: calib.txt has no 'baseline=' line"):
        read_calibration(tmp_path / "bad.txt")
    (tmp_path / "wrong.txt").write_text("cam0=[500 0 100; 0 500 80; 0 0 1]\ncam1=[500 0 104.5; 0 500 80; 0 0 1]\n"
                                        "doffs=9\nbaseline=60\nwidth=200\nheight=160\n")
    with pytest.raises(CalibrationError, match=r"wrong.txt: doffs=9 contradicts cam1's cx - cam0's cx = 4.500"):
        read_calibration(tmp_path / "wrong.txt")


def write_eth3d(folder, baseline=0.0599):
    """cameras.txt and images.txt in the COLMAP text format of ETH3D's two-view scenes."""
    (folder / "cameras.txt").write_text(
        "# Camera list with one line of data per camera:\n#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n"
        "# Number of cameras: 2\n0 PINHOLE 941 490 542.019 542.019 541.922 255.202\n"
        "1 PINHOLE 941 490 542.019 542.019 541.922 255.202\n")
    (folder / "images.txt").write_text(
        "# Image list with two lines of data per image:\n#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
        "#   POINTS2D[] as (X, Y, POINT3D_ID)\n# Number of images: 2, mean observations per image: 0\n"
        f"0 1 0 0 0 0 0 0 0 im0.png\n\n1 1 0 0 0 {-baseline} 0 0 1 im1.png\n\n")


def test_eth3d_cameras_txt_with_images_txt(tmp_path):
    write_eth3d(tmp_path)
    rig = read_calibration(tmp_path / "cameras.txt")
    assert rig.unit == "m" and rig.image_size == (941, 490) and not rig.needs_remap
    geometry = rig.depth_geometry()
    assert (geometry.focal, geometry.cx, geometry.cy, geometry.doffs) == (542.019, 541.922, 255.202, 0.0)
    assert geometry.baseline == pytest.approx(0.0599, rel=REL)
    # one camera shared by both images
    text = (tmp_path / "cameras.txt").read_text().splitlines()
    (tmp_path / "cameras.txt").write_text("\n".join(text[:-1]) + "\n")
    (tmp_path / "images.txt").write_text((tmp_path / "images.txt").read_text().replace(" 0 1 im1.png", " 0 0 im1.png"))
    assert read_calibration(tmp_path / "cameras.txt").depth_geometry().baseline == pytest.approx(0.0599, rel=REL)
    (tmp_path / "images.txt").unlink()
    with pytest.raises(CalibrationError, match=r"cameras.txt: no images.txt beside it"):
        read_calibration(tmp_path / "cameras.txt")


def synthetic_rig(size=(160, 128)) -> StereoRig:
    K = np.array([[150.0, 0, 80], [0, 151.0, 64], [0, 0, 1]])
    R = cv2.Rodrigues(np.array([0.01, -0.02, 0.005]))[0]
    return StereoRig.from_pose(K, [-0.05, 0.01, 0.001, 0, 0], K + np.diag([2.0, 2.0, 0]), [-0.04, 0.0, 0, 0.001, 0],
                               R, [-0.1, 0.002, 0.001], size, unit="m", source="synthetic")


def write_ros(path, K, D, R, P, size):
    def block(name, rows, cols, values):
        return f"{name}:\n  rows: {rows}\n  cols: {cols}\n  data: [{', '.join(repr(float(v)) for v in np.ravel(values))}]\n"

    path.write_text(f"image_width: {size[0]}\nimage_height: {size[1]}\ncamera_name: narrow_stereo/left\n"
                    + block("camera_matrix", 3, 3, K) + "distortion_model: plumb_bob\n"
                    + block("distortion_coefficients", 1, 5, D) + block("rectification_matrix", 3, 3, R)
                    + block("projection_matrix", 3, 4, P))


def test_ros_camera_info_pair_recovers_the_pose(tmp_path):
    rig = synthetic_rig()
    write_ros(tmp_path / "left.yaml", rig.K1, rig.D1, rig.R1, rig.P1, rig.image_size)
    write_ros(tmp_path / "right.yaml", rig.K2, rig.D2, rig.R2, rig.P2, rig.image_size)
    read = read_calibration([tmp_path / "left.yaml", tmp_path / "right.yaml"])
    np.testing.assert_array_equal(read.K1, rig.K1)
    np.testing.assert_array_equal(read.D2, rig.D2)
    # R and T follow from the stored rectification: R = R2^T R1, T = R2^T (-B, 0, 0)
    np.testing.assert_allclose(read.R, rig.R, atol=1e-12)
    np.testing.assert_allclose(read.T, rig.T, atol=1e-12)
    assert read.baseline == pytest.approx(rig.baseline, rel=REL) and read.needs_remap
    with pytest.raises(CalibrationError, match=r"left.yaml: a ROS camera_info file describes one camera; give both"):
        read_calibration(tmp_path / "left.yaml")


@pytest.mark.parametrize("suffix", [".yml", ".xml"])
def test_opencv_file_from_other_tools(tmp_path, suffix):
    """M1/M2 as OpenCV's stereo_calib sample names them, no rectification stored: it is computed."""
    rig = synthetic_rig()
    path = tmp_path / f"stereo{suffix}"
    storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    for name, value in (("M1", rig.K1), ("D1", rig.D1), ("M2", rig.K2), ("D2", rig.D2), ("R", rig.R), ("T", rig.T)):
        storage.write(name, value)
    storage.write("image_width", 160)
    storage.write("image_height", 128)
    storage.release()
    read = read_calibration(path)
    np.testing.assert_array_equal(read.K2, rig.K2)
    np.testing.assert_allclose(read.P2, rig.P2, rtol=1e-12, atol=1e-9)
    (tmp_path / "partial.yml").write_text("%YAML:1.0\n---\nM1: !!opencv-matrix\n   rows: 1\n   cols: 1\n   dt: d\n   data: [1.]\n")
    with pytest.raises(CalibrationError, match=r"partial.yml: no field D1"):
        read_calibration(tmp_path / "partial.yml")


def test_opencv_stereo_calib_sample_intrinsics_and_extrinsics(tmp_path):
    """The sample writes intrinsics.yml (M1 D1 M2 D2) and extrinsics.yml (R T R1 R2 P1 P2 Q), no image size."""
    rig = synthetic_rig()
    for name, fields in (("intrinsics.yml", ("M1", "D1", "M2", "D2")), ("extrinsics.yml", ("R", "T", "R1", "R2", "P1", "P2", "Q"))):
        storage = cv2.FileStorage(str(tmp_path / name), cv2.FILE_STORAGE_WRITE)
        for field in fields:
            storage.write(field, getattr(rig, {"M1": "K1", "M2": "K2"}.get(field, field)))
        storage.release()
    files = [tmp_path / "intrinsics.yml", tmp_path / "extrinsics.yml"]
    with pytest.raises(CalibrationError, match=r"no field image_width/image_height .* add 'image_width: <w>'"):
        read_calibration(files)
    with (tmp_path / "intrinsics.yml").open("a") as text:
        text.write("image_width: 160\nimage_height: 128\n")
    read = read_calibration(files)
    for name in ("K1", "D2", "R", "T", "R1", "P2", "Q"):
        np.testing.assert_array_equal(getattr(read, name), getattr(rig, name), err_msg=name)
    assert read.image_size == (160, 128) and read.needs_remap


def test_unknown_file_gets_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("focal length about 700\n")
    with pytest.raises(CalibrationError, match=r"notes.txt: unknown calibration format \(supported: OpenCV"):
        read_calibration(tmp_path / "notes.txt")
