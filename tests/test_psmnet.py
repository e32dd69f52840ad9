"""PSMNet / EA-PSMNet: the authors' network where it claims to be, attention placements, contracts."""

from __future__ import annotations

import re
from pathlib import Path

import hydra
import pytest
import torch
import torch.nn.functional as F
from conftest import MODEL_CONFIGS
from psmnet_reference import (
    random_authors_state,
    reference_cost_volume,
    reference_psmnet_eval,
    reference_regression,
    reference_stackhourglass_costs,
    save_authors_checkpoint,
)

from stereo.config import CONFIG_DIR
from stereo.models import EfficientAttention, PSMNet, load_psmnet_checkpoint
from stereo.models.attention import _AttentionBlock
from stereo.models.build import build_network, build_training_network, model_config
from stereo.models.cost_volumes.concatenation import concatenation_volume
from stereo.models.regression import regress_disparity

# The authors' two networks (conf/model/psmnet*.yaml, checked against their code below) and their
# parameter counts.
AUTHORS_PARAMETERS = {"psmnet": 5_224_768, "psmnet_basic": 3_672_896}
COMPONENTS = ("features", "cost_volume", "aggregation", "regression", "refinement")


def _psmnet_head(name: str) -> str | None:
    """Which of the authors' networks a model config is built of (the same components; attention and
    max_disp aside), or None: found from the file's content, so a new model file needs no edit here."""
    config = model_config(name)
    return next((authors for authors, components in _AUTHORS_COMPONENTS.items()
                 if all(config.get(k) == components.get(k) for k in COMPONENTS)), None)


_AUTHORS_COMPONENTS = {name: model_config(name) for name in AUTHORS_PARAMETERS}
PSMNET_CONFIGS = [name for name in MODEL_CONFIGS if _psmnet_head(name)]


def _count(module: torch.nn.Module, skip_attention: bool = False) -> int:
    skip = {id(p) for m in module.modules() if isinstance(m, _AttentionBlock) for p in m.parameters()}
    return sum(p.numel() for p in module.parameters() if not (skip_attention and id(p) in skip))


@pytest.fixture(scope="module")
def stereo_pair():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, 256, 256, generator=gen), torch.randn(1, 3, 256, 256, generator=gen)


def test_parameter_counts_match_the_authors_network():
    assert _count(PSMNet(192, "stackhourglass")) == 5_224_768
    assert _count(PSMNet(192, "basic")) == 3_672_896
    full = PSMNet(192, attention={"feature": "efficient", "volume": "efficient", "hourglass": "dot_product"})
    assert _count(full, skip_attention=True) == 5_224_768
    assert _count(full) > 5_224_768


def test_authors_init_is_the_default():
    model = PSMNet(192, attention={"feature": "efficient"})
    conv = model.aggregation.dres0[0][0]  # Conv3d 64→32, 3×3×3: std √(2/(27·32))
    assert abs(conv.weight.std().item() - (2 / (27 * 32)) ** 0.5) < 0.05 * (2 / (27 * 32)) ** 0.5
    bn = model.feature_extraction.firstconv[0][1]
    assert torch.equal(bn.weight, torch.ones(32)) and torch.equal(bn.bias, torch.zeros(32))
    # attention blocks keep their own init (PyTorch default projections, zeroed reprojection)
    block = model.feature_extraction.inserted.layer4
    assert torch.count_nonzero(block.reprojection.weight) == 0
    assert block.queries.weight.abs().max() <= 1 / 128 ** 0.5


def test_vectorised_cost_volume_equals_authors_loop_values_and_gradients():
    gen = torch.Generator().manual_seed(1)
    left = torch.randn(2, 5, 6, 20, generator=gen, requires_grad=True)
    right = torch.randn(2, 5, 6, 20, generator=gen, requires_grad=True)
    ours = concatenation_volume(left, right, 12)
    ref = reference_cost_volume(left, right, 12)
    assert torch.equal(ours, ref)
    weights = torch.randn(ref.shape, generator=gen)
    grads_ours = torch.autograd.grad((ours * weights).sum(), (left, right))
    grads_ref = torch.autograd.grad((ref * weights).sum(), (left, right))
    for a, b in zip(grads_ours, grads_ref):
        torch.testing.assert_close(a, b)



