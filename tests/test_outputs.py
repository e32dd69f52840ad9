"""Every inference output format round-trips, and depth/PLY geometry follows the calibration."""

from __future__ import annotations

import numpy as np
import pytest

from stereo.data.io import Calibration, read_disparity, read_image, read_pfm
from stereo.inference.outputs import FILE_NAMES, OutputWriter, depth_map, make_calibration, point_cloud

HEIGHT, WIDTH = 24, 40


@pytest.fixture
def prediction():
    rng = np.random.default_rng(0)
    disparity = rng.uniform(0.5, 60.0, (HEIGHT, WIDTH)).astype(np.float32)
    disparity[0, 0] = 0.0  # no match: must not become a point or a finite depth
    confidence = rng.uniform(0.0, 1.0, (HEIGHT, WIDTH)).astype(np.float32)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return disparity, confidence, image


CALIB = Calibration(focal=500.0, cx=20.5, cy=11.0, baseline=100.0, doffs=2.0, ndisp=None, width=WIDTH, height=HEIGHT)


def read_binary_ply(path):
    """Minimal reader for the PLY layout we write, parsing the header instead of assuming it."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[1] == "format binary_little_endian 1.0"
    count = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    properties = [tuple(line.split()[1:]) for line in header if line.startswith("property")]
    types = {"float": "<f4", "uchar": "u1"}
    dtype = np.dtype([(name, types[kind]) for kind, name in properties])
    vertices = np.frombuffer(data, dtype, count=count, offset=end)
    assert len(data) == end + count * dtype.itemsize, "file size must match the header exactly"
    return vertices


def test_float_formats_round_trip_exactly_and_png16_within_1_over_256(tmp_path, prediction):
    disparity, confidence, image = prediction
    writer = OutputWriter(tmp_path, ["pfm", "npy", "png16"], color_range=(0, 64))
    paths = writer.write("pair", disparity, confidence, image)
    assert paths["pfm"].name == "pair_disp.pfm" and paths["png16"].name == "pair_disp.png"
    np.testing.assert_array_equal(read_pfm(paths["pfm"]), disparity)
    np.testing.assert_array_equal(np.load(paths["npy"]), disparity)
    png, valid = read_disparity(paths["png16"])
    assert not valid[0, 0], "zero disparity is stored as 'invalid' (0) in KITTI PNG16"
    assert valid.sum() == disparity.size - 1
    assert np.abs(png[valid] - disparity[valid]).max() <= 0.5 / 256 + 1e-6


def test_confidence_png16_and_pfm_round_trip(tmp_path, prediction):
    disparity, confidence, image = prediction
    png_path = OutputWriter(tmp_path, ["confidence"]).write("a", disparity, confidence, image)["confidence"]
    pfm_path = OutputWriter(tmp_path, ["confidence"], confidence_format="pfm").write("a", disparity, confidence, image)["confidence"]
    assert png_path.name == "a_conf.png" and pfm_path.name == "a_conf.pfm"
    import cv2

    stored = cv2.imread(str(png_path), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16
    assert np.abs(stored / 65535.0 - confidence).max() <= 0.5 / 65535 + 1e-7
    np.testing.assert_array_equal(read_pfm(pfm_path), confidence)


def test_color_range_is_fixed_by_first_frame_not_recomputed_per_frame(tmp_path, prediction):
    disparity, confidence, image = prediction
    writer = OutputWriter(tmp_path, ["color"])
    first = writer.write("f0", disparity, confidence, image)["color"]
    kept_range = writer.color_range
    writer.write("f1", disparity * 0.5, confidence, image)
    assert writer.color_range == kept_range
    # the same disparity value must get the same colour in both frames
    again = writer.write("f2", disparity, confidence, image)["color"]
    np.testing.assert_array_equal(read_image(first), read_image(again))
    half = read_image(tmp_path / "f1_disp_color.png")
    assert not np.array_equal(half, read_image(first)), "halved disparities must look different with a fixed range"


def test_depth_follows_f_times_baseline_over_d_plus_doffs(tmp_path, prediction):
    disparity, confidence, image = prediction
    path = OutputWriter(tmp_path, ["depth"], calibration=CALIB).write("s", disparity, confidence, image)["depth"]
    assert path.name == "s_depth.pfm"
    depth = read_pfm(path)
    for y, x in [(3, 7), (20, 33), (12, 0)]:
        expected = 500.0 * 100.0 / (disparity[y, x] + 2.0)
        assert depth[y, x] == pytest.approx(expected, rel=1e-5)
    assert np.isinf(depth[0, 0]), "zero disparity has no depth"


def test_ply_vertices_match_back_projection_formula(tmp_path, prediction):
    disparity, confidence, image = prediction
    max_depth = 500.0 * 100.0 / (10.0 + 2.0)  # drops every pixel with d < 10
    writer = OutputWriter(tmp_path, ["ply"], calibration=CALIB, max_depth=max_depth)
    path = writer.write("s", disparity, confidence, image)["ply"]
    assert path.name == "s.ply"
    vertices = read_binary_ply(path)
    kept = (disparity > 0) & (500.0 * 100.0 / (disparity + 2.0) <= max_depth)
    assert len(vertices) == kept.sum() < disparity.size
    ys, xs = np.nonzero(kept)  # vertices are written in row-major pixel order
    for index in [0, len(xs) // 2, len(xs) - 1]:
        y, x = ys[index], xs[index]
        z = 500.0 * 100.0 / (disparity[y, x] + 2.0)
        vertex = vertices[index]
        assert vertex["z"] == pytest.approx(z, rel=1e-5)
        assert vertex["x"] == pytest.approx((x - 20.5) * z / 500.0, rel=1e-5, abs=1e-4)
        assert vertex["y"] == pytest.approx((y - 11.0) * z / 500.0, rel=1e-5, abs=1e-4)
        assert (vertex["red"], vertex["green"], vertex["blue"]) == tuple(image[y, x])


def test_calibration_from_middlebury_calib_txt_and_explicit_values(tmp_path):
    calib_txt = tmp_path / "calib.txt"
    calib_txt.write_text(
        "cam0=[3997.684 0 1176.728; 0 3997.684 1011.728; 0 0 1]\n"
        "cam1=[3997.684 0 1307.839; 0 3997.684 1011.728; 0 0 1]\n"
        "doffs=131.111\nbaseline=193.001\nwidth=2964\nheight=1988\nndisp=280\n"
    )
    from_file = make_calibration(calib_txt)
    # doffs and baseline come back through the rectified projections (cx1 - cx0, -P2[0,3] / f): float64 rounding
    assert (from_file.focal, from_file.baseline, from_file.doffs) == pytest.approx((3997.684, 193.001, 131.111), rel=1e-12)
    depth = depth_map(np.array([[100.0]], np.float32), from_file)
    assert depth[0, 0] == pytest.approx(193.001 * 3997.684 / (100.0 + 131.111), rel=1e-5)  # millimetres
    explicit = make_calibration(focal=700.0, baseline=0.12)
    points, _ = point_cloud(np.full((5, 9), 7.0, np.float32), np.zeros((5, 9, 3), np.uint8), explicit)
    # without cx/cy the image centre is the principal point: the centre pixel lands on the optical axis
    centre = points[2 * 9 + 4]
    assert centre[0] == pytest.approx(0.0) and centre[1] == pytest.approx(0.0)
    assert centre[2] == pytest.approx(700.0 * 0.12 / 7.0)


def test_depth_without_calibration_and_unknown_format_fail_clearly(tmp_path, prediction):
    disparity, confidence, image = prediction
    with pytest.raises(ValueError, match="need a calibration"):
        OutputWriter(tmp_path, ["ply"]).write("s", disparity, confidence, image)
    with pytest.raises(ValueError, match="unknown output format"):
        OutputWriter(tmp_path, ["jpeg"])
    with pytest.raises(ValueError, match="baseline"):
        make_calibration(focal=500.0)


def test_writes_leave_no_temporary_files(tmp_path, prediction):
    disparity, confidence, image = prediction
    formats = ["pfm", "png16", "npy", "color", "depth", "ply", "confidence"]
    OutputWriter(tmp_path, formats, calibration=CALIB).write("s", disparity, confidence, image)
    names = sorted(p.name for p in tmp_path.iterdir())
    expected = sorted(FILE_NAMES[f].format(stem="s", ext="png") for f in formats)
    assert names == expected
