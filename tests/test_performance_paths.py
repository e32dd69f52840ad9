"""Every optimised evaluation path computes the plain path's function (issue 6). Each is an
explicit setting of the built network (``optimize_for_inference`` sets them), never chosen by
autograd state or tracing.

Banded regression: bit-for-bit. BatchNorm folding and channels-last kernels: the same function (run
in float64 they agree with the plain network to float64 rounding), float32 rounding aside. Activation checkpointing: same
outputs, gradients and BatchNorm running statistics as storing activations. Interpolation matrices:
F.interpolate's function, compared in float64.
"""

from __future__ import annotations

import weakref

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import compose

from stereo.models import EfficientAttention, PSMNet, fold_batchnorm, optimize_for_inference
from stereo.models.attention import _AttentionBlock
from stereo.models.interpolation import interpolation_matrix, upsample_bilinear, upsample_trilinear
from stereo.models.regression import regress_disparity
from stereo.models.build import architecture, build_network, build_training_network, model_config

SIZE = 256  # PSMNet's SPP needs H, W ≥ 256
MAX_DISP = 64
EA_ATTENTION = {"feature": "efficient", "volume": "efficient"}


def _randomised(model: PSMNet, seed: int = 0) -> PSMNet:
    """Non-trivial BN running statistics and affine terms, attention that is not the identity,
    so that folding or re-laying-out any of them wrongly would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(1 + torch.rand(m.running_var.shape, generator=gen))
                m.weight.copy_(0.5 + 0.5 * torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, _AttentionBlock):
                m.reprojection.weight.copy_(0.05 * torch.randn(m.reprojection.weight.shape, generator=gen))
        # Soft (not one-hot) disparity distributions: with random weights the costs are so large that
        # near-ties between bins flip on rounding noise, which would test tie-breaking, not the paths.
        for m in model.aggregation.modules():
            if isinstance(m, torch.nn.Conv3d) and m.out_channels == 1:
                m.weight.mul_(0.1)
    return model


def _pair(batch: int = 1, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, SIZE, SIZE, generator=gen), torch.randn(batch, 3, SIZE, SIZE, generator=gen))


@pytest.mark.parametrize("chunk_rows", [1, 3, 5, 16])
def test_banded_regression_is_bit_identical_to_the_full_volume(chunk_rows):
    gen = torch.Generator().manual_seed(2)
    cost = 4 * torch.randn(2, 1, 12, 20, 24, generator=gen)  # 48 × 80 × 96 at full resolution
    plain = regress_disparity(cost, 48, 80, 96, return_confidence=True)
    banded = regress_disparity(cost, 48, 80, 96, return_confidence=True, chunk_rows=chunk_rows)
    assert torch.equal(plain[0], banded[0]) and torch.equal(plain[1], banded[1])
    assert torch.equal(regress_disparity(cost, 48, 80, 96, chunk_rows=chunk_rows), plain[0])


def test_banded_regression_is_refused_where_bands_would_not_be_exact_or_gradients_are_recorded():
    cost = torch.randn(1, 1, 12, 20, 24, generator=torch.Generator().manual_seed(3))
    with pytest.raises(ValueError, match="align_corners=False"):
        regress_disparity(cost, 48, 80, 96, align_corners=True, chunk_rows=2)
    with pytest.raises(ValueError, match="chunk_rows"):
        regress_disparity(cost, 48, 80, 96, chunk_rows=0)
    with pytest.raises(ValueError, match="for inference"):
        regress_disparity(cost.requires_grad_(), 48, 80, 96, chunk_rows=2)
    with pytest.raises(ValueError, match="align_corners=False"):
        PSMNet(MAX_DISP, align_corners=True).regression_chunk_rows = 2


def test_fold_batchnorm_folds_every_batchnorm_and_refuses_train_mode():
    model = PSMNet(MAX_DISP, attention=EA_ATTENTION)
    batchnorms = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorm(model)
    assert fold_batchnorm(model.eval()) == batchnorms
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.slow
def test_optimized_inference_equals_plain_inference():
    torch.manual_seed(0)  # the convolutions' init: the same network whichever tests ran before
    model = _randomised(PSMNet(MAX_DISP, attention=EA_ATTENTION)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)
    fast.regression_chunk_rows = 5  # bands that do not divide the 16 quarter-resolution rows
    fast64 = optimize_for_inference(copy.deepcopy(model).double())
    fast64.regression_chunk_rows = 5
    left, right = _pair()
    with torch.no_grad():
        disparity, confidence = model(left, right, return_confidence=True)
        exact = copy.deepcopy(model).double()(left.double(), right.double())
    with torch.inference_mode():
        fast_disparity, fast_confidence = fast(left, right, return_confidence=True)
        fast_exact = fast64(left.double(), right.double())
    assert disparity.std() > 1.0, "the comparison needs disparities that vary"
    assert exact.dtype == fast_exact.dtype == torch.float64
    # The same function: run in float64, folding, layouts, in-place volume, streaming attention and
    # banded regression agree with the plain network to float64 rounding. That rounding is the
    # float32 network's error scaled by the unit roundoffs (2^-53 / 2^-24 = 2^-29: ~1e-13 px here);
    # a fold or layout that computes another function moves disparities by 1e-3 px or more (one BN
    # variance off by 1 % moves them 0.1 px). 1e-9 px sits four orders of magnitude from either.
    float32_rounding = (disparity.double() - exact).abs().max()
    assert 0 < float32_rounding < 1e-2
    assert (fast_exact - exact).abs().max() <= 1e-9
    # In float32 the optimised kernels round differently from the plain ones, as closely as float32
    # allows: within the plain network's own distance from float64 many times over (a wrong fold
    # gives 0.1 px, ~1000x that distance).
    assert (fast_disparity.double() - exact).abs().max() <= 10 * float32_rounding
    # confidence sums the bins around round(d̂): it may jump where d̂ sits on a .5 rounding boundary
    away_from_ties = ((disparity - disparity.floor()) - 0.5).abs() > 0.01
    assert torch.allclose(fast_confidence[away_from_ties], confidence[away_from_ties], rtol=0, atol=1e-4)
    # the original model is untouched: still plain, BN intact, same weights
    assert not model.channels_last and model.regression_chunk_rows is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_channels_last_lays_out_weights_in_place_and_reverts():
    model = PSMNet(MAX_DISP, attention=EA_ATTENTION)
    parameters = list(model.parameters())
    optimizer = torch.optim.Adam(parameters)
    model.channels_last = True
    layouts = {4: torch.channels_last, 5: torch.channels_last_3d}
    convs = [p for p in parameters if p.dim() in layouts]
    assert any(p.dim() == 4 for p in convs) and any(p.dim() == 5 for p in convs)
    assert all(p.is_contiguous(memory_format=layouts[p.dim()]) for p in convs)
    assert all(not p.is_contiguous() for p in convs if p.shape[1] > 1 and p.shape[2:].numel() > 1)  # not ambiguous
    assert [id(p) for p in model.parameters()] == [id(p) for p in optimizer.param_groups[0]["params"]]
    model.channels_last = False
    assert all(p.is_contiguous() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("aggregation,features", [(True, False), (False, True), (True, True)])
def test_checkpointing_gives_identical_outputs_gradients_and_running_statistics(aggregation, features):
    plain = _randomised(PSMNet(MAX_DISP, attention=EA_ATTENTION)).train()
    checkpointed = PSMNet(MAX_DISP, attention=EA_ATTENTION).train()
    checkpointed.checkpoint_aggregation, checkpointed.checkpoint_features = aggregation, features
    checkpointed.load_state_dict(plain.state_dict())
    left, right = _pair(batch=2)
    outputs = [m(left, right) for m in (plain, checkpointed)]
    for a, b in zip(*outputs):
        assert torch.equal(a, b)
    for outs in outputs:
        sum(o.abs().mean() for o in outs).backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7), name
    # recomputation in backward must not apply BatchNorm's momentum update a second time
    for (name, a), b in zip(plain.state_dict().items(), checkpointed.state_dict().values()):
        assert torch.equal(a, b), name


def test_runtime_options_are_training_keys_not_architecture():
    """Activation checkpointing and the backend come from the run config and reach the network;
    the model config (saved with checkpoints) holds the architecture only."""
    cfg = compose("train", ["model=ea_psmnet", f"model.max_disp={MAX_DISP}", "activation_checkpointing.aggregation=true",
                            "activation_checkpointing.features=true"])
    assert set(architecture(cfg.model)) == {"_target_", "max_disp", "features", "cost_volume", "aggregation",
                                            "regression", "attention"}
    model = build_training_network(cfg)
    assert model.checkpoint_aggregation and model.checkpoint_features and not model.channels_last
    with pytest.raises(ValueError, match="regression_chunk_rows"):
        model.regression_chunk_rows = 0


@pytest.mark.parametrize("heads,normalization", [(1, "softmax"), (2, "softmax"), (2, "scaling")])
@pytest.mark.parametrize("channels_last", [False, True, "permuted"])
@pytest.mark.parametrize("batch", [1, 2])  # batch 1 writes the products straight into the output
def test_streaming_efficient_attention_equals_the_plain_block(heads, normalization, channels_last, batch):
    """``chunk_positions`` (set explicitly; only without autograd) takes the two-pass chunked path; it
    must compute the same function (chunks that do not divide the positions, several heads, both
    layouts, a non-identity block)."""
    torch.manual_seed(3)
    block = EfficientAttention(32, 16, 32, heads=heads, normalization=normalization)
    torch.nn.init.normal_(block.reprojection.weight, 0.0, 0.2)
    x = 3 * torch.randn(batch, 32, 5, 9, 23)
    if channels_last == "permuted":  # neither layout: the output must still be written, not a copy
        x = x.permute(0, 1, 4, 3, 2).contiguous().permute(0, 1, 4, 3, 2)
    elif channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    plain = block(x)  # chunk_positions None (the default): the plain path
    assert plain.requires_grad
    block.chunk_positions = 97  # 2 × 5 × 9 × 23 = 2,070 positions: 22 chunks, the last one partial
    with pytest.raises(ValueError, match="for inference"):
        block(x)  # never silently the plain path, never a streaming pass that autograd cannot follow
    with torch.inference_mode():
        streamed = block(x)
    torch.testing.assert_close(streamed, plain.detach(), rtol=1e-5, atol=1e-5)
    assert streamed.is_contiguous(memory_format=torch.channels_last_3d if channels_last is True else torch.contiguous_format)
    assert (streamed - x).abs().max() > 0.1  # the block is not the identity here


@pytest.mark.parametrize("optimized", [False, True])
def test_inference_frees_the_cost_volume_after_the_first_3d_convolution(optimized):
    """The 64-channel volume is the largest tensor at inference; with ``release_volume`` (set by
    optimize_for_inference) nothing may keep it alive once dres0's first convolution has read it (a
    module call or a stray local would: +400 MB at 544×960), and hooks on the aggregation still fire."""
    model = PSMNet(MAX_DISP, attention=EA_ATTENTION).eval()
    model.release_volume = not optimized
    if optimized:
        model = optimize_for_inference(model)
    calls = []
    model.aggregation.register_forward_hook(lambda module, args, output: calls.append(len(output)))
    seen: dict[str, object] = {}
    first, after = model.aggregation.dres0[0], model.aggregation.dres0[1]
    first.register_forward_pre_hook(lambda module, args: seen.update(volume=weakref.ref(args[0])))
    after.register_forward_pre_hook(lambda module, args: seen.update(alive=seen["volume"]() is not None))
    with torch.inference_mode():
        model(*_pair())
    assert seen["alive"] is False and calls == [3]


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("shape,size", [((2, 1, 12, 16, 24), (48, 64, 96)), ((1, 1, 5, 7, 9), (20, 13, 40))])
def test_trilinear_matrices_equal_f_interpolate_values_and_gradients(align_corners, shape, size):
    """Training's upsampling (three 1-D interpolation matrices) against F.interpolate, incl. non-×4
    sizes, in float64: both are sums of ≤ 8 products of weights in [0, 1], so they agree to a few ulps."""
    gen = torch.Generator().manual_seed(5)
    cost = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    native = F.interpolate(cost, size=size, mode="trilinear", align_corners=align_corners)
    separable = upsample_trilinear(cost, size, align_corners)
    torch.testing.assert_close(separable, native, rtol=0, atol=1e-12)
    upstream = torch.randn(native.shape, generator=gen, dtype=torch.float64)
    grad_native, = torch.autograd.grad(native, cost, upstream)
    grad_separable, = torch.autograd.grad(separable, cost, upstream)
    torch.testing.assert_close(grad_separable, grad_native, rtol=0, atol=1e-12 * upstream.abs().sum().item())


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size_in,size_out", [((1, 1), (64, 64)), ((8, 8), (64, 64)), ((2, 3), (34, 68)), ((17, 30), (136, 240))])
def test_bilinear_matrices_equal_f_interpolate_values_and_gradients(align_corners, size_in, size_out):
    """The SPP's upsampling, including the 1×1 → 64×64 branch and sizes that do not divide."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, *size_in, generator=gen, dtype=torch.float64, requires_grad=True)
    native = F.interpolate(x, size=size_out, mode="bilinear", align_corners=align_corners)
    ours = upsample_bilinear(x, size_out, align_corners)
    torch.testing.assert_close(ours, native, rtol=0, atol=1e-12)
    upstream = torch.randn(native.shape, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(ours, x, upstream)[0], torch.autograd.grad(native, x, upstream)[0],
                               rtol=0, atol=1e-12 * upstream.abs().sum().item())


