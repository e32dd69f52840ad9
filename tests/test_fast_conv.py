"""stereo.models.fast_conv: each CPU route computes the plain convolution (values and gradients),
takes the kernel it exists for, and stays out of the way where it does not apply."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stereo.models import PSMNet, fast_conv

CL3D = torch.channels_last_3d


def _grads(output: torch.Tensor, inputs: list[torch.Tensor], seed: int = 3) -> list[torch.Tensor]:
    upstream = torch.randn(output.shape, generator=torch.Generator().manual_seed(seed))
    return list(torch.autograd.grad(output, inputs, upstream))


def _assert_same_function(fast: nn.Module, plain, x: torch.Tensor) -> None:
    """Same output and input/weight gradients as ``plain(x)`` up to float rounding."""
    x = x.detach().requires_grad_()
    params = list(fast.parameters())
    out, ref = fast(x), plain(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(_grads(out, [x] + params), _grads(ref, [x] + params)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def _kernels(fn) -> set[str]:
    with torch.profiler.profile() as prof:
        fn()
    return {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("batch,layout", [(1, CL3D), (2, CL3D), (1, torch.contiguous_format)])
@pytest.mark.parametrize("kernel,bias", [(3, False), ((1, 3, 5), True)])
def test_single_output_channel_conv3d_equals_the_plain_convolution(batch, layout, kernel, bias):
    torch.manual_seed(0)
    padding = tuple(k // 2 for k in ((kernel,) * 3 if isinstance(kernel, int) else kernel))
    conv = fast_conv.Conv3d(8, 1, kernel, padding=padding, bias=bias).to(memory_format=layout)
    x = torch.randn(batch, 8, 5, 6, 7).contiguous(memory_format=layout)
    _assert_same_function(conv, lambda t: F.conv3d(t, conv.weight, conv.bias, 1, padding), x)
    taken = _kernels(lambda: conv(x.requires_grad_()))
    assert "_SingleOutputConv3d" in taken and "aten::mkldnn_convolution" not in taken
    with torch.no_grad():  # inference keeps the plain kernel (no 27-channel temporary)
        assert "_SingleOutputConv3d" not in _kernels(lambda: conv(x))


@pytest.mark.parametrize("transposed", [False, True])
def test_small_volume_convolutions_swap_depth_and_width_to_reach_onednn(transposed):
    torch.manual_seed(0)
    if transposed:
        conv = fast_conv.ConvTranspose3d(16, 8, 3, stride=2, padding=1, output_padding=1, bias=False)
        plain = lambda t: F.conv_transpose3d(t, conv.weight, None, 2, 1, 1)  # noqa: E731
    else:
        conv = fast_conv.Conv3d(16, 8, 3, padding=1, bias=True)
        plain = lambda t: F.conv3d(t, conv.weight, conv.bias, 1, 1)  # noqa: E731
    conv = conv.to(memory_format=CL3D)
    x = torch.randn(1, 16, 4, 6, 256).contiguous(memory_format=CL3D)  # N·C·D·H = 384, N·C·W·H = 24576
    _assert_same_function(conv, plain, x)
    assert conv(x).is_contiguous(memory_format=CL3D)  # the next layer sees the plain call's layout
    native = {"aten::slow_conv3d_forward", "aten::slow_conv_transpose3d"}  # oneDNN's has no op of its own when transposed
    assert not native & _kernels(lambda: conv(x))
    assert native & _kernels(lambda: plain(x)), (
        "PyTorch no longer sends this shape to its native kernel: the swap route may be obsolete"
    )


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("dilation,kernel", [(2, 3), (3, 3), (2, 1)])
def test_dilated_conv2d_runs_on_interleaved_subgrids_with_the_same_result(layout, dilation, kernel):
    torch.manual_seed(0)
    padding = dilation * (kernel // 2)
    conv = fast_conv.Conv2d(6, 5, kernel, padding=padding, dilation=dilation, bias=True).to(memory_format=layout)
    x = torch.randn(2, 6, 12, 18).contiguous(memory_format=layout)
    _assert_same_function(conv, lambda t: F.conv2d(t, conv.weight, conv.bias, 1, padding, dilation), x)
    assert conv(x).is_contiguous(memory_format=layout)
    with torch.profiler.profile(record_shapes=True) as prof:
        conv(x)
    shapes = [e.input_shapes[0] for e in prof.key_averages(group_by_input_shape=True) if e.key == "aten::conv2d"]
    assert shapes == [[2 * dilation**2, 6, 12 // dilation, 18 // dilation]]


def test_routes_step_aside_where_they_do_not_apply(monkeypatch):
    calls = []
    monkeypatch.setattr(fast_conv._SingleOutputConv3d, "apply", lambda *a: calls.append(a))
    conv = fast_conv.Conv3d(4, 1, 3, padding=1)
    dilated = fast_conv.Conv2d(4, 4, 3, padding=2, dilation=2)
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
    for module, sample in ((fast_conv.Conv3d(16, 8, 3, padding="same"), small),
                           (fast_conv.Conv3d(4, 1, 3, padding=1), torch.randn(4, 3, 4, 5)),
                           (fast_conv.ConvTranspose3d(16, 8, 3, stride=2, padding=1, output_padding=1), small[0]),
                           (fast_conv.Conv2d(4, 4, 3, padding=2, dilation=2), torch.randn(4, 8, 8))):
        reference = copy.copy(module)  # same weights, as the plain nn class
        reference.__class__ = type(module).__mro__[1]
        torch.testing.assert_close(module(sample), reference(sample))
    assert calls == []


def test_written_out_backward_refuses_double_backward():
    conv = fast_conv.Conv3d(4, 1, 3, padding=1)
    x = torch.randn(1, 4, 4, 4, 4, requires_grad=True)
    grad, = torch.autograd.grad(conv(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="twice|once"):
        grad.sum().backward()


def test_psmnet_with_the_routes_computes_the_plain_network():
    """The whole network (training mode: outputs, every gradient) against the same weights in plain
    ``nn`` classes; the sizes reach all three routes."""
    torch.manual_seed(0)
    fast = PSMNet(max_disp=64, attention={"feature": "efficient", "volume": "efficient"}, channels_last=True).train()
    plain = copy.deepcopy(fast)
    base = {fast_conv.Conv2d: nn.Conv2d, fast_conv.Conv3d: nn.Conv3d, fast_conv.ConvTranspose3d: nn.ConvTranspose3d}
    kinds = set()
    for module in plain.modules():
        if type(module) in base:
            kinds.add(type(module))
            module.__class__ = base[type(module)]
    assert kinds == set(base)
    gen = torch.Generator().manual_seed(1)
    left, right = torch.randn(1, 3, 256, 512, generator=gen), torch.randn(1, 3, 256, 512, generator=gen)
    outputs = [model(left, right) for model in (fast, plain)]
    for got, want in zip(*outputs):  # batch-statistics BN amplifies rounding (measured 9e-4 px)
        assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    for model, out in zip((fast, plain), outputs):
        sum(o.mean() for o in out).backward()
    # As in test_performance_paths: relative norm error per parameter; measured ≤ 0.34 % (rounding
    # amplified by ~70 batch-statistics BN layers), where a wrong tap or layout gives ~100 %. Key
    # biases have a true gradient of 0 (softmax over positions), so only rounding noise to compare.
    for (name, p), q in zip(fast.named_parameters(), plain.parameters()):
        if not name.endswith("keys.bias"):
            error = (p.grad - q.grad).norm() / q.grad.norm().clamp(min=1e-12)
            assert error <= 2e-2, f"{name}: relative gradient error {error:.3g}"
