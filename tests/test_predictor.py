"""Predictor: padding/unpadding, batching, tiled and downscaled modes, narrow pairs enlarged, input checks, swap warning.

Mechanics are checked with a per-pixel "echo" network whose exact output is known; the real network
runs on a tiny random checkpoint in both checkpoint formats.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from inference_checkpoints import write_our_checkpoint
from stereo.data.io import read_image
from stereo.data.normalize import normalize_image
from stereo.data.real_samples import default_real_data_dir
from stereo.inference.checks import SWAP_RATIO, SwappedPairWarning, swap_score
from stereo.inference.memory import estimate_memory_gb
from stereo.inference.predictor import InputError, Predictor
from stereo.models import InputSpec, PSMNet
from stereo.models.components import InferenceShape
from stereo.models.build import build_network, model_config

REAL = default_real_data_dir()


class EchoNet(torch.nn.Module):
    """disparity = first input channel, confidence = sigmoid(second): any crop/pad/blend slip shows.
    It states its needs as a StereoNetwork does, with PSMNet's input spec and memory figures."""

    input_spec = InputSpec(16, 256)

    def __init__(self, max_disp: int = 32) -> None:
        super().__init__()
        self.max_disp = max_disp

    def with_max_disp(self, max_disp: int) -> "EchoNet":
        return EchoNet(max_disp)

    def inference_bytes(self, height, width, max_disp=None, batch=1, optimized=True) -> float:
        return (10.0 if optimized else 17.5) * batch * height * width * (max_disp or self.max_disp)

    def forward(self, left, right, return_confidence=False):
        height, width = left.shape[-2:]
        assert height % 16 == 0 and width % 16 == 0 and min(height, width) >= 256, (height, width)
        return left[:, 0].clone(), torch.sigmoid(left[:, 1])


def echo_expected(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    normalised = normalize_image(image)
    return normalised[0].numpy(), torch.sigmoid(normalised[1]).numpy()


@pytest.fixture(scope="module")
def rng_pair():
    rng = np.random.default_rng(1)
    left = rng.integers(0, 256, (75, 131, 3), dtype=np.uint8)
    return left, np.roll(left, -3, axis=1)


def test_odd_size_is_padded_top_right_and_cropped_back_exactly(rng_pair):
    left, right = rng_pair
    result = Predictor(EchoNet(), device="cpu", swap_check=False).predict(left, right)
    disparity, confidence = echo_expected(left)
    assert result.disparity.shape == (75, 131) and result.disparity.dtype == np.float32
    np.testing.assert_allclose(result.disparity, disparity, atol=1e-6)
    np.testing.assert_allclose(result.confidence, confidence, atol=1e-6)


def test_batch_keeps_order_and_mixed_sizes(rng_pair):
    left, right = rng_pair
    other = np.ascontiguousarray(left[:40, :100])
    predictor = Predictor(EchoNet(), device="cpu", swap_check=False)
    results = predictor.predict_batch([left, left[::-1].copy(), other], [right, right, other])
    for image, result in zip([left, left[::-1].copy(), other], results):
        np.testing.assert_allclose(result.disparity, echo_expected(image)[0], atol=1e-6)


def test_tiled_mode_stitches_strips_without_seams():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (600, 144, 3), dtype=np.uint8)
    predictor = Predictor(EchoNet(), device="cpu", mode="tiled", max_memory_gb=0.01, swap_check=False)
    assert predictor._strip_height(predictor.network(), 144, 1) == 256, "a tiny budget gives the network's minimum strip"
    result = predictor.predict(image, image)
    np.testing.assert_allclose(result.disparity, echo_expected(image)[0], atol=1e-5)


def test_auto_mode_tiles_only_when_the_estimate_exceeds_the_budget():
    predictor = Predictor(EchoNet(), device="cpu", max_memory_gb=8.0, swap_check=False)
    assert predictor.plan(544, 960) == "full"
    assert predictor.plan(1988, 2880) == "full"  # echo max_disp 32: small volume
    assert predictor.plan(1988, 2880, max_disp=192) == "tiled"
    assert predictor.model.max_disp == 32, "a search range is passed, never written into the network"


