"""Efficient (linear) attention and the dot-product baseline, for 1-D, 2-D and 3-D feature maps.

Shen et al., "Efficient Attention: Attention with Linear Complexities" (WACV 2021): instead of the
n×n map ρ(QKᵀ)V, efficient attention evaluates ρ_q(Q)(ρ_k(K)ᵀV), whose only attention-sized tensor
is a d_k×d_v "global context". That is what lets attention run over a whole 3-D stereo cost volume
(393,216 positions for a 256×512 crop), where a dot-product map would need ~600 GB.

Layout everywhere: channels first, positions last. The functional cores take flattened tensors
q: (N, d_k, n_q), k: (N, d_k, n_k), v: (N, d_v, n_k) and return (N, d_v, n_q). Heads split the
channels into contiguous groups and are processed as a batch dimension (no Python loop).

Under autocast (bf16/fp16) the softmaxes and the context products run in fp32: half precision
overflows in q·k (fp16) and loses the small probabilities of a softmax over 10⁵ positions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .components import HasInferenceForm
from .layout import memory_format_of, positions_view
from .precision import autocast_off

NORMALIZATIONS = ("softmax", "scaling")
# Positions per chunk of the streaming inference evaluation (``EfficientAttention.chunk_positions``).
DEFAULT_CHUNK_POSITIONS = 262_144


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if not isinstance(heads, int) or heads < 1:
        raise ValueError(f"heads must be a positive integer, got {heads!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 3:
            raise ValueError(f"{name} must be (N, channels, positions), got shape {tuple(t.shape)}")
    if not q.shape[0] == k.shape[0] == v.shape[0]:
        raise ValueError(f"batch sizes differ: q {q.shape[0]}, k {k.shape[0]}, v {v.shape[0]}")
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"q and k need the same channel count, got {q.shape[1]} and {k.shape[1]}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v need the same number of positions, got {k.shape[2]} and {v.shape[2]}")
    for name, channels in (("key", k.shape[1]), ("value", v.shape[1])):
        if channels % heads:
            raise ValueError(f"{name} channels ({channels}) must be divisible by heads ({heads})")


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp32 for half-precision inputs, otherwise the inputs' own dtype (float64 stays float64)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.promote_types(dtype, torch.float32)


def _split_heads(t: torch.Tensor, heads: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, C, n) → (N, heads, C/heads, n) in the compute dtype (a view when no cast is needed)."""
    n, c, positions = t.shape
    return t.to(dtype).reshape(n, heads, c // heads, positions)


def efficient_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int = 1,
    normalization: str = "softmax",
) -> torch.Tensor:
    """ρ_q(Q)·(ρ_k(K)ᵀ·V) per head; (N, d_k, n_q), (N, d_k, n_k), (N, d_v, n_k) → (N, d_v, n_q).

    ``softmax``: keys softmaxed over positions, queries over the head's channels (no temperature).
    ``scaling``: the context is divided by n_k, which makes this exactly ``dot_product_attention``
    with ``scaling``, evaluated in the cheap order.
    """
    _check_qkv(q, k, v, heads, normalization)
    return _efficient(q, k, v, heads, normalization).to(q.dtype)