def test_interpolation_matrices_are_built_on_the_inputs_device_without_host_tensors():
    """Built from ``arange`` on the device itself: no host tensor is made and copied over (shown on the
    meta device, where a copy from the host would appear as an aten._to_copy from a CPU tensor)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CrossDeviceCopies(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if func.overloadpacket in (torch.ops.aten._to_copy, torch.ops.aten.copy_):
                source = args[1] if func.overloadpacket is torch.ops.aten.copy_ else args[0]
                target = args[0] if func.overloadpacket is torch.ops.aten.copy_ else out
                self.count += source.device != target.device
            return out

    like = torch.empty(1, device="meta")
    with CrossDeviceCopies() as copies:
        matrix = interpolation_matrix(12, 48, False, like)
    assert matrix.device.type == "meta" and matrix.shape == (48, 12) and copies.count == 0
    with CrossDeviceCopies() as copies:
        interpolation_matrix(12, 48, False, torch.empty(1)).to("meta")
    assert copies.count == 1  # the counter sees a copy when there is one


def test_training_regression_takes_the_matrix_path_and_matches_inference():
    gen = torch.Generator().manual_seed(6)
    cost = 4 * torch.randn(2, 1, 12, 20, 24, generator=gen)
    with torch.no_grad():
        plain = regress_disparity(cost, 48, 80, 96)
    trained = regress_disparity(cost.requires_grad_(), 48, 80, 96)
    nodes, stack = set(), [trained.grad_fn]
    while stack:  # every autograd node that produced the output
        node = stack.pop()
        if node is not None and type(node).__name__ not in nodes:
            nodes.add(type(node).__name__)
            stack.extend(next_fn for next_fn, _ in node.next_functions)
    assert not any(name.startswith("UpsampleTrilinear3D") for name in nodes), nodes
    exact = regress_disparity(cost.detach().double(), 48, 80, 96)
    # two float32 roundings of the same function: no further from float64 than twice the inference path
    rounding = (plain.double() - exact).abs().max()
    assert 0 < (trained.detach().double() - exact).abs().max() <= 2 * rounding


def test_optimized_inference_routes_small_3d_volumes_around_the_slow_cpu_kernel_with_the_same_function():
    """optimize_for_inference switches the 3-D convolutions to the CPU small-volume route (depth and
    width swapped where PyTorch would pick its slow native kernel for a batch-1 fp32 volume). A 96×1920
    pair gives the shipped network's 1/16 context volumes (32×12×6×120 channels×D×H×W) that route; its
    output agrees with float64 as closely as the plain float32 network's (the swapped convolution sums
    the same 864 products per output in another order: float32 rounding, not another function)."""
    from stereo.accel.cpu import CpuConv3d, CpuConvTranspose3d, _native_kernel_but_not_swapped
    from stereo.models import load_model, pretrained

    model = load_model(pretrained.resolve_checkpoint("ea_census_zero_shot")).eval()
    fast = optimize_for_inference(model)
    routed = []  # names of the layers whose input took the route
    for name, module in fast.named_modules():
        if isinstance(module, (CpuConv3d, CpuConvTranspose3d)):
            module.register_forward_pre_hook(
                lambda m, args, name=name: routed.append(name) if _native_kernel_but_not_swapped(args[0], m.groups) else None)
    assert not any(isinstance(m, (CpuConv3d, CpuConvTranspose3d)) for m in model.modules())  # the original stays plain
    gen = torch.Generator().manual_seed(3)
    texture = F.avg_pool2d(torch.rand(1, 3, 96, 1920 + 24, generator=gen), 3, 1, 1)
    left, right = texture[..., :-24], texture[..., 24:]  # 24 px of disparity
    with torch.no_grad():
        plain = model(left, right)
        exact = copy.deepcopy(model).double()(left.double(), right.double())
    with torch.inference_mode():
        routed_out = fast(left, right)
    # every convolution of the four context blocks (stride-2, 1/16, transposed: 12) took the route
    assert sum(name.startswith("aggregation.context.") for name in routed) == 12, routed
    float32_rounding = (plain.double() - exact).abs().max()
    assert 0 < float32_rounding < 1e-2
    assert (routed_out.double() - exact).abs().max() <= 10 * float32_rounding
    assert abs(float(exact[0, 16:-16, 64:-64].median()) - 24.0) < 1.0  # a network that matches, not noise


def test_optimized_inference_keeps_only_the_3d_routes_of_a_network_built_with_the_cpu_backend():
    """A network trained with model_backend=cpu carries every CPU route; its inference copy keeps the
    3-D ones and switches the dilated 2-D one (slower in inference) back to nn.Conv2d."""
    from stereo.accel import use_cpu_convolutions
    from stereo.accel.cpu import CpuConv2d, CpuConv3d

    model = build_network(model_config("ea_census_context", max_disp=32))
    assert use_cpu_convolutions(model) > 0
    fast = optimize_for_inference(model.eval())
    assert not any(isinstance(m, CpuConv2d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.Conv2d) for m in fast.modules())
    assert all(isinstance(m, CpuConv3d) for m in fast.modules() if isinstance(m, torch.nn.Conv3d))
    assert any(isinstance(m, CpuConv2d) for m in model.modules())  # the original is left as it was
