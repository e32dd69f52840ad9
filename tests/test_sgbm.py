"""StereoSGBM baseline, its dense fill, the max_disp rule and the per-pair evaluation routine."""

from __future__ import annotations

import numpy as np
import pytest

from stereo.data.sceneflow import SceneFlowDataset
from stereo.evaluation import evaluate_method, metrics, sgbm_method
from stereo.evaluation.protocols import get_protocol, round_max_disp
from stereo.evaluation.sgbm import SGBMMatcher, SGBMParams, fill_invalid


def _zero_disparity(left, right, max_disp):
    return np.zeros(left.shape[:2], np.float32), None, {"route": "full image"}


def test_max_disp_is_rounded_strictly_above_the_gt_maximum_to_a_multiple_of_16_and_capped():
    assert round_max_disp(14.0) == 16
    assert round_max_disp(16.0) == 32  # gt == 16 would fall outside a 16-level search (0..15)
    assert round_max_disp(130.36) == 144
    assert round_max_disp(0.0) == 16
    assert round_max_disp(385.3, cap=192) == 192
    with pytest.raises(ValueError, match="multiple of 16"):
        round_max_disp(10.0, cap=100)
    with pytest.raises(ValueError, match="finite"):
        round_max_disp(float("nan"))
    gt = np.array([[5.0, 300.0], [47.5, 0.0]], np.float32)
    pairs = get_protocol("pairs")
    assert pairs.sample_max_disp(gt, np.array([[True, False], [True, False]])) == 48  # invalid 300 ignored
    assert pairs.with_cap(32).sample_max_disp(gt, np.ones_like(gt, bool)) == 32
    with pytest.raises(ValueError, match="per-sample search range.s cap max_disp must be a positive multiple of 16, got 40"):
        pairs.with_cap(40)


def test_fill_leaves_no_hole_keeps_valid_pixels_and_uses_the_row_background():
    disparity = np.array([[-1, 10, -1, -1, 4, -1],
                          [-1, -1, -1, -1, -1, -1],
                          [7, -1, 9, -1, -1, 2]], np.float32)
    valid = disparity >= 0
    filled = fill_invalid(disparity, valid)
    np.testing.assert_array_equal(filled[valid], disparity[valid])
    # interior holes: min of the neighbours (background); border holes: nearest valid value
    np.testing.assert_array_equal(filled[0], [10, 10, 4, 4, 4, 4])
    np.testing.assert_array_equal(filled[2], [7, 7, 9, 2, 2, 2])
    # a row without any match copies the nearest filled row (row 0, tie with row 2 goes up)
    np.testing.assert_array_equal(filled[1], filled[0])
    assert np.isfinite(filled).all() and (filled >= 0).all()
    assert not fill_invalid(disparity, np.zeros_like(valid)).any()
    with pytest.raises(ValueError, match="same H×W shape"):
        fill_invalid(disparity, valid[:, :3])


def test_sgbm_rejects_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="multiple of 16"):
        SGBMMatcher(40)
    with pytest.raises(ValueError, match="odd"):
        SGBMParams(block_size=4)
    with pytest.raises(ValueError, match="uint8"):
        SGBMMatcher(16).predict(np.zeros((32, 32, 3), np.float32), np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="must have equal sizes"):
        SGBMMatcher(16).predict(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 48, 3), np.uint8))


def test_sgbm_on_synthetic_pairs_is_dense_and_far_better_than_zero_disparity(synthetic_root):
    dataset = SceneFlowDataset(synthetic_root, split="test", files="all", subsets=["flyingthings3d"])
    sample = dataset[0]
    disparity, valid = SGBMMatcher(32).predict(sample["left"], sample["right"])
    assert disparity.dtype == np.float32 and disparity.shape == valid.shape == sample["disparity"].shape
    assert np.isfinite(disparity).all() and (disparity >= 0).all(), "the dense map must have no hole left"
    assert 0.5 < valid.mean() < 1.0, "raw SGBM leaves some (but not most) pixels unmatched"
    sgbm = evaluate_method(sgbm_method(), dataset, progress=False)["summary"]
    zero = evaluate_method(_zero_disparity, dataset, progress=False)["summary"]
    assert sgbm["count"] == zero["count"] == len(dataset)
    assert sgbm["epe"] < 0.25 * zero["epe"], (sgbm["epe"], zero["epe"])
    assert sgbm["bad3"] < 0.5 * zero["bad3"], (sgbm["bad3"], zero["bad3"])


def test_sgbm_on_middlebury_cones_matches_its_published_class_of_accuracy(real_data_dir):
    from stereo.data.real_samples import load_real_samples

    result = evaluate_method(sgbm_method(), load_real_samples(real_data_dir), names=["middlebury2003/cones"],
                             progress=False)
    (row,) = result["rows"]
    assert row["max_disp"] == 64  # GT max 55.0 -> next multiple of 16 above it
    assert 80.0 < row["coverage"] < 100.0 and row["raw_epe"] <= row["epe"]
    zero = evaluate_method(_zero_disparity, load_real_samples(real_data_dir), names=["middlebury2003/cones"],
                           progress=False)["rows"][0]
    assert row["pixels"] == zero["pixels"] > 0.9 * 450 * 375
    # SGBM on Cones: a few percent bad pixels; d = 0 is wrong almost everywhere
    assert row["epe"] < 2.0 and row["bad3"] < 15.0, row
    assert row["epe"] < 0.1 * zero["epe"]


def test_evaluation_scores_exactly_the_masked_pixels_with_the_shared_metrics(synthetic_root):
    """A method that is exact except on a known block: the row equals the metrics computed directly."""
    dataset = SceneFlowDataset(synthetic_root, split="test", files="all", subsets=["flyingthings3d"])
    sample = dataset[0]

    def off_by_five_in_a_block(left, right, max_disp):
        prediction = sample["disparity"].copy()
        prediction[:64, :64] += 5.0
        return prediction, None, {"route": "full image"}

    (row,) = evaluate_method(off_by_five_in_a_block, dataset, names=[sample["name"]], progress=False)["rows"]
    mask = metrics.evaluation_mask(sample["disparity"], sample["valid"], 0.0, row["max_disp"])
    expected_bad = 100.0 * mask[:64, :64].sum().item() / mask.sum().item()
    assert row["bad3"] == pytest.approx(expected_bad) and row["d1"] <= row["bad3"]
    assert row["epe"] == pytest.approx(5.0 * expected_bad / 100.0, rel=1e-5)
    assert row["coverage"] == 100.0 and row["max_disp"] == round_max_disp(float(sample["disparity"][sample["valid"]].max()))