def _efficient(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, normalization: str,
    reprojection: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The EA formula, in the compute dtype (fp32 for half inputs, autocast off). With
    ``reprojection`` = (W: C×d_v, b: C) it returns W·concat_h(E_h) + b, the reprojection folded into
    the context: W·concat_h(C_hᵀ ρ_q(Q_h)) = Σ_h (W_h C_hᵀ) ρ_q(Q_h), so no (d_v × n) tensor is built
    or kept for backward, and one n-sized product is saved."""
    batch, d_k, n_q = q.shape
    with autocast_off(q.device.type):
        dtype = _compute_dtype(q, k, v)
        qh, kh, vh = (_split_heads(t, heads, dtype) for t in (q, k, v))
        if normalization == "softmax":
            qh = qh.softmax(dim=2)
            kh = kh.softmax(dim=3)
        context = torch.matmul(kh, vh.transpose(2, 3))  # (N, h, d_k/h, d_v/h): the global context
        if normalization == "scaling":
            context = context / k.shape[2]
        if reprojection is None:
            return torch.matmul(context.transpose(2, 3), qh).reshape(batch, v.shape[1], n_q)
        weight, bias = (t.to(dtype) for t in reprojection)
        weight = weight.view(weight.shape[0], heads, -1).transpose(0, 1)  # (h, C, d_v/h)
        mixed = torch.matmul(weight, context.transpose(2, 3))  # (N, h, C, d_k/h)
        mixed = mixed.transpose(1, 2).reshape(batch, weight.shape[1], d_k)
        return torch.baddbmm(bias.view(1, -1, 1), mixed, qh.reshape(batch, d_k, n_q))


def dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int = 1,
    normalization: str = "softmax",
) -> torch.Tensor:
    """ρ(QᵀK)·V per head, materialising the (n_q × n_k) map: the non-local baseline.

    ``softmax``: softmax over keys of q·k/√(d_k/heads). ``scaling``: q·k/n_k.
    """
    _check_qkv(q, k, v, heads, normalization)
    batch, d_k, n_q = q.shape
    dtype = _compute_dtype(q, k, v)
    with autocast_off(q.device.type):
        qh, kh, vh = (_split_heads(t, heads, dtype) for t in (q, k, v))
        if normalization == "softmax":
            qh = qh * (1.0 / math.sqrt(d_k // heads))
        scores = torch.matmul(qh.transpose(2, 3), kh)  # (N, h, n_q, n_k)
        weights = scores.softmax(dim=3) if normalization == "softmax" else scores / k.shape[2]
        out = torch.matmul(vh, weights.transpose(2, 3))  # (N, h, d_v/h, n_q)
    return out.reshape(batch, v.shape[1], n_q).to(q.dtype)


class _AttentionBlock(HasInferenceForm):
    """1×1 projections → attention over all positions → 1×1 reprojection → residual add.

    Works on (N, C, L), (N, C, H, W) or (N, C, D, H, W): positions are flattened, so the same weights
    serve any rank, and the output has the input's shape. The 1×1 convolutions hold the weights;
    subclasses implement ``_attend_and_reproject``.
    """

    def __init__(
        self,
        in_channels: int,
        key_channels: int,
        value_channels: int,
        heads: int = 1,
        normalization: str = "softmax",
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("key_channels", key_channels),
                            ("value_channels", value_channels), ("heads", heads)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, channels in (("key_channels", key_channels), ("value_channels", value_channels)):
            if channels % heads:
                raise ValueError(f"{name} ({channels}) must be divisible by heads ({heads})")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.in_channels = in_channels
        self.key_channels = key_channels
        self.value_channels = value_channels
        self.heads = heads
        self.normalization = normalization
        self.queries = nn.Conv1d(in_channels, key_channels, kernel_size=1)
        self.keys = nn.Conv1d(in_channels, key_channels, kernel_size=1)
        self.values = nn.Conv1d(in_channels, value_channels, kernel_size=1)
        self.reprojection = nn.Conv1d(value_channels, in_channels, kernel_size=1)
        if zero_init:
            self.reset_to_identity()

    def reset_to_identity(self) -> None:
        """Zero the reprojection: the block then returns its input exactly (residual only)."""
        nn.init.zeros_(self.reprojection.weight)
        nn.init.zeros_(self.reprojection.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4, 5):
            raise ValueError(
                f"{type(self).__name__} expects (N, C, L), (N, C, H, W) or (N, C, D, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects {self.in_channels} input channels, got {x.shape[1]}"
            )
        # Queries and keys come from one fused projection (x is read once, one input-gradient buffer
        # in backward); values get their own so that the tensor autograd keeps for the context
        # product is v alone, not a view pinning the whole fused output.
        flat = positions_view(x)
        weight = torch.cat([self.queries.weight, self.keys.weight])
        bias = torch.cat([self.queries.bias, self.keys.bias])
        q, k = _pointwise(flat, weight, bias).split(self.key_channels, dim=1)
        v = _pointwise(flat, self.values.weight, self.values.bias)
        return x + self._attend_and_reproject(q, k, v).view_as(x).to(x.dtype)

    def _attend_and_reproject(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"heads={self.heads}, normalization={self.normalization!r}"


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A 1×1 convolution on (N, C, n) as one batched matmul (several times faster than conv1d on CPU)."""
    return torch.baddbmm(bias.view(1, -1, 1), weight.squeeze(2).expand(x.shape[0], -1, -1), x)


class EfficientAttention(_AttentionBlock):
    """Efficient attention block (linear in the number of positions); see ``efficient_attention``.

    ``chunk_positions`` (None by default; the inference form sets ``DEFAULT_CHUNK_POSITIONS``)
    selects an explicit second evaluation of the same function for inference: two streaming passes
    over chunks of that many positions (``_forward_streaming``), in which only the output is
    volume-sized. Over the 544×960 cost volume the one-shot block raised the network's peak by
    574 MB (projections, softmaxes, copies); the streaming one does not raise it. It records no
    gradients, so it refuses to run while gradients are enabled.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.chunk_positions: int | None = None

    def for_inference(self) -> EfficientAttention:
        """Streamed over ``DEFAULT_CHUNK_POSITIONS``-position chunks."""
        self.chunk_positions = DEFAULT_CHUNK_POSITIONS
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.chunk_positions is None:
            return super().forward(x)
        if torch.is_grad_enabled():
            raise ValueError("EfficientAttention.chunk_positions (streaming) is for inference: run under "
                             "torch.inference_mode() / no_grad, or set chunk_positions=None to train")
        if x.dim() not in (3, 4, 5) or x.shape[1] != self.in_channels:
            return super().forward(x)  # the plain path raises the shape error
        return self._forward_streaming(x)

    def _forward_streaming(self, x: torch.Tensor) -> torch.Tensor:
        """x + W·concat_h(C_hᵀ ρ_q(Q_h)) + b, chunk by chunk along positions, without autograd.

        Pass 1 accumulates the global context C = ρ_k(K)ᵀV with an online softmax over positions
        (running per-channel maximum and sum, rescaled as each chunk arrives: the log-sum-exp trick
        of streaming attention). Pass 2 applies the reprojection-folded context to each chunk's
        queries and adds the residual. Only the rounding order differs from the plain path.
        Everything is computed positions × channels, the order channels-last memory holds: every
        chunk is then a contiguous block, read and written without transposing copies.
        """
        batch, channels = x.shape[:2]
        heads, d_k = self.heads, self.key_channels // self.heads
        dtype = _compute_dtype(x, self.queries.weight)
        # ``out`` in a standard layout: positions_view(out) must be a view, or the writes below would
        # land in a copy.
        out = torch.empty_like(x, memory_format=memory_format_of(x))
        rows, out_rows = (positions_view(t).transpose(1, 2) for t in (x, out))  # (N, positions, C)
        positions = rows.shape[1]
        queries, keys, values = ((conv.weight.to(dtype).squeeze(2).t(), conv.bias.to(dtype))
                                 for conv in (self.queries, self.keys, self.values))
        step = self.chunk_positions
        chunks = [slice(start, start + step) for start in range(0, positions, step)]
        with autocast_off(x.device.type):
            context = x.new_zeros(batch, heads, d_k, self.value_channels // heads, dtype=dtype)
            key_max = x.new_full((batch, 1, heads, d_k), -math.inf, dtype=dtype)
            key_sum = x.new_zeros(batch, 1, heads, d_k, dtype=dtype)
            for chunk in chunks:
                part = rows[:, chunk].to(dtype)
                k = torch.matmul(part, keys[0]).add_(keys[1]).view(batch, -1, heads, d_k)
                v = torch.matmul(part, values[0]).add_(values[1]).view(batch, -1, heads, self.value_channels // heads)
                if self.normalization == "softmax":
                    # max(dim).values, not amax: 6× faster on CPU for this (positions, 16) reduction
                    new_max = torch.maximum(key_max, k.max(dim=1, keepdim=True).values)
                    rescale = torch.exp(key_max - new_max)
                    k = torch.exp(k.sub_(new_max))
                    key_sum = key_sum * rescale + k.sum(dim=1, keepdim=True)
                    context = context * rescale.permute(0, 2, 3, 1)
                    key_max = new_max
                context += torch.matmul(k.permute(0, 2, 3, 1), v.transpose(1, 2))  # (N, h, d_k, d_v/h)
            scale = key_sum.permute(0, 2, 3, 1) if self.normalization == "softmax" else positions
            context = context / scale
            weight = self.reprojection.weight.to(dtype).view(channels, heads, -1).transpose(0, 1)
            mixed = torch.matmul(weight, context.transpose(2, 3)).transpose(1, 2).reshape(batch, channels, self.key_channels)
            mixed_t = mixed.transpose(1, 2)  # (N, key channels, C)
            bias = self.reprojection.bias.to(dtype)
            for chunk in chunks:
                part = rows[:, chunk]
                q = torch.matmul(part.to(dtype), queries[0]).add_(queries[1])
                if self.normalization == "softmax":
                    q = q.view(batch, -1, heads, d_k).softmax(dim=3).view(batch, -1, self.key_channels)
                if dtype == x.dtype and batch == 1:  # the product lands in the output block itself
                    torch.matmul(q[0], mixed_t[0], out=out_rows[0, chunk]).add_(bias).add_(part[0])
                else:
                    out_rows[:, chunk] = torch.matmul(q, mixed_t).add_(bias).add_(part.to(dtype)).to(x.dtype)
        return out

    def _attend_and_reproject(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _efficient(q, k, v, self.heads, self.normalization,
                          (self.reprojection.weight.squeeze(2), self.reprojection.bias))


class DotProductAttention(_AttentionBlock):
    """Dot-product (non-local) block with the same interface; quadratic memory in positions."""

    def _attend_and_reproject(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        attended = dot_product_attention(q, k, v, self.heads, self.normalization)
        return _pointwise(attended, self.reprojection.weight, self.reprojection.bias)
