"""CPU backend: convolutions that compute exactly what ``nn.Conv2d`` / ``nn.Conv3d`` /
``nn.ConvTranspose3d`` compute, but route three PSMNet shapes and the refinements' few-channel 2-D
layers around slow PyTorch CPU kernels (measured at 256×512, 2 threads, forward + backward per call):

- **Small 3-D volumes.** PyTorch sends an fp32 CPU convolution with batch 1 and N·C·D·H ≤ 20480 to
  its native kernel instead of oneDNN (``ConvParams::use_mkldnn`` in ATen's Convolution.cpp: "for
  some case, native is faster"); the hourglass bottleneck (64×12×16×32) lands there and is 2-3×
  slower than oneDNN. Convolution commutes with swapping the depth and width axes (of input and
  kernel alike), which takes the shape across the threshold: 134 → 42 ms (conv), 146 → 84 ms
  (transposed conv).
- **One output channel, training.** oneDNN's 32→1 3×3×3 convolution (PSMNet's classifiers) runs
  at a few GFLOP/s, worst in backward. As a GEMM into 27 tap maps followed by a shifted sum: 240 →
  170 ms. Only when gradients are recorded: the tap maps are a 27-channel temporary, which inference
  (forward only, little to gain) should not pay for in peak memory.
- **Dilated 2-D convolutions** (layer4 of the feature extractor, dilation 2). A dilation-d
  convolution with "same" padding is an ordinary one on the d×d interleaved sub-grids, stacked as a
  batch: 96 → 70 ms.
- **2-D convolutions whose output channels are not a multiple of 16**, fp32, or fp32 or bf16 input
  under CPU autocast (bf16-mixed training, where a layer after the first gets bf16 activations).
  oneDNN's plain-layout (NCHW) kernels work on blocks of 16 channels, so an 8-channel output is half
  padding; in the channels-last layout (NHWC) they do not pad. The input and
  the weight are laid out channels-last for the call and the output is returned in the input's
  layout: the full-resolution refinement step's 8-channel convolutions at 256×512, batch 4, 35-40 →
  16-18 ms in fp32 and in bf16, its 8→1 output layer 21 → 9 ms, the half-resolution step's 16→1
  and 16→36 layers 1.3-2.4× faster; 16- and 32-channel outputs gain nothing (16→16 at 256×512 is
  slower channels-last), so they keep the plain call.

``use_cpu_convolutions(model)`` switches a built network's plain convolution layers to these
subclasses in place (``use_plain_convolutions`` switches back); ``use_cpu_volume_convolutions`` only the
3-D ones, which ``optimize_for_inference`` does (an inference network is channels-last throughout). The
subclasses add no state, so parameters (and optimisers holding them), hooks and state-dict keys stay as
they were. Only batched CPU fp32 input without autocast takes the first three routes (not with string
padding), batched CPU input in fp32 or in the autocast dtype under CPU autocast the fourth; anything else
runs the plain ``forward``, and nothing is routed while tracing or compiling. The written-out backward is
first-order only (double backward raises). ``tests/test_accel_cpu.py`` checks each route against the plain
layer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from stereo.models.layout import memory_format_of, positions_view

# PyTorch's native-kernel threshold on N·C·D·H for batch-1 fp32 CPU convolutions (see above).
_NATIVE_KERNEL_MAX_NCDH = 20480
_SWAP_DEPTH_WIDTH = (0, 1, 4, 3, 2)  # a permutation that is its own inverse
# oneDNN's plain-layout CPU kernels block channels by 16 (AVX-512's 16 floats); see the fourth route.
ONEDNN_CHANNEL_BLOCK = 16


def _plain_cpu_fp32(x: torch.Tensor) -> bool:
    """Whether the rewrites apply: eager fp32 on CPU, no autocast, not tracing or compiling."""
    return (
        x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
        and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
    )


def _eager_cpu(x: torch.Tensor) -> bool:
    """Whether the channels-last route applies: eager CPU input in fp32, or in fp32 or the autocast dtype
    under CPU autocast (in bf16-mixed training every layer after the first receives bf16 activations);
    not tracing or compiling."""
    autocast = torch.is_autocast_enabled("cpu")
    return (x.device.type == "cpu"
            and (x.dtype == torch.float32 or (autocast and x.dtype == torch.get_autocast_dtype("cpu")))
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling())


def _native_kernel_but_not_swapped(x: torch.Tensor, groups: int) -> bool:
    """PyTorch would pick its slow native kernel for ``x``, but not for ``x`` with D and W swapped."""
    n, c, d, h, w = x.shape
    return groups == 1 and n == 1 and n * c * d * h <= _NATIVE_KERNEL_MAX_NCDH < n * c * w * h


def _like(out: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``out`` in the memory format of ``reference`` (the next layer gets what the plain call gives)."""
    return out.contiguous(memory_format=memory_format_of(reference))


