"""PSMNet loss: weights per head, mask rules, smooth-L1 values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from stereo.training.losses import PSMNetLoss, disparity_mask


def test_smooth_l1_by_hand_with_default_mask_excluding_zero_and_max():
    gt = torch.tensor([[[0.0, 2.0, 5.0, 40.0]]])  # 0 (invalid) and 40 (≥ max_disp 32) are masked out
    pred = torch.tensor([[[9.0, 2.5, 8.0, 0.0]]])
    total, heads = PSMNetLoss(max_disp=32)(pred, gt)
    # |e| = 0.5 -> 0.5·0.5² = 0.125 ; |e| = 3 -> 3 − 0.5 = 2.5 ; mean = 1.3125; single output -> weight 1.0
    assert heads[0].item() == pytest.approx(1.3125)
    assert total.item() == pytest.approx(1.3125)


def test_three_heads_weighted_05_07_10():
    gt = torch.full((1, 2, 2), 4.0)
    outputs = (gt + 2.0, gt + 1.0, gt + 0.5)  # smooth-L1: 1.5, 0.5, 0.125
    total, heads = PSMNetLoss(max_disp=32)(outputs, gt)
    assert [h.item() for h in heads] == pytest.approx([1.5, 0.5, 0.125])
    assert total.item() == pytest.approx(0.5 * 1.5 + 0.7 * 0.5 + 1.0 * 0.125)


def test_mask_rules_and_valid_mask_differ_as_documented():
    gt = torch.tensor([[-1.0, 0.0, 3.0, 32.0, float("nan")]])
    valid = torch.tensor([[True, True, True, True, True]])
    assert disparity_mask(gt, valid, 32, "positive_below_max").tolist() == [[False, False, True, False, False]]
    assert disparity_mask(gt, valid, 32, "below_max").tolist() == [[True, True, True, False, False]]
    assert disparity_mask(gt, valid, 32, "positive").tolist() == [[False, False, True, True, False]]
    assert disparity_mask(gt, ~valid, 32, "positive").sum() == 0


def test_batch_without_valid_pixels_gives_nan_not_zero():
    total, _ = PSMNetLoss(max_disp=32)(torch.ones(1, 2, 2), torch.zeros(1, 2, 2))
    assert math.isnan(total.item())


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError, match="mask rule"):
        PSMNetLoss(max_disp=32, mask_rule="everything")
    with pytest.raises(ValueError, match="outputs"):
        PSMNetLoss(max_disp=32)([torch.zeros(1, 2, 2)] * 4, torch.ones(1, 2, 2))


def test_masked_sum_equals_the_mean_over_the_masked_pixels_of_psmnet():
    """Same value as PSMNet's smooth_l1_loss(out[mask], gt[mask]) (float64 reference, float32 rounding)."""
    torch.manual_seed(0)
    gt = torch.rand(2, 32, 48) * 40 - 4  # some ≤ 0 and some ≥ max_disp: masked out
    gt[0, :3] = float("inf")  # Scene Flow-style unknown pixels
    outputs = [gt.nan_to_num(0.0) + torch.randn(2, 32, 48) * s for s in (3.0, 1.5, 0.5)]
    total, heads = PSMNetLoss(max_disp=32)(outputs, gt)
    mask = disparity_mask(gt, None, 32)
    reference = [torch.nn.functional.smooth_l1_loss(o[mask].double(), gt[mask].double()) for o in outputs]
    for head, ref in zip(heads, reference):
        # float32 sum of ~3000 terms of order 1: relative rounding well below 1e-5
        assert head.item() == pytest.approx(ref.item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(w * r.item() for w, r in zip((0.5, 0.7, 1.0), reference)), rel=1e-5)


def test_unknown_ground_truth_and_non_finite_predictions_outside_the_mask_give_finite_gradients():
    gt = torch.tensor([[[2.0, float("inf"), float("nan"), 5.0]]])
    pred = torch.tensor([[[2.5, float("nan"), float("inf"), 8.0]]], requires_grad=True)
    total, _ = PSMNetLoss(max_disp=32)(pred, gt)
    total.backward()
    assert total.item() == pytest.approx((0.125 + 2.5) / 2)
    assert pred.grad.tolist() == [[[0.25, 0.0, 0.0, 0.5]]]  # d/dx mean: (0.5, 1) / 2 pixels


def test_empty_mask_gives_nan_loss_with_zero_gradient_for_the_guard_to_skip():
    pred = torch.ones(1, 2, 2, requires_grad=True)
    total, _ = PSMNetLoss(max_disp=32)(pred, torch.zeros(1, 2, 2))
    total.backward()
    assert math.isnan(total.item()) and torch.equal(pred.grad, torch.zeros(1, 2, 2))
