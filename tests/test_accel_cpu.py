"""stereo.accel.cpu: each CPU route computes the plain convolution (values and gradients), takes the
kernel it exists for, stays out of the way where it does not apply, and the backend switch changes
classes only (same parameters, same state-dict keys, reversible).

Bounds follow from the arithmetic, not from a run: every value and gradient of a convolution is a
dot product of n terms (n = the layer's longest reduction), so whatever order a route sums in, its
float32 result is within γ_n·Σ|terms| of the exact one (γ_n = n·u / (1 - n·u), u = 2⁻²⁴; Higham,
"Accuracy and Stability of Numerical Algorithms", §3.1). The exact value and Σ|terms| come from
float64 runs of the plain functional call on the inputs and on their absolute values. A wrong tap,
layout or offset is off by O(Σ|terms|), far above γ_n·Σ|terms| at these sizes.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stereo.accel import BACKENDS, apply_backend
from stereo.accel import cpu
from stereo.models import PSMNet

CL3D = torch.channels_last_3d
UNIT_ROUNDOFF = 2.0**-24
BF16_ROUNDOFF = 2.0**-8


def _gamma(n: int) -> float:
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def _value_and_grads(fn, tensors: list[torch.Tensor], upstream: torch.Tensor) -> list[torch.Tensor]:
    """fn(*tensors) and its gradients with respect to each tensor (leaf copies of the inputs)."""
    tensors = [t.detach().requires_grad_() for t in tensors]
    out = fn(*tensors)
    return [out.detach()] + list(torch.autograd.grad(out, tensors, upstream.to(out.dtype)))


def _assert_same_function(fast: nn.Module, plain, x: torch.Tensor, reduction: int) -> None:
    """``fast(x)`` and its gradients (input, weight, bias) against ``plain(x, weight, bias)`` in float64,
    within γ_reduction·Σ|terms| (computed as the same call on absolute values)."""
    params = [fast.weight] + ([fast.bias] if fast.bias is not None else [])
    upstream = torch.randn(plain(x, *params).shape, generator=torch.Generator().manual_seed(3))

    x = x.detach().requires_grad_()
    out = fast(x)
    got = [out.detach()] + list(torch.autograd.grad(out, [x] + params, upstream))
    exact = _value_and_grads(plain, [t.double() for t in [x] + params], upstream.double())
    magnitude = _value_and_grads(plain, [t.double().abs() for t in [x] + params], upstream.double().abs())
    bound = _gamma(reduction + 2)  # + bias and the upstream product
    for name, g, e, m in zip(["value", "input grad", "weight grad", "bias grad"], got, exact, magnitude):
        assert g.shape == e.shape, name
        excess = ((g.double() - e).abs() - bound * m).max()
        assert excess <= 0, f"{name}: {excess:.3g} beyond the rounding bound"


def _kernels(fn) -> set[str]:
    with torch.profiler.profile() as prof:
        fn()
    return {event.key for event in prof.key_averages()}


def _cpu(module: nn.Module) -> nn.Module:
    cpu.use_cpu_convolutions(module)
    return module


@pytest.mark.parametrize("batch,layout", [(1, CL3D), (2, CL3D), (1, torch.contiguous_format)])
@pytest.mark.parametrize("kernel,bias", [(3, False), ((1, 3, 5), True)])
def test_single_output_channel_conv3d_equals_the_plain_convolution(batch, layout, kernel, bias):
    torch.manual_seed(0)
    sizes = (kernel,) * 3 if isinstance(kernel, int) else kernel
    padding = tuple(k // 2 for k in sizes)
    conv = _cpu(nn.Conv3d(8, 1, kernel, padding=padding, bias=bias)).to(memory_format=layout)
    x = torch.randn(batch, 8, 5, 6, 7).contiguous(memory_format=layout)
    reduction = max(8 * math.prod(sizes), batch * 5 * 6 * 7)
    _assert_same_function(conv, lambda t, w, b=None: F.conv3d(t, w, b, 1, padding), x, reduction)
    taken = _kernels(lambda: conv(x.requires_grad_()))
    assert "_SingleOutputConv3d" in taken and "aten::mkldnn_convolution" not in taken
    with torch.no_grad():  # inference keeps the plain kernel (no 27-channel temporary)
        assert "_SingleOutputConv3d" not in _kernels(lambda: conv(x))


@pytest.mark.parametrize("transposed", [False, True])
def test_small_volume_convolutions_swap_depth_and_width_to_reach_onednn(transposed):
    torch.manual_seed(0)
    if transposed:
        conv = nn.ConvTranspose3d(16, 8, 3, stride=2, padding=1, output_padding=1, bias=False)
        plain = lambda t, w: F.conv_transpose3d(t, w, None, 2, 1, 1)  # noqa: E731
        out_positions = 8 * 12 * 512
    else:
        conv = nn.Conv3d(16, 8, 3, padding=1, bias=True)
        plain = lambda t, w, b: F.conv3d(t, w, b, 1, 1)  # noqa: E731
        out_positions = 4 * 6 * 256
    conv = _cpu(conv).to(memory_format=CL3D)
    x = torch.randn(1, 16, 4, 6, 256).contiguous(memory_format=CL3D)  # N·C·D·H = 384, N·C·W·H = 24576
    _assert_same_function(conv, plain, x, reduction=max(16 * 27, out_positions))
    assert conv(x).is_contiguous(memory_format=CL3D)  # the next layer sees the plain call's layout
    native = {"aten::slow_conv3d_forward", "aten::slow_conv_transpose3d"}  # oneDNN's has no op of its own when transposed
    assert not native & _kernels(lambda: conv(x))
    args = [conv.weight] + ([conv.bias] if conv.bias is not None else [])
    assert native & _kernels(lambda: plain(x, *args)), (
        "PyTorch no longer sends this shape to its native kernel: the swap route may be obsolete"
    )


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("dilation,kernel", [(2, 3), (3, 3), (2, 1)])
def test_dilated_conv2d_runs_on_interleaved_subgrids_with_the_same_result(layout, dilation, kernel):
    torch.manual_seed(0)
    padding = dilation * (kernel // 2)
    conv = _cpu(nn.Conv2d(6, 5, kernel, padding=padding, dilation=dilation, bias=True)).to(memory_format=layout)
    x = torch.randn(2, 6, 12, 18).contiguous(memory_format=layout)
    _assert_same_function(conv, lambda t, w, b: F.conv2d(t, w, b, 1, padding, dilation), x,
                          reduction=max(6 * kernel**2, 2 * 12 * 18))
    assert conv(x).is_contiguous(memory_format=layout)
    with torch.profiler.profile(record_shapes=True) as prof:
        conv(x)
    shapes = [e.input_shapes[0] for e in prof.key_averages(group_by_input_shape=True) if e.key == "aten::conv2d"]
    assert shapes == [[2 * dilation**2, 6, 12 // dilation, 18 // dilation]]


def _conv2d_layouts(monkeypatch) -> list[bool]:
    """Whether each F.conv2d call from now on gets a channels-last input."""
    layouts, plain_call = [], F.conv2d
    monkeypatch.setattr(F, "conv2d", lambda x, *a: layouts.append(
        x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()) or plain_call(x, *a))
    return layouts


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("in_channels,out_channels,kernel,bias", [(8, 8, 3, False), (9, 8, 3, True),
                                                                   (8, 1, 3, True), (16, 36, 1, True)])
def test_few_output_channels_conv2d_runs_channels_last_with_the_same_result(
        monkeypatch, layout, in_channels, out_channels, kernel, bias):
    torch.manual_seed(0)
    conv = _cpu(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=bias))
    x = torch.randn(2, in_channels, 12, 18).contiguous(memory_format=layout)
    layouts = _conv2d_layouts(monkeypatch)
    assert conv(x).is_contiguous(memory_format=layout)  # handed on in the layout it came in
    assert layouts == [True]
    _assert_same_function(conv, lambda t, w, b=None: F.conv2d(t, w, b, 1, kernel // 2), x,
                          reduction=max(in_channels * kernel**2, 2 * 12 * 18))


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])  # bf16: a layer after the first
@pytest.mark.parametrize("out_channels", [8, 1])
def test_few_output_channels_route_under_bf16_autocast_rounds_as_the_plain_call(monkeypatch, out_channels, input_dtype):
    """bf16-mixed training: the convolution multiplies bf16 copies of the input and weight (exact in
    float32), sums in float32 and rounds its value and gradients to bf16 (8 significant bits: unit
    roundoff 2^-8), so each is within 2^-8 of itself of a sum that is within γ_n·Σ|terms| of the float64
    result on the same bf16 inputs. The plain call meets the same bound (it is not too tight for
    oneDNN's own kernels); a wrong tap or layout is off by O(Σ|terms|)."""
    torch.manual_seed(0)
    plain = nn.Conv2d(8, out_channels, 3, padding=1, bias=True)
    with torch.no_grad():  # bf16 values, so the float64 reference multiplies what the kernel multiplies
        for p in plain.parameters():
            p.copy_(p.bfloat16().float())
    routed = _cpu(copy.deepcopy(plain))
    x = torch.randn(2, 8, 12, 18).bfloat16().float()
    upstream = torch.randn(2, out_channels, 12, 18).bfloat16()
    layouts = _conv2d_layouts(monkeypatch)
    inputs = [x] + list(plain.parameters())
    exact = _value_and_grads(lambda t, w, b: F.conv2d(t, w, b, 1, 1), [t.double() for t in inputs], upstream.double())
    magnitude = _value_and_grads(lambda t, w, b: F.conv2d(t, w, b, 1, 1), [t.double().abs() for t in inputs],
                                 upstream.double().abs())
    bound = _gamma(2 * 12 * 18 + 2)  # the longest reduction: the weight gradient's
    for module, routed_call in ((plain, False), (routed, True)):
        del layouts[:]
        params = list(module.parameters())
        leaf = x.to(input_dtype).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(leaf)
        assert out.dtype == torch.bfloat16 and layouts == [routed_call]
        got = [out.detach()] + list(torch.autograd.grad(out, [leaf] + params, upstream))
        for name, g, e, m in zip(["value", "input grad", "weight grad", "bias grad"], got, exact, magnitude):
            excess = ((g.double() - e).abs() - BF16_ROUNDOFF * e.abs() - (1 + BF16_ROUNDOFF) * bound * m).max()
            assert excess <= 0, f"{type(module).__name__} {name}: {excess:.3g} beyond the rounding bound"


def test_routes_step_aside_where_they_do_not_apply(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu._SingleOutputConv3d, "apply", lambda *a: calls.append(a))
    conv = _cpu(nn.Conv3d(4, 1, 3, padding=1))
    dilated = _cpu(nn.Conv2d(4, 4, 3, padding=2, dilation=2))
    x = torch.randn(1, 4, 4, 4, 4)
    image = torch.randn(1, 4, 7, 8)  # odd height: no exact sub-grid split
    torch.jit.trace(conv, x, check_trace=False)  # export traces the plain convolution
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv(x)
    conv.double()(x.double())
    assert calls == []
    with torch.profiler.profile(record_shapes=True) as prof:
        dilated(image)
    assert [e.input_shapes[0] for e in prof.key_averages(group_by_input_shape=True) if e.key == "aten::conv2d"] == [[1, 4, 7, 8]]
    # what nn accepts, the routes must not break: string padding, unbatched input
    small = torch.randn(1, 16, 4, 6, 256)  # would take the depth/width swap
    for module, sample in ((nn.Conv3d(16, 8, 3, padding="same"), small),
                           (nn.Conv3d(4, 1, 3, padding=1), torch.randn(4, 3, 4, 5)),
                           (nn.ConvTranspose3d(16, 8, 3, stride=2, padding=1, output_padding=1), small[0]),
                           (nn.Conv2d(4, 4, 3, padding=2, dilation=2), torch.randn(4, 8, 8))):
        fast = _cpu(copy.deepcopy(module))
        assert type(fast) is not type(module)
        torch.testing.assert_close(fast(sample), module(sample), rtol=0, atol=0)
    assert calls == []
    layouts = _conv2d_layouts(monkeypatch)
    _cpu(nn.Conv2d(4, 16, 3, padding=1))(torch.randn(2, 4, 8, 8))  # a multiple of 16 channels: plain
    torch.jit.trace(_cpu(nn.Conv2d(4, 8, 3, padding=1)), torch.randn(2, 4, 8, 8), check_trace=False)
    assert layouts == [False, False]


def test_written_out_backward_refuses_double_backward():
    conv = _cpu(nn.Conv3d(4, 1, 3, padding=1))
    x = torch.randn(1, 4, 4, 4, 4, requires_grad=True)
    grad, = torch.autograd.grad(conv(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="twice|once"):
        grad.sum().backward()


def test_backend_switch_changes_classes_only_and_is_reversible():
    model = PSMNet(max_disp=32, attention={"feature": "efficient", "volume": "efficient"})
    parameters = [id(p) for p in model.parameters()]
    keys = list(model.state_dict())
    plain_types = {name: type(m) for name, m in model.named_modules()}
    assert apply_backend(model, "cpu") is model
    switched = {name: type(m) for name, m in model.named_modules() if type(m) is not plain_types[name]}
    assert set(switched.values()) == {cpu.CpuConv2d, cpu.CpuConv3d, cpu.CpuConvTranspose3d}
    assert all(issubclass(t, plain_types[name]) for name, t in switched.items())
    attention_convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert attention_convs and all(type(m) is nn.Conv1d for m in attention_convs)  # other layers untouched
    assert [id(p) for p in model.parameters()] == parameters and list(model.state_dict()) == keys
    apply_backend(model, "plain")
    assert {name: type(m) for name, m in model.named_modules()} == plain_types
    with pytest.raises(ValueError, match="model_backend"):
        apply_backend(model, "gpu")
    assert BACKENDS == ("plain", "cpu")
