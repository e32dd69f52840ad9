"""EA-Census's components: soft census features, the pooled correlation volume, the local-cost refinement
with convex upsampling, and the network that carries a refinement (training outputs, checkpoints)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference_checkpoints import write_our_checkpoint
from stereo.models.build import build_network, model_config
from stereo.models.checkpoints import CheckpointError, load_model
from stereo.models.cost_volumes import PooledCorrelationVolume
from stereo.models.features import CensusFeatures
from stereo.models.refinements.blocks import convex_upsample, local_cost, shift_right_features


def _census_reference(image: np.ndarray, radius: int, scale: int, sigma: float) -> np.ndarray:
    """float64 restatement: grey = channel mean, area-downsampled, replicate border, tanh(Δ/σ) per neighbour."""
    grey = image.mean(axis=0)
    h, w = grey.shape[0] // scale, grey.shape[1] // scale
    grey = grey[:h * scale, :w * scale].reshape(h, scale, w, scale).mean(axis=(1, 3))
    padded = np.pad(grey, radius, mode="edge")
    out = []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy == dx == 0:
                continue
            neighbour = padded[radius + dy:radius + dy + h, radius + dx:radius + dx + w]
            out.append(np.tanh((neighbour - grey) / sigma))
    return np.stack(out)


def test_census_features_match_their_definition_and_ignore_brightness_offsets():
    image = torch.randn(1, 3, 16, 24, dtype=torch.float64)
    census = CensusFeatures(radius=2, scale=2, sigma=0.1).double()
    out = census(image)
    assert out.shape == (1, 24, 8, 12) and census.out_channels == 24 and census.stride == 2
    np.testing.assert_allclose(out[0].numpy(), _census_reference(image[0].numpy(), 2, 2, 0.1), rtol=0, atol=1e-12)
    # a brightness change between the cameras (one offset for all channels) changes nothing
    torch.testing.assert_close(census(image + 0.37), out, rtol=0, atol=1e-12)
    assert not list(census.parameters()) and not census.state_dict()


def test_census_features_keep_the_input_precision_under_autocast():
    """Mixed-precision training (trainer.precision=bf16-mixed) must not round the grey differences to
    bf16: under autocast the descriptors are the ones computed without it, bit for bit."""
    image = torch.randn(2, 3, 32, 48)
    census = CensusFeatures(radius=2, scale=2, sigma=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = census(image)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, census(image), rtol=0, atol=0)


def _pooled_reference(left: np.ndarray, right: np.ndarray, levels: int, pool: int) -> np.ndarray:
    channels, h, w = left.shape
    fine = np.zeros((levels, h, w))
    for d in range(levels):
        for x in range(d, w):
            fine[d, :, x] = (left[:, :, x] * right[:, :, x - d]).mean(axis=0)
    out = np.zeros((pool, levels // pool, h // pool, w // pool))
    for level in range(levels // pool):
        for sub in range(pool):
            block = fine[level * pool + sub].reshape(h // pool, pool, w // pool, pool)
            out[sub, level] = block.mean(axis=(1, 3))
    return out


def test_pooled_correlation_matches_its_definition_in_float64():
    left, right = torch.randn(2, 5, 8, 12, dtype=torch.float64), torch.randn(2, 5, 8, 12, dtype=torch.float64)
    volume = PooledCorrelationVolume(in_channels=5, levels=8, pool=4)
    out = volume(left, right)
    assert out.shape == (2, 4, 2, 2, 3) and volume.out_channels == 4
    for n in range(2):
        np.testing.assert_allclose(out[n].numpy(), _pooled_reference(left[n].numpy(), right[n].numpy(), 8, 4),
                                   rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="multiple of pool=4"):
        volume.levels = 6


def test_shifted_features_and_local_cost_find_an_integer_shift():
    right = torch.randn(1, 6, 5, 20, dtype=torch.float64)
    left = torch.zeros_like(right)
    left[..., 3:] = right[..., :-3]  # left(x) = right(x - 3): disparity 3
    disparity = torch.full((1, 1, 5, 20), 3.0, dtype=torch.float64)
    shifted = shift_right_features(right, disparity)
    torch.testing.assert_close(shifted[..., 3:], left[..., 3:], rtol=0, atol=1e-12)
    torch.testing.assert_close(shifted[..., :3], torch.zeros_like(shifted[..., :3]), rtol=0, atol=1e-12)  # outside
    cost = local_cost(left, right, disparity - 1.0, radius=2)  # estimate off by one: the match is at δ = +1
    assert cost.shape == (1, 5, 5, 20)
    torch.testing.assert_close(cost[:, 3, :, 3:], (left * left).mean(dim=1)[..., 3:], rtol=0, atol=1e-12)
    # δ = −1: total shift 1, right(x − 1) = left(x + 2)
    torch.testing.assert_close(cost[:, 1, :, 1:18], (left[..., 1:18] * left[..., 3:20]).mean(dim=1), rtol=0, atol=1e-12)


def test_convex_upsampling_keeps_a_constant_and_averages_with_a_flat_mask():
    disparity = torch.full((1, 1, 4, 5), 2.5)
    up = convex_upsample(disparity, torch.randn(1, 9 * 4, 4, 5), factor=2)
    assert up.shape == (1, 1, 8, 10)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full((1, 1, 4, 6), 5.0))  # interior: any convex mix of 5s
    ramp = torch.arange(20.0).view(1, 1, 4, 5)
    flat = convex_upsample(ramp, torch.zeros(1, 9 * 4, 4, 5), factor=2)  # equal weights: the 3x3 mean, x2
    expected = torch.nn.functional.avg_pool2d(ramp * 2, 3, stride=1, padding=1, count_include_pad=True)
    torch.testing.assert_close(flat[0, 0, ::2, ::2], expected[0, 0])


def test_the_network_with_a_refinement_trains_both_outputs_and_infers_the_refined_one():
    torch.manual_seed(0)
    network = build_network(model_config("ea_census", max_disp=32))
    left, right = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    outputs = network.train()(left, right)
    assert len(outputs) == 2 and all(o.shape == (2, 64, 96) for o in outputs)
    sum(o.mean() for o in outputs).backward()
    assert all(p.grad is not None for p in network.refinement.parameters())
    network.eval()
    with torch.no_grad():
        refined = network(left, right)
        disparity, confidence = network(left, right, return_confidence=True)
        coarse = network.regression(network.aggregation(network.cost_volume(
            network.feature_extraction(left), network.feature_extraction(right)))[-1], 64, 96)
    torch.testing.assert_close(disparity, refined, rtol=0, atol=0)
    assert confidence.shape == (2, 64, 96)
    # the residual starts at zero: an untrained refinement returns the coarse map convexly upsampled
    assert (refined - coarse).abs().mean() < coarse.abs().mean()


def test_the_full_resolution_step_trains_as_a_third_output_and_starts_as_the_identity():
    """refinement.detail_channels: training returns coarse, half-resolution refined and full-resolution
    outputs; the new step's output layer starts at zero (after the network's weight init), so eval gives
    exactly the refinement's own map until it has learned, and the loss reaches that layer."""
    torch.manual_seed(0)
    config = model_config("ea_census", max_disp=32)
    network = build_network({**config, "refinement": {**config["refinement"], "detail_channels": 4}})
    assert network.refinement.detail.residual.weight.abs().sum() == 0
    left, right = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    outputs = network.train()(left, right)
    assert len(outputs) == 3 and all(o.shape == (2, 64, 96) for o in outputs)
    torch.testing.assert_close(outputs[2], outputs[1], rtol=0, atol=0)
    sum(o.mean() for o in outputs).backward()
    assert network.refinement.detail.residual.weight.grad.abs().sum() > 0
    network.eval()
    with torch.no_grad():
        final = network(left, right)
        network.refinement.detail = None
        torch.testing.assert_close(final, network(left, right), rtol=0, atol=0)
    for bad in (-1, 2.5, "8", True):
        with pytest.raises(ValueError, match="refinement.detail_channels must be a whole number >= 0"):
            build_network({**config, "refinement": {**config["refinement"], "detail_channels": bad}})
        with pytest.raises(ValueError, match="refinement.detail_radius must be a whole number >= 1"):
            build_network({**config, "refinement": {**config["refinement"], "detail_channels": 4, "detail_radius": bad}})
    # its inference memory: the full-resolution maps it counts, on top of the network without it
    with_step = build_network({**config, "refinement": {**config["refinement"], "detail_channels": 4}})
    added = with_step.inference_bytes(64, 96) - build_network(config).inference_bytes(64, 96)
    assert added == 4 * 64 * 96 * with_step.refinement.detail.live_maps() > 0


