"""``stereo.infer ... calib=<file>``: rectification before inference for a pair, a folder and a video,
outputs in the sizes docs/rig.md gives, metric depth, the manifest's record, ``rectify_only``; metric
depth on the real KITTI 2015 sample (../shared/data/real/kitti2015) equals f*B/d.

The rig here is synthetic (a known pose, 160x128 images rectified to 144x112), so every size differs
and a mix-up between the original and the rectified frame cannot pass.
"""

from __future__ import annotations

import hashlib
import json

import cv2
import numpy as np
import pytest

from stereo.calibration.diagnostics import MAX_VERTICAL_PX, vertical_misalignment
from stereo.calibration.readers import read_calibration
from stereo.calibration.rectify import Rectifier
from stereo.calibration.rig import CalibrationError, StereoRig
from stereo.calibration.storage import write_opencv
from stereo.config import compose
from stereo.data.io import read_disparity, read_image, read_pfm, write_image
from stereo.infer import run
from stereo.inference.outputs import depth_map
from stereo.inference.video import VideoWriter

IMAGE = (160, 128)      # (width, height) the rig was calibrated for
RECTIFIED = (144, 112)  # what stereoRectify produces for it (newImageSize)


def make_rig(T=(-0.1, 0.002, 0.001), rectified=RECTIFIED) -> StereoRig:
    K = np.array([[150.0, 0, 80], [0, 151.0, 64], [0, 0, 1]])
    R = cv2.Rodrigues(np.array([0.01, -0.02, 0.005]))[0]
    return StereoRig.from_pose(K, [-0.05, 0.01, 0.001, 0, 0], K + np.diag([2.0, 2.0, 0]), [-0.04, 0.0, 0, 0.001, 0],
                               R, T, IMAGE, unit="m", rectified_size=rectified)


def textured(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (IMAGE[1], IMAGE[0], 3), dtype=np.uint8), (5, 5), 0)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("rig")
    write_opencv(root / "rig.yaml", make_rig())
    for index in range(2):
        left = textured(index)
        write_image(root / "in" / "left" / f"p{index}.png", left)
        write_image(root / "in" / "right" / f"p{index}.png", np.roll(left, -5, axis=1))
    return root, tiny_checkpoint


def infer(workspace, out, *overrides):
    root, checkpoint = workspace
    return run(compose("infer", [f"ckpt_path={checkpoint}", f"output_dir={out}", f"calib={root / 'rig.yaml'}",
                                 "swap_check=false", *overrides]))


def test_pair_is_rectified_and_depth_is_metric(workspace, tmp_path, capsys):
    root, _ = workspace
    written = infer(workspace, tmp_path / "out", f"left={root / 'in/left/p0.png'}", f"right={root / 'in/right/p0.png'}",
                    "formats=[pfm,depth,depth_original,ply]")
    disparity = read_pfm(written["pfm"][0])
    depth = read_pfm(written["depth"][0])
    assert disparity.shape == depth.shape == (RECTIFIED[1], RECTIFIED[0])
    assert read_pfm(written["depth_original"][0]).shape == (IMAGE[1], IMAGE[0])
    # f and B from the file through plain OpenCV: Z = f * B / d in metres (doffs 0: CALIB_ZERO_DISPARITY)
    storage = cv2.FileStorage(str(root / "rig.yaml"), cv2.FILE_STORAGE_READ)
    P1, P2 = storage.getNode("P1").mat(), storage.getNode("P2").mat()
    storage.release()
    f, baseline = P1[0, 0], -P2[0, 3] / P2[0, 0]
    positive = disparity > 0
    assert positive.any()
    np.testing.assert_allclose(depth[positive], f * baseline / disparity[positive], rtol=1e-5)
    record = json.loads((tmp_path / "out" / "manifest.json").read_text())["calibration"]
    assert record["files"] == [str((root / "rig.yaml").resolve())]
    assert record["sha256"] == [hashlib.sha256((root / "rig.yaml").read_bytes()).hexdigest()]
    assert record["rectified_size"] == list(RECTIFIED) and record["views_exchanged"] is False