@pytest.mark.parametrize("optimize", [True, False])
@pytest.mark.parametrize("width, padded_width", [(2880, 2880), (100, 256)])  # 100 runs padded to the minimum 256
def test_strip_height_is_the_tallest_that_the_memory_estimate_allows(optimize, width, padded_width):
    predictor = Predictor(EchoNet(), device="cpu", max_memory_gb=8.0, swap_check=False, optimize=optimize, max_disp=192)
    network = predictor.network()
    assert network.input_spec.padded_size(256, width)[1] == padded_width
    rows = predictor._strip_height(network, width, 1)
    assert estimate_memory_gb(network, rows, padded_width, 192, optimized=optimize) <= 8.0
    assert estimate_memory_gb(network, rows + 16, padded_width, 192, optimized=optimize) > 8.0
    # the optimised network needs less memory per pixel, so it plans taller strips (fewer seams)
    assert estimate_memory_gb(network, 544, 960, 192, optimized=True) < estimate_memory_gb(network, 544, 960, 192, optimized=False)


def test_an_aggregation_without_the_volume_handoff_keeps_the_volume_in_the_optimised_estimate(monkeypatch):
    """The optimised network frees the cost volume early only through an aggregation that takes the
    handoff; for any other (a researcher's head), the volume lives through the whole head, so the
    optimised estimate must count it exactly as the plain one does."""
    light = build_network(model_config("ea_light"))
    assert light.aggregation.takes_volume_handoff
    shape = (544, 960, 192)
    volume = light.cost_volume.inference_bytes(InferenceShape(1, *shape, light.stride), False)
    assert volume > 0
    handed = light.inference_bytes(*shape, optimized=True)
    monkeypatch.setattr(light.aggregation, "takes_volume_handoff", False)  # as a head that does not declare it
    kept = light.inference_bytes(*shape, optimized=True)
    assert kept == pytest.approx(handed + volume)


def test_each_network_states_its_input_size_and_memory_from_its_components():
    """PSMNet's components reproduce the measured stacked-hourglass figures (12 B optimised, 21 B plain per
    padded pixel x level with headroom); the light network's features take 16 px, and its 1/8 volume of 16
    channels needs far less, so the predictor pads it less and plans it larger."""
    psmnet = PSMNet(192)
    per_level = {optimized: (estimate_memory_gb(psmnet, 544, 960, 192, optimized=optimized) * 1e9 - 0.5e9)
                 / (544 * 960 * 192) for optimized in (True, False)}
    assert per_level[True] == pytest.approx(12.0) and per_level[False] == pytest.approx(21.0)
    assert psmnet.input_spec == InputSpec(16, 256)
    light = build_network(model_config("ea_light"))
    assert light.input_spec == InputSpec(16, 16)
    assert light.inference_bytes(544, 960, 192) < psmnet.inference_bytes(544, 960, 192) / 10
    predictor = Predictor(light, device="cpu", swap_check=False, optimize=False)
    assert predictor.plan(1988, 2880, max_disp=192) == "full"
    assert Predictor(psmnet, device="cpu", swap_check=False, optimize=False).plan(1988, 2880) == "tiled"
    rng = np.random.default_rng(3)
    left = rng.integers(0, 256, (40, 72, 3), dtype=np.uint8)
    padded = []
    light.register_forward_pre_hook(lambda module, inputs: padded.append(tuple(inputs[0].shape[-2:])))
    predictor.predict(left, np.roll(left, -2, axis=1))
    assert padded == [(48, 80)], "padded to the network's own spec, not PSMNet's 256"


