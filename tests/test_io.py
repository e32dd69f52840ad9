"""Readers and writers: round trips, independently written files, and every bad-input case."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from stereo.data.io import (
    DataError,
    read_disparity,
    read_image,
    read_mask,
    read_pfm,
    write_disparity_png16,
    write_image,
    write_pfm,
)


def _pfm_bytes(array: np.ndarray, kind: bytes, little_endian: bool, header_tail: bytes = b"") -> bytes:
    """A PFM written independently of write_pfm (rows bottom-to-top, chosen byte order)."""
    height, width = array.shape[:2]
    scale = b"-1.0" if little_endian else b"1.0"
    header = kind + header_tail + b"\n" + f"{width} {height}".encode() + header_tail + b"\n" + scale + b"\n"
    return header + np.ascontiguousarray(array[::-1], dtype="<f4" if little_endian else ">f4").tobytes()


@pytest.mark.parametrize("little_endian", [True, False])
def test_read_pfm_decodes_both_byte_orders_and_flips_rows(tmp_path, little_endian):
    array = np.arange(12, dtype=np.float32).reshape(3, 4) * 1.5
    path = tmp_path / "x.pfm"
    path.write_bytes(_pfm_bytes(array, b"Pf", little_endian))
    decoded = read_pfm(path)
    assert decoded.dtype == np.float32 and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, array)


def test_read_pfm_accepts_trailing_spaces_in_the_header_like_real_scene_flow_files(tmp_path):
    array = np.random.default_rng(0).uniform(0, 100, (5, 7)).astype(np.float32)
    path = tmp_path / "x.pfm"
    path.write_bytes(_pfm_bytes(array, b"Pf", True, header_tail=b" "))
    assert path.read_bytes().startswith(b"Pf \n7 5 \n-1.0\n")
    np.testing.assert_array_equal(read_pfm(path), array)


def test_read_pfm_three_channel_pf_big_endian(tmp_path):
    array = np.random.default_rng(1).normal(size=(4, 6, 3)).astype(np.float32)
    path = tmp_path / "x.pfm"
    path.write_bytes(_pfm_bytes(array, b"PF", False))
    np.testing.assert_array_equal(read_pfm(path), array)


@pytest.mark.parametrize("shape", [(9, 13), (9, 13, 3)])
def test_write_pfm_round_trip_little_endian_bottom_to_top(tmp_path, shape):
    array = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    path = tmp_path / "x.pfm"
    write_pfm(path, array)
    data = path.read_bytes()
    kind = b"PF" if len(shape) == 3 else b"Pf"
    assert data.startswith(kind + b"\n13 9\n-1.0\n")
    first_stored = np.frombuffer(data[len(kind + b"\n13 9\n-1.0\n"):], "<f4", count=13 * (3 if len(shape) == 3 else 1))
    np.testing.assert_array_equal(first_stored, array[-1].ravel())  # bottom row first
    np.testing.assert_array_equal(read_pfm(path), array)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pfm"]  # no temporary file left behind


def test_read_disparity_pfm_marks_inf_nan_and_negative_invalid_and_zeroes_them(tmp_path):
    array = np.array([[1.5, np.inf, 3.0], [np.nan, -2.0, 0.0]], np.float32)
    write_pfm(tmp_path / "d.pfm", array)
    disparity, valid = read_disparity(tmp_path / "d.pfm")
    np.testing.assert_array_equal(valid, [[True, False, True], [False, False, True]])
    np.testing.assert_array_equal(disparity, [[1.5, 0, 3.0], [0, 0, 0]])


def test_kitti_png16_round_trip_rounds_to_1_256_and_keeps_invalid(tmp_path):
    disparity = np.array([[0.0, 1.0, 10.3], [255.99, 300.0, np.nan]], np.float32)
    write_disparity_png16(tmp_path / "d.png", disparity)
    stored = cv2.imread(str(tmp_path / "d.png"), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16
    np.testing.assert_array_equal(stored, [[0, 256, round(10.3 * 256)], [65533, 65535, 0]])
    decoded, valid = read_disparity(tmp_path / "d.png")
    np.testing.assert_array_equal(valid, [[False, True, True], [True, True, False]])
    np.testing.assert_allclose(decoded[valid], [1.0, 10.3, 255.99, 65535 / 256], atol=1 / 512)


def test_png16_explicit_valid_mask_keeps_zero_disparity_valid(tmp_path):
    disparity = np.zeros((2, 2), np.float32)
    write_disparity_png16(tmp_path / "d.png", disparity, valid=np.array([[True, False], [False, False]]))
    decoded, valid = read_disparity(tmp_path / "d.png")
    assert valid.tolist() == [[True, False], [False, False]] and decoded[0, 0] == pytest.approx(1 / 256)


def test_eight_bit_disparity_needs_explicit_scale(tmp_path):
    raw = np.array([[0, 4, 80]], np.uint8)
    cv2.imwrite(str(tmp_path / "d.pgm"), raw)
    with pytest.raises(ValueError, match="d.pgm: 8-bit disparity needs an explicit scale"):
        read_disparity(tmp_path / "d.pgm")
    disparity, valid = read_disparity(tmp_path / "d.pgm", scale=4)
    np.testing.assert_array_equal(disparity, [[0, 1, 20]])
    np.testing.assert_array_equal(valid, [[False, True, True]])


@pytest.mark.parametrize("extension", [".png", ".ppm", ".jpg", ".webp"])
def test_read_image_returns_rgb_for_each_format(tmp_path, extension):
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[..., 2] = 30
    cv2.imwrite(str(tmp_path / f"x{extension}"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    image = read_image(tmp_path / f"x{extension}")
    assert image.shape == (8, 10, 3) and image.dtype == np.uint8
    tolerance = 0 if extension in (".png", ".ppm") else 6
    assert np.abs(image.astype(int) - rgb).max() <= tolerance


def test_read_image_drops_alpha_expands_grey_and_scales_16_bit(tmp_path):
    rgba = np.dstack([np.full((4, 5), v, np.uint8) for v in (10, 20, 30, 255)])
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    assert read_image(tmp_path / "rgba.png")[0, 0].tolist() == [10, 20, 30]
    cv2.imwrite(str(tmp_path / "grey.pgm"), np.full((4, 5), 77, np.uint8))
    assert read_image(tmp_path / "grey.pgm")[0, 0].tolist() == [77, 77, 77]
    cv2.imwrite(str(tmp_path / "deep.png"), np.full((4, 5, 3), 65535, np.uint16))
    deep = read_image(tmp_path / "deep.png")
    assert deep.dtype == np.uint8 and deep.max() == 255


def test_write_image_round_trip(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    write_image(tmp_path / "a" / "x.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "a" / "x.png"), rgb)


# ---- bad input: every error names the file and the problem -------------------------------------


def test_truncated_pfm_names_file_and_sizes(tmp_path):
    write_pfm(tmp_path / "d.pfm", np.ones((540, 960), np.float32))
    data = (tmp_path / "d.pfm").read_bytes()
    (tmp_path / "cut.pfm").write_bytes(data[:1000])
    with pytest.raises(DataError, match=r"cut.pfm: PFM header says 960x540x1 float32 \(2073600 bytes\) but the file holds 984 bytes"):
        read_pfm(tmp_path / "cut.pfm")


def test_pfm_with_more_data_than_its_header_says_is_rejected(tmp_path):
    (tmp_path / "long.pfm").write_bytes(b"Pf\n2 2\n-1\n" + struct.pack("<5f", *range(5)))
    with pytest.raises(DataError, match="long.pfm: PFM header says 2x2x1 .* holds 20 bytes"):
        read_disparity(tmp_path / "long.pfm")


@pytest.mark.parametrize("content", [b"P7\n2 2\n-1\n", b"Pf\n2\n", b"Pf\n2 2\n0\n" + bytes(16), b"Pf\n2 2\nabc\n" + bytes(16)])
def test_corrupt_pfm_headers_are_reported(tmp_path, content):
    (tmp_path / "bad.pfm").write_bytes(content)
    with pytest.raises(DataError, match="bad.pfm: "):
        read_pfm(tmp_path / "bad.pfm")


def test_three_channel_pfm_is_not_a_disparity(tmp_path):
    write_pfm(tmp_path / "flow.pfm", np.zeros((2, 3, 3), np.float32))
    with pytest.raises(DataError, match="flow.pfm: disparity PFM must have one channel"):
        read_disparity(tmp_path / "flow.pfm")


@pytest.mark.parametrize("extension", [".png", ".ppm", ".webp"])
def test_truncated_image_names_file(tmp_path, extension):
    rgb = np.random.default_rng(4).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    write_image(tmp_path / f"full{extension}", rgb)
    data = (tmp_path / f"full{extension}").read_bytes()
    (tmp_path / f"cut{extension}").write_bytes(data[: len(data) - 20])
    with pytest.raises(DataError, match=f"cut\\{extension}: .*truncated"):
        read_image(tmp_path / f"cut{extension}")


def test_garbage_empty_and_missing_files_are_reported(tmp_path):
    (tmp_path / "garbage.png").write_bytes(b"this is not an image")
    with pytest.raises(DataError, match="garbage.png: cannot decode image"):
        read_image(tmp_path / "garbage.png")
    (tmp_path / "empty.pfm").write_bytes(b"")
    with pytest.raises(DataError, match="empty.pfm: file is empty"):
        read_disparity(tmp_path / "empty.pfm")
    with pytest.raises(FileNotFoundError, match="absent.png"):
        read_image(tmp_path / "absent.png")


def test_colour_disparity_png_and_colour_mask_are_rejected(tmp_path):
    write_image(tmp_path / "colour.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="colour.png: disparity image must have one channel"):
        read_disparity(tmp_path / "colour.png", scale=4)
    with pytest.raises(DataError, match="colour.png: expected a single-channel 8-bit mask"):
        read_mask(tmp_path / "colour.png")


def test_writers_reject_wrong_shapes_with_the_path(tmp_path):
    with pytest.raises(ValueError, match="x.pfm: PFM holds"):
        write_pfm(tmp_path / "x.pfm", np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ValueError, match="x.png: disparity must be H×W"):
        write_disparity_png16(tmp_path / "x.png", np.zeros((2, 2, 3)))


def test_atomic_write_gives_the_permissions_a_plain_open_would(tmp_path):
    """mkstemp makes 0600 files; outputs shared with a group or a web server must not stay private."""
    import os
    import stat

    from stereo.data.io import atomic_write

    atomic_write(tmp_path / "a.bin", b"x")
    with open(tmp_path / "b.bin", "wb") as file:
        file.write(b"x")
    mode = stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "b.bin").st_mode), oct(mode)
    assert (tmp_path / "a.bin").read_bytes() == b"x" and not list(tmp_path.glob(".*.tmp"))