@pytest.mark.slow
def test_folder_and_video_are_rectified(workspace, tmp_path):
    root, _ = workspace
    folder = infer(workspace, tmp_path / "folder", f"input_dir={root / 'in'}", "formats=[pfm]")
    assert [read_pfm(p).shape for p in folder["pfm"]] == [(RECTIFIED[1], RECTIFIED[0])] * 2
    with VideoWriter(tmp_path / "sbs.mkv", fps=5) as writer:  # FFV1: lossless
        for index in range(2):
            left = textured(10 + index)
            writer.write(np.hstack([left, np.roll(left, -5, axis=1)]))
    video = infer(workspace, tmp_path / "video", f"video={tmp_path / 'sbs.mkv'}", "formats=[pfm,depth]")
    assert [read_pfm(p).shape for p in video["pfm"] + video["depth"]] == [(RECTIFIED[1], RECTIFIED[0])] * 4


def test_rectify_only_writes_rectified_pairs_without_a_network(workspace, tmp_path):
    root, _ = workspace
    written = run(compose("infer", [f"calib={root / 'rig.yaml'}", f"input_dir={root / 'in'}", "rectify_only=true",
                                    f"output_dir={tmp_path / 'rect'}"]))
    assert [p.rsplit("/", 2)[-2:] for p in written["left"]] == [["left", "p0.png"], ["left", "p1.png"]]
    reference = Rectifier(make_rig()).rectify(read_image(root / "in/left/p0.png"), read_image(root / "in/right/p0.png"))
    np.testing.assert_array_equal(read_image(tmp_path / "rect/left/p0.png"), reference[0])
    assert read_image(tmp_path / "rect/right/p1.png").shape == (RECTIFIED[1], RECTIFIED[0], 3)
    manifest = json.loads((tmp_path / "rect" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["files"]) == 4


def test_swapped_rig_is_exchanged_before_inference(tmp_path, capsys):
    """The camera named right at -x of the named left one: the named-right image becomes the reference,
    rectified with the rig's roles exchanged (R^T, -R^T T)."""
    rig = make_rig(T=(0.1, 0.002, 0.001))
    rectifier = Rectifier(rig)
    assert rig.views_swapped and rectifier.exchanged and rectifier.depth_geometry().baseline == pytest.approx(0.1, rel=0.05)
    R = rig.R.T
    R1, _, P1, _, _, _, _ = cv2.stereoRectify(rig.K2, rig.D2, rig.K1, rig.D1, IMAGE, R, -R @ rig.T,
                                              flags=cv2.CALIB_ZERO_DISPARITY, alpha=0, newImageSize=RECTIFIED)
    maps = cv2.initUndistortRectifyMap(rig.K2, rig.D2, R1, P1, RECTIFIED, cv2.CV_16SC2)
    left, right = textured(1), textured(2)
    reference, _ = rectifier.rectify(left, right)
    np.testing.assert_array_equal(reference, cv2.remap(right, *maps, cv2.INTER_LINEAR))
    list(rectifier.frames([(left, right)]))
    assert "the camera named right lies 0.1 m to the LEFT" in capsys.readouterr().err


def test_image_size_the_calibration_is_not_for_is_refused(workspace, tmp_path):
    root, _ = workspace
    write_image(tmp_path / "l.png", textured(0)[:80, :100])
    write_image(tmp_path / "r.png", textured(0)[:80, :100])
    with pytest.raises(CalibrationError, match=r"l.png: 100x80 image, but .*rig.yaml is a calibration for 160x128 images"):
        infer(workspace, tmp_path / "out", f"left={tmp_path / 'l.png'}", f"right={tmp_path / 'r.png'}")


def test_depth_maps_back_onto_the_original_image():
    """A fronto-parallel plane Z = 2 m in the rectified frame seen from the original camera: along each
    original pixel's ray r (undistorted, in the original camera), Z_original = 2 / (R1 r)_z."""
    rig = make_rig()
    rectifier = Rectifier(rig)
    original = rectifier.to_original(np.full((RECTIFIED[1], RECTIFIED[0]), 2.0, np.float32))
    assert original.shape == (IMAGE[1], IMAGE[0])
    ys, xs = np.mgrid[30:100:7, 30:130:7]
    pixels = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64).reshape(-1, 1, 2)
    rays = np.concatenate([cv2.undistortPoints(pixels, rig.K1, rig.D1).reshape(-1, 2), np.ones((len(pixels), 1))], 1)
    expected = 2.0 / (rays @ rig.R1.T)[:, 2]
    np.testing.assert_allclose(original[ys.ravel(), xs.ravel()], expected, rtol=1e-6)


