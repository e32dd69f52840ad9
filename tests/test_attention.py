"""Efficient / dot-product attention: the paper's math, N-D modules, errors, mixed precision."""

from __future__ import annotations

import pytest
import torch

from stereo.models import DotProductAttention, EfficientAttention, dot_product_attention, efficient_attention


def _qkv(n=2, d_k=8, d_v=6, n_q=30, n_k=40, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d_k, n_q, generator=gen, dtype=dtype),
            torch.randn(n, d_k, n_k, generator=gen, dtype=dtype),
            torch.randn(n, d_v, n_k, generator=gen, dtype=dtype))


def _reference_efficient_softmax(q, k, v, heads):
    """Definition, head by head: ρ_k = exp(K)/Σ_positions, ρ_q = exp(Q)/Σ_head-channels, out = (ρ_k Vᵀ)ᵀ ρ_q."""
    dk, dv = q.shape[1] // heads, v.shape[1] // heads
    outs = []
    for h in range(heads):
        qh, kh, vh = q[:, h * dk:(h + 1) * dk], k[:, h * dk:(h + 1) * dk], v[:, h * dv:(h + 1) * dv]
        rho_k = torch.exp(kh) / torch.exp(kh).sum(dim=2, keepdim=True)
        rho_q = torch.exp(qh) / torch.exp(qh).sum(dim=1, keepdim=True)
        context = torch.einsum("bkn,bvn->bkv", rho_k, vh)
        outs.append(torch.einsum("bkv,bkq->bvq", context, rho_q))
    return torch.cat(outs, dim=1)


def _reference_dot_product_softmax(q, k, v, heads):
    """Definition, head by head and query by query: softmax_j(q_i·k_j/√d) weighted sum of v_j."""
    dk, dv = q.shape[1] // heads, v.shape[1] // heads
    out = torch.empty(q.shape[0], v.shape[1], q.shape[2], dtype=q.dtype)
    for h in range(heads):
        qh, kh, vh = q[:, h * dk:(h + 1) * dk], k[:, h * dk:(h + 1) * dk], v[:, h * dv:(h + 1) * dv]
        for i in range(q.shape[2]):
            logits = (qh[:, :, i:i + 1] * kh).sum(dim=1) / dk ** 0.5  # (N, n_k)
            weights = torch.exp(logits) / torch.exp(logits).sum(dim=1, keepdim=True)
            out[:, h * dv:(h + 1) * dv, i] = (vh * weights[:, None, :]).sum(dim=2)
    return out


@pytest.mark.parametrize("heads", [1, 2])
def test_scaling_efficient_attention_equals_scaling_dot_product(heads):
    q, k, v = _qkv()
    ea = efficient_attention(q, k, v, heads=heads, normalization="scaling")
    dp = dot_product_attention(q, k, v, heads=heads, normalization="scaling")
    assert ea.shape == (2, 6, 30)
    assert ((ea - dp).norm() / dp.norm()).item() <= 1e-10


