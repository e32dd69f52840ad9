"""Every real sample in ../shared/data/real read with its documented encoding (SOURCES.md).

Checks shapes, dtypes, valid fractions and GT ranges as SOURCES.md records them, and that the
decoded GT is geometrically right: warping the right image by the left GT matches the left image far
better than d = 0 does. Skipped when the folder is absent (conftest's ``real_data_dir``).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stereo.data.io import read_disparity, read_image, read_pfm
from stereo.data.real_samples import load_real_samples

# name: (width, height, valid fraction or None, GT min, GT max), from SOURCES.md
DOCUMENTED = {
    "flyingthings3d/A-0032-0006": (960, 540, 1.0, 1.21, 130.36),
    "flyingthings3d/TEST/A/0000/0006": (960, 540, 1.0, 1.17, 99.39),
    "kitti2012/000000_10": (1226, 370, 0.358, 4.40, 69.82),
    "kitti2015/000046_10": (1242, 375, 0.118, 4.87, 65.74),
    "middlebury2001/tsukuba": (384, 288, 0.793, 5.0, 14.0),
    "middlebury2001/venus": (434, 383, None, 3.0, 19.75),
    "middlebury2003/cones": (450, 375, 0.968, 5.5, 55.0),
    "middlebury2003/teddy": (450, 375, None, 12.5, 52.75),
    "middlebury2005/Reindeer": (671, 555, None, 5.5, 100.5),
    "middlebury2006/Wood2": (653, 555, None, 21.5, 108.5),
}


@pytest.fixture(scope="module")
def samples(real_data_dir):
    """Every real pair, loaded once (the ``real_data_dir`` fixture skips when the folder is absent)."""
    dataset = load_real_samples(real_data_dir)
    return {sample["name"]: sample for sample in (dataset[i] for i in range(len(dataset)))}


def test_every_real_pair_is_found(samples):
    assert set(samples) == set(DOCUMENTED)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_real_pair_decodes_with_its_documented_encoding(samples, name):
    width, height, valid_fraction, low, high = DOCUMENTED[name]
    sample = samples[name]
    for view in ("left", "right"):
        assert sample[view].shape == (height, width, 3) and sample[view].dtype == np.uint8
    disparity, valid = sample["disparity"], sample["valid"]
    assert disparity.shape == valid.shape == (height, width)
    assert disparity.dtype == np.float32 and valid.dtype == bool
    assert not disparity[~valid].any()
    if valid_fraction is not None:
        assert valid.mean() == pytest.approx(valid_fraction, abs=0.0015)
    assert disparity[valid].min() == pytest.approx(low, abs=0.006)
    assert disparity[valid].max() == pytest.approx(high, abs=0.006)


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def _warp_error(target: np.ndarray, source: np.ndarray, offset: np.ndarray, valid: np.ndarray) -> float:
    """Mean |target(x) − source(x + offset)| over valid pixels whose source lies inside the image."""
    height, width = offset.shape
    map_x = (np.arange(width, dtype=np.float32)[None, :] + offset).astype(np.float32)
    map_y = np.repeat(np.arange(height, dtype=np.float32)[:, None], width, axis=1)
    warped = cv2.remap(_grey(source), map_x, map_y, cv2.INTER_LINEAR)
    inside = valid & (map_x >= 0) & (map_x <= width - 1)
    return float(np.abs(_grey(target) - warped)[inside].mean())


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_left_gt_warps_the_right_image_onto_the_left(samples, name):
    sample = samples[name]
    valid = sample["valid"]
    with_gt = _warp_error(sample["left"], sample["right"], -sample["disparity"], valid)
    without = _warp_error(sample["left"], sample["right"], np.zeros_like(sample["disparity"]), valid)
    assert with_gt < 0.5 * without, f"{name}: GT warp error {with_gt:.2f} vs {without:.2f} at d=0"


@pytest.mark.parametrize("name", [n for n in sorted(DOCUMENTED) if n.startswith(("middlebury", "flyingthings3d/A"))
                                  and n != "middlebury2001/tsukuba"])
def test_right_gt_warps_the_left_image_onto_the_right(samples, name):
    sample = samples[name]
    valid = sample["valid_right"]
    with_gt = _warp_error(sample["right"], sample["left"], sample["disparity_right"], valid)
    without = _warp_error(sample["right"], sample["left"], np.zeros_like(sample["disparity_right"]), valid)
    assert with_gt < 0.5 * without


def test_flyingthings3d_non_occluded_pixels_match_better(samples):
    sample = samples["flyingthings3d/A-0032-0006"]
    assert sample["noc"].mean() == pytest.approx(0.85, abs=0.001)  # 15.0 % occluded
    everywhere = _warp_error(sample["left"], sample["right"], -sample["disparity"], sample["valid"])
    non_occluded = _warp_error(sample["left"], sample["right"], -sample["disparity"], sample["noc"])
    assert non_occluded < 0.5 * everywhere  # SOURCES.md: 1.09 vs 6.86


def test_unflipped_pfm_rows_would_be_wrong(samples):
    """The bottom-to-top row order matters: the raw (unflipped) rows warp far worse."""
    sample = samples["flyingthings3d/A-0032-0006"]
    unflipped = np.ascontiguousarray(sample["disparity"][::-1])
    flipped_error = _warp_error(sample["left"], sample["right"], -sample["disparity"], sample["valid"])
    unflipped_error = _warp_error(sample["left"], sample["right"], -unflipped, sample["valid"])
    assert unflipped_error > 1.5 * flipped_error


@pytest.mark.parametrize("path, low, high, mean", [
    ("sceneflow_driving/0400/disparity/0400.pfm", 0.53, 269.51, 83.0),
    ("sceneflow_monkaa/0048/disparity/0048.pfm", 1.32, 385.28, 193.5),
])
def test_disparity_only_scene_flow_samplers(real_data_dir, path, low, high, mean):
    raw = read_pfm(real_data_dir / path)
    assert raw.shape == (540, 960) and raw.dtype == np.float32
    disparity, valid = read_disparity(real_data_dir / path)
    assert valid.all()
    assert (disparity.min(), disparity.max()) == pytest.approx((low, high), abs=0.006)
    assert disparity.mean() == pytest.approx(mean, abs=0.06)


def test_rgba_scene_flow_png_drops_alpha(real_data_dir):
    path = real_data_dir / "sceneflow_flyingthings3d/A-0032-0006/RGB_cleanpass/left/A-0032-0006.png"
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert stored.shape == (540, 960, 4) and (stored[..., 3] == 255).all()
    np.testing.assert_array_equal(read_image(path), cv2.cvtColor(stored, cv2.COLOR_BGRA2RGB))


def test_kitti_gt_is_uint16_divided_by_256(real_data_dir):
    path = real_data_dir / "kitti2015/000046_10/training/disp_occ_0/000046_10.png"
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint16
    disparity, valid = read_disparity(path)
    np.testing.assert_array_equal(valid, stored > 0)
    np.testing.assert_allclose(disparity[valid], stored[valid] / 256.0)