def test_every_refinement_iteration_is_a_training_output_and_inference_returns_the_last():
    """refinement.iterations=2 with the full-resolution step: training returns coarse, both half-resolution
    updates and the full-resolution output; the first update is exactly what a one-iteration refinement
    returns, the loss on it alone reaches the shared update and upsampling layers, and inference returns
    the last output of the training sequence (same batch statistics: only the refinement's own flag set)."""
    torch.manual_seed(0)
    config = model_config("ea_census", max_disp=32)
    network = build_network({**config, "refinement": {**config["refinement"], "detail_channels": 4, "iterations": 2}})
    left, right = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    outputs = network.train()(left, right)
    assert len(outputs) == 4 and all(o.shape == (2, 64, 96) for o in outputs)
    outputs[1].mean().backward()
    assert network.refinement.residual.weight.grad.abs().sum() > 0 and network.refinement.mask.weight.grad.abs().sum() > 0
    network.eval()
    network.refinement.training = True  # the refinement's sequence, with the eval-mode layers inside it
    with torch.no_grad():
        sequence = network(left, right)
        network.refinement.iterations = 1
        single = network(left, right)
        network.refinement.iterations = 2
        network.refinement.training = False
        final = network(left, right)
    assert len(sequence) == 3 and len(single) == 2  # eval: the refinement's outputs only, no coarse map
    torch.testing.assert_close(sequence[0], single[0], rtol=0, atol=0)
    torch.testing.assert_close(final, sequence[-1], rtol=0, atol=0)
    assert not torch.equal(sequence[1], sequence[0])