@pytest.mark.parametrize("heads", [1, 2])
def test_softmax_efficient_attention_matches_per_head_definition(heads):
    q, k, v = _qkv(seed=1)
    expected = _reference_efficient_softmax(q, k, v, heads)
    torch.testing.assert_close(efficient_attention(q, k, v, heads=heads), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("heads", [1, 2])
def test_softmax_dot_product_matches_per_query_definition(heads):
    q, k, v = _qkv(n_q=7, seed=2)
    expected = _reference_dot_product_softmax(q, k, v, heads)
    torch.testing.assert_close(dot_product_attention(q, k, v, heads=heads), expected, rtol=1e-12, atol=1e-12)


def test_efficient_attention_implied_map_is_row_stochastic():
    # With V = identity over the n_k positions (one copy per head), output channel j at query i is
    # the implied map's entry (i, j): ρ_q(Q)ᵀρ_k(K) must be non-negative with rows summing to 1.
    q, k, _ = _qkv(d_k=8, n_q=25, n_k=12, seed=3)
    heads = 2
    eye = torch.eye(12, dtype=torch.float64).expand(2, 12, 12)
    v = torch.cat([eye, eye], dim=1)
    implied = efficient_attention(q, k, v, heads=heads)  # (N, heads*n_k, n_q)
    for h in range(heads):
        head_map = implied[:, h * 12:(h + 1) * 12]
        assert (head_map >= 0).all()
        torch.testing.assert_close(head_map.sum(dim=1), torch.ones(2, 25, dtype=torch.float64))
    # and it is not trivially uniform: the map actually depends on the queries
    assert implied[:, :12].std(dim=2).max() > 1e-3


@pytest.mark.parametrize("cls", [EfficientAttention, DotProductAttention])
@pytest.mark.parametrize("shape", [(2, 16, 20), (2, 16, 6, 7), (1, 16, 3, 4, 5)])
def test_modules_keep_shape_for_1d_2d_3d_inputs(cls, shape):
    block = cls(16, 8, 12, heads=4)
    x = torch.randn(shape)
    y = block(x)
    assert y.shape == x.shape
    assert not torch.allclose(y, x)  # the attention branch contributes


@pytest.mark.parametrize("cls", [EfficientAttention, DotProductAttention])
def test_zero_init_module_is_identity(cls):
    block = cls(16, 8, 16, zero_init=True)
    x = torch.randn(2, 16, 3, 4, 5)
    assert torch.equal(block(x), x)


def test_efficient_and_dot_product_modules_agree_with_scaling_on_3d_volume():
    ea = EfficientAttention(8, 4, 8, heads=2, normalization="scaling").double()
    dp = DotProductAttention(8, 4, 8, heads=2, normalization="scaling").double()
    dp.load_state_dict(ea.state_dict())
    x = torch.randn(1, 8, 4, 5, 6, dtype=torch.float64)
    a, b = ea(x), dp(x)
    assert ((a - b).norm() / b.norm()).item() <= 1e-10


@pytest.mark.parametrize("cls, fn", [(EfficientAttention, efficient_attention),
                                     (DotProductAttention, dot_product_attention)])
def test_module_is_projections_then_functional_core_then_reprojection_plus_input(cls, fn):
    # the efficient block folds its reprojection into the context; it must still be exactly this
    block = cls(12, 8, 6, heads=2).double()
    x = torch.randn(2, 12, 3, 5, dtype=torch.float64)
    flat = x.flatten(2)
    q, k, v = (torch.nn.functional.conv1d(flat, c.weight, c.bias) for c in (block.queries, block.keys, block.values))
    attended = fn(q, k, v, heads=2)
    expected = x + torch.nn.functional.conv1d(attended, block.reprojection.weight, block.reprojection.bias).view_as(x)
    torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", [EfficientAttention, DotProductAttention])
def test_gradients_reach_every_parameter_and_the_input(cls):
    block = cls(16, 8, 16, heads=2)
    x = torch.randn(1, 16, 3, 4, 5, requires_grad=True)
    block(x).square().sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(in_channels=16, key_channels=6, value_channels=16, heads=4), "key_channels"),
        (dict(in_channels=16, key_channels=8, value_channels=10, heads=4), "value_channels"),
        (dict(in_channels=16, key_channels=8, value_channels=16, normalization="none"), "normalization"),
        (dict(in_channels=0, key_channels=8, value_channels=16), "in_channels"),
    ],
)
def test_module_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EfficientAttention(**kwargs)


def test_module_rejects_wrong_rank_and_channels():
    block = EfficientAttention(16, 8, 16)
    with pytest.raises(ValueError, match="expects .*N, C, L"):
        block(torch.randn(16, 20))
    with pytest.raises(ValueError, match="expects .*N, C, L"):
        block(torch.randn(1, 16, 2, 2, 2, 2))
    with pytest.raises(ValueError, match="16 input channels, got 8"):
        block(torch.randn(1, 8, 20))


@pytest.mark.parametrize("fn", [efficient_attention, dot_product_attention])
def test_functional_errors(fn):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="divisible by heads"):
        fn(q, k, v, heads=3)
    with pytest.raises(ValueError, match="same number of positions"):
        fn(q, k, v[:, :, :-1])
    with pytest.raises(ValueError, match="same channel count"):
        fn(q[:, :4], k, v)
    with pytest.raises(ValueError, match="normalization"):
        fn(q, k, v, normalization="sigmoid")
    with pytest.raises(ValueError, match="N, channels, positions"):
        fn(q[0], k, v)


def test_half_precision_inputs_are_computed_in_fp32():
    # q·k of these magnitudes overflows fp16 (max 65504); the cores must upcast before multiplying.
    q, k, v = (t.float() * 200 for t in _qkv(d_k=16, n_q=20, n_k=20, seed=4))
    naive_scores = torch.matmul(q.half().transpose(1, 2), k.half())
    assert not torch.isfinite(naive_scores).all()  # the hazard is real at this scale
    for fn in (efficient_attention, dot_product_attention):
        out = fn(q.half(), k.half(), v.half())
        assert out.dtype == torch.float16 and torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), fn(q.half().float(), k.half().float(), v.half().float()),
                                   rtol=2e-3, atol=0.5)


@pytest.mark.parametrize("cls", [EfficientAttention, DotProductAttention])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_modules_give_finite_outputs_under_autocast(cls, dtype):
    torch.manual_seed(0)
    block = cls(32, 16, 32, heads=2)
    large = torch.randn(1, 32, 4, 8, 8) * 30  # sharp softmaxes, large products
    with torch.autocast("cpu", dtype=dtype):
        assert torch.isfinite(block(large)).all()
    # at ordinary magnitudes the result stays close to fp32 (only the projections are low precision)
    x = torch.randn(1, 32, 4, 8, 8)
    with torch.autocast("cpu", dtype=dtype):
        y = block(x)
    torch.testing.assert_close(y.float(), block(x), rtol=5e-2, atol=5e-2)