def test_downscale_mode_scales_disparity_by_the_width_ratio():
    grey = np.full((96, 160, 3), 200, np.uint8)
    predictor = Predictor(EchoNet(), device="cpu", mode="downscale", downscale=2.0, swap_check=False)
    result = predictor.predict(grey, grey)
    assert result.disparity.shape == (96, 160)
    np.testing.assert_allclose(result.disparity, echo_expected(grey)[0] * 2.0, rtol=1e-5)


class RecordingEchoNet(EchoNet):
    """EchoNet that records the (height, width, max_disp) of every call, shared by its range copies."""

    def __init__(self, max_disp: int = 32, calls: list | None = None) -> None:
        super().__init__(max_disp)
        self.calls = [] if calls is None else calls

    def with_max_disp(self, max_disp: int) -> "RecordingEchoNet":
        return RecordingEchoNet(max_disp, self.calls)

    def forward(self, left, right, return_confidence=False):
        self.calls.append((*left.shape[-2:], self.max_disp))
        return super().forward(left, right, return_confidence)


def test_a_pair_narrower_than_min_width_runs_enlarged_and_comes_back_at_its_size():
    """min_width: a 160-wide pair runs at 240 (x1.5; padded to the echo net's 256), at most x2, and the
    result is brought back to 96x160 with disparities scaled by the width ratio; the network's own range
    is searched at the enlarged size, a range given is scaled to cover the same input pixels; wide pairs
    run as given; the route records the enlargement."""
    grey = np.full((96, 160, 3), 200, np.uint8)
    net = RecordingEchoNet()
    result = Predictor(net, device="cpu", swap_check=False, optimize=False, min_width=240).predict(grey, grey)
    assert net.calls == [(256, 256, 32)]  # 240x144 padded to the net's minimum
    assert result.disparity.shape == result.confidence.shape == (96, 160)
    np.testing.assert_allclose(result.disparity, echo_expected(grey)[0] * 160 / 240, rtol=1e-5)
    predictor = Predictor(net, device="cpu", swap_check=False, optimize=False, min_width=240)
    predictor.predict(grey, grey, max_disp=32)
    assert net.calls[-1][2] == 48  # 32 input pixels at x1.5
    assert Predictor(net, device="cpu", swap_check=False, optimize=False, min_width=240, max_disp=32).covered_range(160) == 32
    assert predictor.covered_range(160) == 32 * 160 // 240 and predictor.covered_range(240) == 32
    assert predictor.route(96, 160)["enlarged"] == {"to": [240, 144], "from": [160, 96], "min_width": 240}
    assert "enlarged" not in predictor.route(96, 240)
    Predictor(net, device="cpu", swap_check=False, optimize=False, min_width=1000).predict(grey, grey)
    assert net.calls[-1][:2] == (256, 320)  # at most x2: 320x192, padded
    wide = np.full((96, 272, 3), 200, np.uint8)
    Predictor(net, device="cpu", swap_check=False, optimize=False, min_width=240).predict(wide, wide)
    assert net.calls[-1] == (256, 272, 32)
    downscaled = Predictor(net, device="cpu", swap_check=False, optimize=False, min_width=240, mode="downscale")
    assert downscaled.predict(grey, grey).disparity.shape == (96, 160) and "enlarged" not in downscaled.route(96, 160)
    assert net.calls[-1] == (256, 256, 32)  # 80x48, padded: mode=downscale asks for a smaller run, never enlarged
    for bad in (-1, 2.5, True, "768"):
        with pytest.raises(ValueError, match="min_width must be a whole number of pixels >= 0"):
            Predictor(net, device="cpu", min_width=bad)


@pytest.mark.parametrize(
    "left_shape, right_shape, message",
    [
        ((64, 96, 3), (64, 80, 3), "equal sizes"),
        ((20, 96, 3), (20, 96, 3), "too small"),
        ((64, 96, 2), (64, 96, 2), "shape"),
    ],
)
def test_bad_inputs_raise_errors_naming_the_files(left_shape, right_shape, message):
    predictor = Predictor(EchoNet(), device="cpu", swap_check=False)
    with pytest.raises(InputError, match=message) as error:
        predictor.predict(np.zeros(left_shape, np.uint8), np.zeros(right_shape, np.uint8), names=("a.png", "b.png"))
    assert "a.png" in str(error.value)
    with pytest.raises(InputError, match="uint8"):
        predictor.predict(np.zeros((64, 96, 3), np.float32), np.zeros((64, 96, 3), np.float32))