def test_a_refinement_is_saved_and_loaded_through_the_validated_checkpoint_path(tmp_path):
    config = model_config("ea_census", max_disp=32)
    path = write_our_checkpoint(tmp_path / "census.ckpt", config, seed=3)
    loaded = load_model(path)
    torch.manual_seed(3)
    built = build_network(config).eval()
    left, right = torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(left, right), built(left, right), rtol=0, atol=0)
    hostile = dict(config, refinement={"_target_": "os.system", "command": "touch pwned"})
    with pytest.raises(CheckpointError, match="refinement._target_ 'os.system' is not a refinement component"):
        load_model(_with_config(tmp_path / "hostile.ckpt", path, hostile))
    assert not (tmp_path / "pwned").exists()


def _with_config(target, source, config):
    checkpoint = torch.load(source, weights_only=True)
    checkpoint["hyper_parameters"]["model_config"] = config
    torch.save(checkpoint, target)
    return target


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_the_shipped_network_exports_and_the_graph_holds_at_a_size_other_than_the_traced_one(fmt, tmp_path):
    """ea_census_detail (refinement + full-resolution step, regression window 1) through stereo.export: the
    export verifies the file against float64 PyTorch at a second width, where a width frozen into the
    graph at trace time (the refinement's disparity-over-width input once was) gives wrong disparities."""
    if fmt == "onnx":
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
    from stereo.export import export

    config = model_config("ea_census_detail", max_disp=64)
    config = {**config, "regression": {**config["regression"], "window": 1}}
    source = write_our_checkpoint(tmp_path / "census.ckpt", config, calibrated=True)
    ratio = export(source, fmt, tmp_path / f"census.{fmt}", verify_sizes=[[64, 96], [80, 160]])
    assert ratio is not None and ratio <= 1
