"""Metric functions against values computed by hand; masks, NaN handling and averaging modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stereo.evaluation import metrics

GT = torch.tensor([[[10.0, 20.0, 100.0, 0.0]]])
PRED = torch.tensor([[[10.5, 22.5, 104.0, 7.0]]])  # |e| = 0.5, 2.5, 4.0 ; the 0 gt pixel is masked


def test_epe_bad_and_d1_by_hand():
    mask = metrics.evaluation_mask(GT, max_disp=192)
    assert mask.tolist() == [[[True, True, True, False]]]
    assert metrics.epe(PRED, GT, mask).item() == pytest.approx((0.5 + 2.5 + 4.0) / 3)
    assert metrics.bad_pixel_rate(PRED, GT, mask, 1.0).item() == pytest.approx(200 / 3)
    assert metrics.bad_pixel_rate(PRED, GT, mask, 2.0).item() == pytest.approx(200 / 3)
    assert metrics.bad_pixel_rate(PRED, GT, mask, 3.0).item() == pytest.approx(100 / 3)
    # D1: 4.0 > 3 but 4.0 is not > 5 % of 100 = 5 -> not an outlier; 2.5 < 3 -> none
    assert metrics.d1(PRED, GT, mask).item() == pytest.approx(0.0)
    assert metrics.d1(torch.tensor([[12.0, 30.0]]), torch.tensor([[8.0, 20.0]]), torch.ones(1, 2, dtype=torch.bool)).item() == pytest.approx(100.0)


def test_numpy_inputs_and_range_and_noc_masks():
    gt = np.array([[1.0, 50.0, 250.0]], np.float32)
    valid = np.array([[True, True, True]])
    noc = np.array([[True, False, True]])
    assert metrics.evaluation_mask(gt, valid, 0.0, 192.0).tolist() == [[True, True, False]]
    assert metrics.evaluation_mask(gt, valid, 0.0, 192.0, noc).tolist() == [[True, False, False]]
    assert metrics.evaluation_mask(gt, valid, None, None).tolist() == [[True, True, True]]


def test_per_image_vs_pooled_and_empty_image_is_nan():
    gt = torch.tensor([[[1.0, 1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0, 1.0]], [[0.0, 0.0, 0.0, 0.0]]])
    pred = gt.clone()
    pred[0, 0, 0] = 5.0  # image 0: one error of 4 over 4 pixels -> EPE 1
    mask = metrics.evaluation_mask(gt)
    mask[1, 0, 1:] = False  # image 1: one valid pixel, error 0
    per_image = metrics.epe(pred, gt, mask)
    assert per_image[:2].tolist() == pytest.approx([1.0, 0.0])
    assert math.isnan(per_image[2].item())
    assert metrics.epe(pred, gt, mask, pooled=True).item() == pytest.approx(4.0 / 5)
    assert metrics.mean_over_images(per_image) == (pytest.approx(0.5), 2)


def test_nonfinite_prediction_inside_mask_is_not_counted_as_zero_error():
    gt = torch.tensor([[2.0, 2.0]])
    pred = torch.tensor([[float("nan"), 3.0]])
    assert metrics.epe(pred, gt, torch.ones(1, 2, dtype=torch.bool)).item() == pytest.approx(1.0)


def test_summarize_modes():
    rows = [
        {"epe": 1.0, "bad1": 0.0, "bad2": 0.0, "bad3": 0.0, "d1": 0.0, "pixels": 100},
        {"epe": 3.0, "bad1": 50.0, "bad2": 0.0, "bad3": 0.0, "d1": 0.0, "pixels": 300},
        {"epe": math.nan, "bad1": math.nan, "bad2": math.nan, "bad3": math.nan, "d1": math.nan, "pixels": 0},
    ]
    per_image = metrics.summarize(rows, "per_image")
    assert per_image["epe"] == pytest.approx(2.0)
    assert (per_image["count"], per_image["scored"], per_image["excluded"]) == (3, 2, 1)
    assert metrics.summarize(rows, "pooled")["epe"] == pytest.approx((100 + 900) / 400)
    # groups of 1 -> pooled within each row = per-image; groups of 2 -> (pooled(rows 0,1) + NaN group skipped)
    assert metrics.summarize(rows, "per_batch", batch_size=1)["epe"] == pytest.approx(2.0)
    assert metrics.summarize(rows, "per_batch", batch_size=2)["bad1"] == pytest.approx((0 * 100 + 50 * 300) / 400)
    with pytest.raises(ValueError, match="averaging"):
        metrics.summarize(rows, "median")


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.epe(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3), torch.ones(1, 2, 2, dtype=torch.bool))


def test_nonfinite_ground_truth_is_counted_per_image_and_in_the_summary():
    gt = torch.full((3, 4, 5), 2.0)
    gt[0, 0, :2] = float("nan")
    gt[1] = float("nan")  # an all-NaN image: excluded from the means, and reported
    gt[2, 1, 1] = float("inf")
    pred = torch.full_like(gt, 2.5)
    per_image = metrics.all_metrics(pred, gt, metrics.evaluation_mask(gt))
    assert per_image["nonfinite_gt"].tolist() == [2, 20, 1]
    assert per_image["pixels"].tolist() == [18, 0, 19]
    rows = [{k: float(v[i]) for k, v in per_image.items()} for i in range(3)]
    summary = metrics.summarize(rows)
    assert summary["nonfinite_gt"] == 23 and summary["nonfinite_gt_images"] == 3
    assert summary["excluded"] == 1 and summary["epe"] == pytest.approx(0.5)