def test_emulated_half_precision_on_cpu_is_warned_about():
    emulated = not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Predictor(EchoNet(), device="cpu", precision="bf16")
    assert any("no native bf16" in str(w.message) for w in caught) == emulated


def test_options_are_validated():
    with pytest.raises(ValueError, match="precision"):
        Predictor(EchoNet(), device="cpu", precision="fp8")
    with pytest.raises(ValueError, match="multiple of 16"):
        Predictor(EchoNet(), device="cpu", max_disp=40)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        Predictor.from_checkpoint("missing.ckpt")


def _real_pair(folder: str, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    folder = REAL / folder
    if not folder.is_dir():
        pytest.skip(f"real data not available at {folder}")
    return read_image(folder / names[0]), read_image(folder / names[1])


@pytest.mark.parametrize("folder, names", [("middlebury2003/teddy", ("im2.ppm", "im6.ppm")),
                                           ("middlebury2001/tsukuba", ("scene1.row3.col3.ppm", "scene1.row3.col4.ppm"))])
def test_swapped_real_pair_is_detected_and_correct_one_is_not(folder, names):
    left, right = _real_pair(folder, names)
    assert swap_score(left, right, max_disp=64) < 1.0 < SWAP_RATIO
    assert swap_score(right, left, max_disp=64) > SWAP_RATIO
    predictor = Predictor(EchoNet(), device="cpu", max_disp=64)
    with pytest.warns(SwappedPairWarning, match="swapped"):
        predictor.predict(right, left, names=("im6.png", "im2.png"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", SwappedPairWarning)
        predictor.predict(left, right)


def test_real_network_checkpoint_on_odd_sized_pair(tmp_path, rng_pair):
    """Our checkpoint format end to end (the authors' format runs in test_infer_cli)."""
    left, right = rng_pair
    predictor = Predictor.from_checkpoint(write_our_checkpoint(tmp_path / "ours.ckpt"), swap_check=False)
    assert predictor.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    result = predictor.predict(left, right)
    assert result.disparity.shape == result.confidence.shape == (75, 131)
    assert np.isfinite(result.disparity).all()
    assert 0 <= result.disparity.min() and result.disparity.max() <= 32
    assert 0 <= result.confidence.min() and result.confidence.max() <= 1


def test_optimized_predictor_gives_the_plain_networks_disparity(tmp_path, rng_pair):
    """The default (BN-folded, channels-last, banded) path against optimize=False on one checkpoint."""
    left, right = rng_pair
    checkpoint = write_our_checkpoint(tmp_path / "ours.ckpt")
    fast = Predictor.from_checkpoint(checkpoint, swap_check=False).predict(left, right)
    plain = Predictor.from_checkpoint(checkpoint, swap_check=False, optimize=False).predict(left, right)
    assert plain.disparity.std() > 0.1, "the comparison needs disparities that vary"
    np.testing.assert_allclose(fast.disparity, plain.disparity, rtol=0, atol=1e-3)


def test_another_search_range_shares_the_weights_and_leaves_the_network_alone():
    """``with_max_disp`` is how a range is passed: the same function as a network built with it."""
    torch.manual_seed(0)
    network = PSMNet(16, "basic").eval()
    wider = network.with_max_disp(32)
    assert (network.max_disp, network.config["max_disp"], wider.max_disp, wider.config["max_disp"]) == (16, 16, 32, 32)
    assert all(a is b for a, b in zip(network.parameters(), wider.parameters()))
    built = PSMNet(32, "basic").eval()
    built.load_state_dict(network.state_dict())
    left, right = torch.randn(1, 3, 256, 256), torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(wider(left, right), built(left, right))
