"""The windowed estimate of a low-resolution soft-argmax (``regression.window``, sub-pixel MAP):
its definition in float64, why it exists (two modes), training untouched, and the route from a
checkpoint through ``stereo.export regression_window=`` into a weights file that keeps it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from inference_checkpoints import write_our_checkpoint

from stereo.models import load_model
from stereo.models.build import build_network, model_config
from stereo.models.regression import LowResolutionSoftArgmax

STRIDE, LEVELS = 8, 24  # max_disp 192 at 1/8, as the shipped network


def _windowed_levels_float64(cost: np.ndarray, window: int) -> np.ndarray:
    """N×1×D×h×w cost → N×h×w: Σ d·p_d over |d - argmax| <= window, p the softmax over those levels only."""
    logits = cost[:, 0].astype(np.float64)
    mode = logits.argmax(axis=1)[:, None]
    levels = np.arange(logits.shape[1], dtype=np.float64)[None, :, None, None]
    logits = np.where(np.abs(levels - mode) <= window, logits, -np.inf)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    return (weights * levels).sum(axis=1)


@pytest.mark.parametrize("window", [1, 2, 5])
def test_the_windowed_estimate_is_the_float64_definition(window):
    torch.manual_seed(window)
    cost = torch.randn(2, 1, LEVELS, 5, 7) * 3
    regression = LowResolutionSoftArgmax(LEVELS * STRIDE, STRIDE, window=window).eval()
    disparity = regression(cost, 5, 7)  # the output size is the cost's: the upsampling is the identity
    expected = STRIDE * _windowed_levels_float64(cost.numpy(), window)
    # float32 softmax over at most 2w+1 terms and a sum of as many products with levels < 24, times 8:
    # a few float32 roundings (2^-24 relative) of values below 8 * 24
    bound = 8 * (2 * window + 1) * STRIDE * LEVELS * 2.0 ** -24
    np.testing.assert_allclose(disparity.numpy(), expected, rtol=0, atol=bound)


def test_on_two_surfaces_the_window_follows_the_stronger_one_where_the_expectation_lies_between():
    """A 1/8 cell on a depth edge: two modes, levels 5 and 15. The expectation lands near level 10, on
    neither surface (40 px from both); the window stays on level 5."""
    cost = torch.full((1, 1, LEVELS, 1, 1), -20.0)
    cost[0, 0, 5], cost[0, 0, 15] = 5.0, 4.8
    plain = LowResolutionSoftArgmax(LEVELS * STRIDE, STRIDE).eval()(cost, 1, 1).item() / STRIDE
    windowed = LowResolutionSoftArgmax(LEVELS * STRIDE, STRIDE, window=1).eval()(cost, 1, 1).item() / STRIDE
    assert 9 < plain < 11
    assert abs(windowed - 5) < 1e-6


def test_training_keeps_the_full_expectation_and_its_gradient_reaches_every_level():
    torch.manual_seed(0)
    cost = torch.randn(1, 1, LEVELS, 3, 4, requires_grad=True)
    windowed = LowResolutionSoftArgmax(LEVELS * STRIDE, STRIDE, window=1).train()
    plain = LowResolutionSoftArgmax(LEVELS * STRIDE, STRIDE).train()
    out = windowed(cost, 3, 4)
    assert torch.equal(out, plain(cost, 3, 4))
    out.sum().backward()
    assert (cost.grad.abs() > 0).all()


def test_a_window_as_wide_as_the_volume_is_the_plain_estimate_exactly():
    torch.manual_seed(1)
    cost = torch.randn(1, 1, LEVELS, 4, 6)
    plain = LowResolutionSoftArgmax(LEVELS * STRIDE, STRIDE).eval()(cost, 32, 48)
    wide = LowResolutionSoftArgmax(LEVELS * STRIDE, STRIDE, window=LEVELS).eval()(cost, 32, 48)
    torch.testing.assert_close(wide, plain, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "1"])
def test_a_window_that_is_not_a_positive_whole_number_is_refused(bad):
    with pytest.raises(ValueError, match="regression window"):
        LowResolutionSoftArgmax(LEVELS * STRIDE, STRIDE, window=bad)


def test_the_network_sets_the_window_in_its_config_and_refuses_it_for_a_full_resolution_regression():
    network = build_network(model_config("ea_census", max_disp=32))
    assert network.regression_window is None
    network.regression_window = 1
    assert network.regression.window == 1 and network.config["regression"]["window"] == 1
    network.regression_window = None
    assert "window" not in network.config["regression"]
    psmnet = build_network(model_config("psmnet_basic", max_disp=32))
    with pytest.raises(ValueError, match="SoftArgmaxRegression has no windowed estimate"):
        psmnet.regression_window = 1


def test_export_writes_the_window_into_the_weights_file_and_the_loaded_network_applies_it(tmp_path):
    """stereo.export regression_window=1: the weights file's config carries it (so every command that
    loads the file uses it), the export's own verification compares that network, and the loaded
    network's disparity is the windowed one, not the plain one."""
    from stereo.export import export

    source = write_our_checkpoint(tmp_path / "census.ckpt", model_config("ea_census", max_disp=64), calibrated=True)
    output = tmp_path / "windowed.ckpt"
    assert export(source, "weights", output, verify_sizes=[[64, 96]], regression_window=1) is not None
    stored = torch.load(output, weights_only=True)
    assert stored["hyper_parameters"]["model_config"]["regression"]["window"] == 1
    windowed, plain = load_model(output).eval(), load_model(source).eval()
    assert windowed.regression_window == 1 and plain.regression_window is None
    left = torch.nn.functional.avg_pool2d(torch.randn(1, 3, 66, 98), 3, stride=1)
    with torch.no_grad():
        coarse_cost = windowed.aggregation(windowed.cost_volume(windowed.feature_extraction(left),
                                                                windowed.feature_extraction(left.roll(-5, 3))))[-1]
        expected = STRIDE * _windowed_levels_float64(coarse_cost.double().numpy(), 1)
        coarse = windowed.regression(coarse_cost, *coarse_cost.shape[-2:])
    np.testing.assert_allclose(coarse.numpy(), expected, rtol=0, atol=8 * 3 * STRIDE * 8 * 2.0 ** -24)