@pytest.mark.parametrize("levels,channels_last", [(4, False), (4, True), (9, False)])  # 9 > width: levels ≥ W
def test_cost_volume_backward_passes_gradcheck(levels, channels_last):
    """The volume's backward (autograd of the out-of-place construction) against numerical derivatives."""
    gen = torch.Generator().manual_seed(3)
    left = torch.randn(2, 3, 4, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    right = torch.randn(2, 3, 4, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    volume = concatenation_volume(left, right, levels, channels_last)
    assert volume.is_contiguous(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
    assert torch.autograd.gradcheck(lambda a, b: concatenation_volume(a, b, levels, channels_last), (left, right))

@pytest.mark.parametrize("train", [False, True])
def test_stacked_hourglass_wiring_matches_authors(train):
    torch.manual_seed(2)
    model = PSMNet(64).train(train)
    volume = torch.randn(2, 64, 8, 8, 12)
    ours = model.aggregation(volume)
    ref = reference_stackhourglass_costs(model.aggregation, volume)
    assert len(ours) == 3
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_basic_aggregation_matches_authors():
    torch.manual_seed(3)
    agg = PSMNet(64, "basic").eval().aggregation
    volume = torch.randn(1, 64, 4, 8, 8)
    cost = agg.dres0(volume)
    cost = agg.dres1(cost) + cost
    cost = agg.dres2(cost) + cost
    cost = agg.dres3(cost) + cost
    cost = agg.dres4(cost) + cost
    (ours,) = agg(volume)
    torch.testing.assert_close(ours, agg.classify(cost))


def test_regression_matches_authors_and_confidence_reflects_the_distribution():
    gen = torch.Generator().manual_seed(4)
    cost = torch.randn(2, 1, 8, 4, 6, generator=gen) * 3
    disparity, confidence = regress_disparity(cost, 32, 16, 24, return_confidence=True)
    torch.testing.assert_close(disparity, reference_regression(cost, 32, 16, 24))
    assert disparity.shape == confidence.shape == (2, 16, 24)
    assert (confidence >= 0).all() and (confidence <= 1).all()
    # a flat cost is uniform over 32 bins: 5 bins around the estimate hold 5/32 of the mass
    _, flat_conf = regress_disparity(torch.zeros(1, 1, 8, 4, 4), 32, 16, 16, return_confidence=True)
    torch.testing.assert_close(flat_conf, torch.full((1, 16, 16), 5 / 32))
    # a sharp single peak (after upsampling) holds nearly all the mass
    peaked = torch.full((1, 1, 8, 4, 4), -50.0)
    peaked[:, :, 3] = 50.0
    peak_disp, peak_conf = regress_disparity(peaked, 32, 16, 16, return_confidence=True)
    assert (peak_conf > 0.99).all()
    # level 3 of 8 sits at full-resolution coordinate 3·4 + 1.5 (align_corners=False): bins 13 and 14 tie
    torch.testing.assert_close(peak_disp, torch.full((1, 16, 16), 13.5))


def test_eval_forward_with_authors_weights_matches_authors_network(tmp_path, stereo_pair):
    """Authors'-format weights (random, non-trivial BN statistics) into an EA-PSMNet: the attention
    blocks become the identity and the output equals the authors' forward pass."""
    path = save_authors_checkpoint(tmp_path / "authors.tar", random_authors_state(seed=5))
    model = PSMNet(32, attention={"feature": {"zero_init": False}, "volume": {"zero_init": False}})
    load_psmnet_checkpoint(model, path).eval()
    left, right = stereo_pair
    with torch.no_grad():
        disparity, confidence = model(left, right, return_confidence=True)
        expected = reference_psmnet_eval(model, left, right)
    assert disparity.shape == confidence.shape == (1, 256, 256)
    torch.testing.assert_close(disparity, expected, rtol=1e-4, atol=1e-3)
    assert (confidence >= 0).all() and (confidence <= 1).all()
    assert disparity.std() > 0.1  # a real, non-constant disparity map was compared


@pytest.mark.slow
def test_train_mode_returns_three_disparities_and_gradients_reach_every_parameter(stereo_pair):
    torch.manual_seed(6)
    spec = {"zero_init": False}
    model = PSMNet(16, attention={"feature": spec, "volume": spec, "hourglass": spec}).train()
    left, right = (torch.cat([t, t.flip(-1)]) for t in stereo_pair)  # batch 2: BN needs 2+ values
    outputs = model(left, right)
    assert isinstance(outputs, tuple) and len(outputs) == 3
    assert all(o.shape == (2, 256, 256) for o in outputs)
    gt = torch.rand(2, 256, 256) * 15
    loss = sum(w * F.smooth_l1_loss(o, gt) for w, o in zip((0.5, 0.7, 1.0), outputs))
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, no_grad
    assert sum(isinstance(m, EfficientAttention) for m in model.modules()) == 5


def test_basic_network_returns_a_one_tuple_in_training(stereo_pair):
    model = PSMNet(16, "basic", attention={"volume": "efficient"}).train()
    left, right = stereo_pair
    with pytest.raises(ValueError, match="at least 256x512 or a batch of 2"):
        model(left, right)  # batch 1 at 256x256: the SPP's BatchNorm would see one value per channel
    with torch.no_grad():
        outputs = model(torch.cat([left, right]), torch.cat([right, left]))
    assert isinstance(outputs, tuple) and len(outputs) == 1 and outputs[0].shape == (2, 256, 256)
    assert ((outputs[0] >= 0) & (outputs[0] <= 15)).all()


def test_aggregation_and_regression_under_bf16_autocast_are_finite_and_fp32():
    """bf16 convolutions, fp32 attention cores and soft-argmax (the full network in bf16 is a GPU job:
    CPUs without bf16 units emulate it ~50x slower)."""
    torch.manual_seed(7)
    spec = {"zero_init": False}
    model = PSMNet(32, attention={"volume": spec, "hourglass": spec}).eval()
    volume = torch.randn(1, 64, 8, 16, 16) * 10
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        costs = model.aggregation(volume)
        disparity, confidence = regress_disparity(costs[-1], 32, 64, 64, return_confidence=True)
    with torch.no_grad():
        reference = regress_disparity(model.aggregation(volume)[-1], 32, 64, 64)
    assert costs[-1].dtype == torch.bfloat16  # autocast really was active in the convolutions
    assert disparity.dtype == confidence.dtype == torch.float32
    assert torch.isfinite(disparity).all() and torch.isfinite(confidence).all()
    assert (disparity - reference).abs().mean() < 1.0


@pytest.mark.parametrize(
    "size, message",
    [((250, 256), "multiples of 16.*Padder"), ((256, 264), "multiples of 16.*Padder"), ((240, 512), "at least 256")],
)
def test_input_size_errors_tell_the_caller_to_pad(size, message):
    model = PSMNet(32)
    x = torch.zeros(1, 3, *size)
    with pytest.raises(ValueError, match=message):
        model(x, x)


def test_constructor_and_call_errors():
    with pytest.raises(ValueError, match="max_disp must be a positive multiple of 16"):
        PSMNet(100)
    with pytest.raises(ValueError, match="aggregation"):
        PSMNet(32, "hourglass")
    with pytest.raises(ValueError, match="no insertion point 'aggregation.dres2.bottleneck'"):
        PSMNet(32, "basic", attention={"hourglass": "efficient"})
    with pytest.raises(ValueError, match="unknown attention placement"):
        PSMNet(32, attention={"cost": "efficient"})
    with pytest.raises(ValueError, match="kind must be one of"):
        PSMNet(32, attention={"volume": "linear"})
    with pytest.raises(ValueError, match="unknown settings"):
        PSMNet(32, attention={"volume": {"channels": 8}})
    model = PSMNet(32)
    with pytest.raises(ValueError, match="same shape"):
        model(torch.zeros(1, 3, 256, 256), torch.zeros(1, 3, 256, 272))
    with pytest.raises(ValueError, match="only available in eval mode"):
        model.train()(torch.zeros(1, 3, 256, 256), torch.zeros(1, 3, 256, 256), return_confidence=True)


@pytest.mark.parametrize("value", [0, -16, 8, 100, 64.0, True, "64"])
def test_every_search_range_is_refused_by_the_one_rule_with_one_message(value):
    """max_disp is checked by stereo.models.network.check_max_disp wherever it enters: the network (built
    and asked for another range), the predictor and StereoSGBM give the same message."""
    from stereo.evaluation.sgbm import SGBMMatcher
    from stereo.inference.predictor import Predictor

    message = rf"^max_disp must be a positive multiple of 16, got {re.escape(repr(value))}$"
    model = PSMNet(16, "basic")
    for enter in (lambda: PSMNet(value, "basic"), lambda: model.with_max_disp(value),
                  lambda: Predictor(model, device="cpu", max_disp=value, optimize=False), lambda: SGBMMatcher(value)):
        with pytest.raises(ValueError, match=message):
            enter()
    assert model.max_disp == 16


@pytest.mark.parametrize("name", PSMNET_CONFIGS)
def test_every_psmnet_config_has_the_authors_parameters_and_its_attention_where_it_says(name):
    """Every config built of PSMNet's components: the authors' parameter count for its head, and one
    attention block in the state dict at each insertion point its ``attention`` names."""
    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = hydra.compose("train", overrides=[f"model={name}"])
    model = build_network(cfg.model)
    assert _count(model, skip_attention=True) == AUTHORS_PARAMETERS[_psmnet_head(name)]
    points = [point for spec in cfg.model.attention for point in ([spec.at] if isinstance(spec.at, str) else spec.at)]
    blocks = {module for module, m in model.named_modules() if isinstance(m, _AttentionBlock)}
    assert blocks == {".inserted.".join(point.rsplit(".", 1)) for point in points}
    assert len(points) == len(blocks)


EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_model_config_builds_only_torch_nn_convolutions(name):
    """Every model config (each names its own component classes): plain torch.nn convolutions, nothing
    subclassed. Built only: tests/test_train.py trains every model config."""
    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = hydra.compose("train", overrides=[f"model={name}", "model.max_disp=16"])
    model = build_network(cfg.model)
    convs = {type(m) for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)}
    assert {torch.nn.Conv2d, torch.nn.Conv3d} <= convs
    assert all(t.__module__ == "torch.nn.modules.conv" for t in convs), convs


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_trains_its_plain_network_switched_only_by_the_backend_it_names(experiment):
    """What a recipe trains (build_training_network): its model config's torch.nn network, with only the
    layers its ``model_backend`` switches (plain: none; cpu: 2-D/3-D convolutions, each a subclass of
    the plain layer from stereo.accel.cpu); same state-dict keys; not channels-last (the known 8.6x
    case: CPU channels-last BatchNorm3d in train mode)."""
    with hydra.initialize_config_dir(version_base="1.3", config_dir=CONFIG_DIR):
        cfg = hydra.compose("train", overrides=[f"experiment={experiment}", "model.max_disp=16"])
    plain, trained = build_network(cfg.model), build_training_network(cfg)
    assert all(type(m).__module__ == "torch.nn.modules.conv"
               for m in plain.modules() if isinstance(m, torch.nn.modules.conv._ConvNd))
    kinds = {name: type(m) for name, m in plain.named_modules()}
    switched = {name: type(m) for name, m in trained.named_modules() if type(m) is not kinds[name]}
    assert list(trained.state_dict()) == list(plain.state_dict())
    assert not trained.channels_last and all(p.is_contiguous() for p in trained.parameters())
    if cfg.model_backend == "plain":
        assert not switched, switched
    else:
        assert switched and all(t.__module__ == f"stereo.accel.{cfg.model_backend}" and issubclass(t, kinds[name])
                                for name, t in switched.items()), switched
        assert not any(type(m) in (torch.nn.Conv2d, torch.nn.Conv3d) for m in trained.modules())


def test_training_graph_is_plain_autograd(stereo_pair):
    """No written-out backward (custom autograd.Function) anywhere in a default training step's graph."""
    model = PSMNet(max_disp=32, attention={"feature": "efficient", "volume": "efficient"}).train()
    left, right = (torch.cat([t, t.flip(-1)]) for t in stereo_pair)  # batch 2: train-mode BN
    nodes, stack, seen = [], [sum(o.mean() for o in model(left, right)).grad_fn], set()
    while stack:
        node = stack.pop()
        if node is not None and id(node) not in seen:
            seen.add(id(node))
            nodes.append(node)
            stack.extend(next_fn for next_fn, _ in node.next_functions)
    assert len(nodes) > 100
    custom = {type(n).__name__ for n in nodes if isinstance(n, torch.autograd.function.BackwardCFunction)}
    assert not custom, custom