@pytest.fixture
def kitti2015(real_data_dir, tmp_path):
    """The KITTI 2015 sample and a calibration for it built from the P_rect_02/03 lines of the shared KITTI raw
    calib_cam_to_cam.txt (no KITTI 2015 calibration file is in the shared samples) with the sample's size."""
    sample = real_data_dir / "kitti2015" / "000046_10" / "training"
    raw = real_data_dir / "calibration_files" / "kitti_raw" / "calib_cam_to_cam.txt"
    if not sample.is_dir() or not raw.is_file():
        pytest.skip("KITTI 2015 sample or KITTI raw calibration not available")
    lines = [line for line in raw.read_text().splitlines() if line.startswith(("P_rect_02:", "P_rect_03:"))]
    (tmp_path / "calib_cam_to_cam.txt").write_text("\n".join([*lines, "S_rect_02: 1242 375"]) + "\n")
    return sample, tmp_path / "calib_cam_to_cam.txt"


# by hand from calib_cam_to_cam.txt: f = 707.0493 px, B = (45.75831 + 334.1081) / 707.0493 m
KITTI_F, KITTI_B = 707.0493, (45.75831 + 334.1081) / 707.0493


def test_kitti2015_metric_depth_is_f_b_over_d(kitti2015):
    sample, calib = kitti2015
    disparity, valid = read_disparity(sample / "disp_occ_0" / "000046_10.png")
    geometry = Rectifier(read_calibration(calib)).depth_geometry()
    depth = depth_map(np.where(valid, disparity, 0), geometry)
    np.testing.assert_allclose(depth[valid], KITTI_F * KITTI_B / disparity[valid], rtol=1e-6)
    assert 4 < np.median(depth[valid]) < 80  # metres: a street scene


@pytest.mark.slow
def test_kitti2015_through_stereo_infer(kitti2015, workspace, tmp_path):
    sample, calib = kitti2015
    written = run(compose("infer", [f"ckpt_path={workspace[1]}", f"output_dir={tmp_path / 'out'}", f"calib={calib}",
                                    f"left={sample / 'image_2/000046_10.png'}", f"right={sample / 'image_3/000046_10.png'}",
                                    "formats=[pfm,depth]", "swap_check=false"]))
    disparity, depth = read_pfm(written["pfm"][0]), read_pfm(written["depth"][0])
    assert disparity.shape == (375, 1242)
    positive = disparity > 0
    np.testing.assert_allclose(depth[positive], KITTI_F * KITTI_B / disparity[positive], rtol=1e-5)


def test_vertical_misalignment_measures_a_known_shift_on_kitti2015(kitti2015):
    """KITTI's rectified pair lines up (< 1 px); the right view moved down by 3 rows measures 3 px and warns."""
    sample, _ = kitti2015
    left, right = read_image(sample / "image_2/000046_10.png"), read_image(sample / "image_3/000046_10.png")
    aligned = vertical_misalignment(left, right)
    assert aligned.median_dy < MAX_VERTICAL_PX and aligned.warning("calib") is None
    shifted = vertical_misalignment(left, np.roll(right, 3, axis=0))
    # with per-match errors e (|e| < 3 px), median |3 + e| = 3 + median e, and |median e| <= median |e| (the aligned value)
    assert shifted.median_dy == pytest.approx(3.0, abs=aligned.median_dy)
    assert "differ by 3." in shifted.warning("calib")


def test_ros_camera_info_pair_as_calib(workspace, tmp_path):
    """calib=[left.yaml,right.yaml]: the stored rectification is used as is, so the pairs match ours exactly
    (ROS rectifies to the image size: the rig's rectified size is its image size)."""
    from test_calibration_readers import write_ros

    root, _ = workspace
    rig = make_rig(rectified=IMAGE)
    write_ros(tmp_path / "left.yaml", rig.K1, rig.D1, rig.R1, rig.P1, rig.image_size)
    write_ros(tmp_path / "right.yaml", rig.K2, rig.D2, rig.R2, rig.P2, rig.image_size)
    run(compose("infer", [f"calib=[{tmp_path / 'left.yaml'},{tmp_path / 'right.yaml'}]", f"input_dir={root / 'in'}",
                          "rectify_only=true", f"output_dir={tmp_path / 'rect'}"]))
    expected = Rectifier(rig).rectify(read_image(root / "in/left/p1.png"), read_image(root / "in/right/p1.png"))
    np.testing.assert_array_equal(read_image(tmp_path / "rect/right/p1.png"), expected[1])
    record = json.loads((tmp_path / "rect" / "manifest.json").read_text())["calibration"]
    assert [p.rsplit("/", 1)[-1] for p in record["files"]] == ["left.yaml", "right.yaml"] and len(record["sha256"]) == 2