class CpuConv3d(nn.Conv3d):
    """``nn.Conv3d`` with the small-volume and single-output-channel CPU routes."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if (self.padding_mode != "zeros" or isinstance(self.padding, str) or input.dim() != 5
                or not _plain_cpu_fp32(input)):
            return super().forward(input)
        if (self.out_channels == 1 and self.groups == 1 and self.stride == (1, 1, 1) and self.dilation == (1, 1, 1)
                and all(k % 2 == 1 and p == k // 2 for k, p in zip(self.kernel_size, self.padding))
                and torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad)):
            out = _SingleOutputConv3d.apply(input, weight)
            return out if bias is None else out + bias.view(1, 1, 1, 1, 1)
        if _native_kernel_but_not_swapped(input, self.groups):
            swap = _SWAP_DEPTH_WIDTH
            out = F.conv3d(input.permute(swap), weight.permute(swap), bias, _swap(self.stride),
                           _swap(self.padding), _swap(self.dilation), self.groups)
            return _like(out.permute(swap), input)
        return super().forward(input)


class CpuConvTranspose3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` with the small-volume CPU route."""

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if (output_size is not None or input.dim() != 5 or not _plain_cpu_fp32(input)
                or not _native_kernel_but_not_swapped(input, self.groups)):
            return super().forward(input, output_size)
        swap = _SWAP_DEPTH_WIDTH
        out = F.conv_transpose3d(input.permute(swap), self.weight.permute(swap), self.bias, _swap(self.stride),
                                 _swap(self.padding), _swap(self.output_padding), self.groups, _swap(self.dilation))
        return _like(out.permute(swap), input)


class CpuConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose dilated "same" convolutions run as plain ones on interleaved sub-grids (fp32),
    and whose outputs of other than a multiple of 16 channels are computed channels-last."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # without autocast a dilated layer is left to the sub-grid route below (or the plain call)
        if self.out_channels % ONEDNN_CHANNEL_BLOCK and input.dim() == 4 and _eager_cpu(input) and (
                self.dilation == (1, 1) or torch.is_autocast_enabled("cpu")):
            layout = torch.channels_last
            out = self._conv_forward(input.contiguous(memory_format=layout),
                                     self.weight.contiguous(memory_format=layout), self.bias)
            return _like(out, input)
        d = self.dilation[0]
        if (d == 1 or self.dilation != (d, d) or self.stride != (1, 1) or self.padding_mode != "zeros"
                or self.padding != tuple(d * (k // 2) for k in self.kernel_size)
                or any(k % 2 == 0 for k in self.kernel_size)
                or input.dim() != 4 or input.shape[-2] % d or input.shape[-1] % d or not _plain_cpu_fp32(input)):
            return super().forward(input)
        n, c, h, w = input.shape
        # N×C×H×W → (N·d·d)×C×H/d×W/d, sub-grid (i, j) holding pixels (i::d, j::d); NHWC throughout.
        grids = (input.permute(0, 2, 3, 1).reshape(n, h // d, d, w // d, d, c).permute(0, 2, 4, 1, 3, 5)
                 .reshape(n * d * d, h // d, w // d, c).permute(0, 3, 1, 2))
        out = F.conv2d(grids, self.weight, self.bias, 1, tuple(k // 2 for k in self.kernel_size), 1, self.groups)
        o = out.shape[1]
        out = (out.permute(0, 2, 3, 1).reshape(n, d, d, h // d, w // d, o).permute(0, 3, 1, 4, 2, 5)
               .reshape(n, h, w, o).permute(0, 3, 1, 2))
        return _like(out, input)


def _swap(values: tuple[int, ...]) -> tuple[int, ...]:
    """A 3-tuple of per-axis settings (D, H, W) with D and W swapped."""
    return (values[2], values[1], values[0])


class _SingleOutputConv3d(torch.autograd.Function):
    """N×C×D×H×W ⊛ 1×C×k×k×k ("same" padding, stride 1): one GEMM gives each tap's contribution
    (taps × positions), then each tap map is added at its offset. Backward: the gradient's shifted
    copies form the tap gradients, and two GEMMs give the input's and the weight's gradients."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        n, c, d, h, w = x.shape
        kernel = tuple(weight.shape[2:])
        rows = positions_view(x).transpose(1, 2)  # N × DHW × C
        per_tap = weight.reshape(c, -1).t()  # taps × C
        taps = x.new_empty(n, per_tap.shape[0], d * h * w)
        for i in range(n):
            torch.mm(per_tap, rows[i].t(), out=taps[i])
        ctx.save_for_backward(x, weight)
        halo = [k // 2 for k in kernel]
        out = x.new_zeros(n, d + 2 * halo[0], h + 2 * halo[1], w + 2 * halo[2])
        taps = taps.view(n, -1, d, h, w)
        for t, offset in enumerate(_offsets(kernel)):
            out[_tap_window(offset, halo, (d, h, w))] += taps[:, t]
        return out[:, halo[0]:halo[0] + d, halo[1]:halo[1] + h, halo[2]:halo[2] + w].unsqueeze(1).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        n, c, d, h, w = x.shape
        kernel = tuple(weight.shape[2:])
        halo = [k // 2 for k in kernel]
        padded = F.pad(grad.squeeze(1), (halo[2], halo[2], halo[1], halo[1], halo[0], halo[0]))
        tap_grads = grad.new_empty(n, math.prod(kernel), d, h, w)
        for t, offset in enumerate(_offsets(kernel)):
            tap_grads[:, t] = padded[_tap_window(offset, halo, (d, h, w))]
        tap_grads = tap_grads.view(n, -1, d * h * w)
        per_tap = weight.reshape(c, -1)  # C × taps
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_rows = x.new_empty(n, d * h * w, c)
            for i in range(n):
                torch.mm(tap_grads[i].t(), per_tap.t(), out=grad_rows[i])
            grad_x = grad_rows.view(n, d, h, w, c).permute(0, 4, 1, 2, 3)  # channels-last strides
        if ctx.needs_input_grad[1]:
            rows = positions_view(x).transpose(1, 2)
            grad_w = sum(torch.mm(rows[i].t(), tap_grads[i].t()) for i in range(n)).reshape(weight.shape)
        return grad_x, grad_w


def _tap_window(offset: tuple[int, int, int], halo: list[int], size: tuple[int, int, int]) -> tuple[slice, ...]:
    """Where tap ``offset`` of every input voxel lands in the halo-padded output: output voxel p
    reads input voxel p + offset - halo, so input voxel q feeds padded position q - offset + 2·halo."""
    return (slice(None),) + tuple(slice(2 * r - o, 2 * r - o + n) for o, r, n in zip(offset, halo, size))


def _offsets(kernel: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Kernel taps in weight order (depth, row, column)."""
    return [(a, b, e) for a in range(kernel[0]) for b in range(kernel[1]) for e in range(kernel[2])]


# Plain layer class → its CPU-route subclass (exact types only: other subclasses are left alone).
_CPU_CLASSES = {nn.Conv2d: CpuConv2d, nn.Conv3d: CpuConv3d, nn.ConvTranspose3d: CpuConvTranspose3d}
_PLAIN_CLASSES = {fast: plain for plain, fast in _CPU_CLASSES.items()}
# Inference: the 3-D routes on, the dilated 2-D route off (also on a network built with model_backend=cpu).
_VOLUME_CLASSES = {nn.Conv3d: CpuConv3d, nn.ConvTranspose3d: CpuConvTranspose3d, CpuConv2d: nn.Conv2d}


def use_cpu_convolutions(model: nn.Module) -> int:
    """Switch every plain ``Conv2d`` / ``Conv3d`` / ``ConvTranspose3d`` of ``model`` to its CPU-route
    subclass, in place; returns how many layers were switched. Each layer keeps its identity (only its
    class, i.e. its ``forward``, changes: the subclasses add no state)."""
    return _switch(model, _CPU_CLASSES)


def use_cpu_volume_convolutions(model: nn.Module) -> int:
    """The 3-D layers' routes (``Conv3d``, ``ConvTranspose3d``) and plain 2-D layers, in place; returns
    how many layers were switched. What ``optimize_for_inference`` uses: in inference only the
    small-volume route can apply, and it took EA-Census with three blocks through 1/16 (stage 6) from 0.61
    to 0.34 s per 544×960 pair (``ea_light`` 0.17 → 0.10 s, EA-PSMNet level) on a 2-core CPU
    (docs/performance.md); the dilated 2-D route is switched off, also where ``use_cpu_convolutions``
    had switched it on, because it slowed EA-PSMNet's inference (5.79 → 6.19 s)."""
    return _switch(model, _VOLUME_CLASSES)


def use_plain_convolutions(model: nn.Module) -> int:
    """Undo ``use_cpu_convolutions``: every CPU-route layer back to its ``torch.nn`` class."""
    return _switch(model, _PLAIN_CLASSES)


def _switch(model: nn.Module, classes: dict[type, type]) -> int:
    switched = 0
    for module in model.modules():
        target = classes.get(type(module))
        if target is not None:
            module.__class__ = target
            switched += 1
    return switched
