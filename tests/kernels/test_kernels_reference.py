"""The PyTorch fallbacks (the "torch" backend) against naive float64 math."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmcore_kernels as mk
from mmcore_kernels import reference

TOL = {
    torch.float64: {"atol": 1e-10, "rtol": 1e-8},
    torch.float32: {"atol": 2e-5, "rtol": 1e-4},
    torch.float16: {"atol": 4e-3, "rtol": 1e-2},
    torch.bfloat16: {"atol": 3e-2, "rtol": 5e-2},
}


def textbook_attention(q, k, v, valid, scale):
    """Independent of mmcore_kernels: loops over samples, drops masked keys outright."""
    out = torch.zeros_like(q)
    for b in range(q.shape[0]):
        keep = valid[b] if valid is not None else torch.ones(k.shape[1], dtype=torch.bool)
        if not keep.any():
            continue
        kb, vb = k[b][keep], v[b][keep]  # [n, H, D]
        s = torch.einsum("qhd,khd->hqk", q[b], kb) * scale
        out[b] = torch.einsum("hqk,khd->qhd", torch.softmax(s, -1), vb)
    return out


def random_valid(b, lk, gen, kind):
    kv_lens = kpm = None
    if kind in ("kv_lens", "both"):
        kv_lens = torch.randint(0, lk + 1, (b,), generator=gen)
    if kind in ("kpm", "both"):
        kpm = torch.rand(b, lk, generator=gen) < 0.6
    return kv_lens, kpm


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 3),
    lq=st.integers(1, 20),
    lk=st.integers(1, 20),
    d=st.integers(1, 40),
    kind=st.sampled_from(["none", "kv_lens", "kpm", "both"]),
    scale=st.one_of(st.none(), st.floats(0.05, 2.0)),
    seed=st.integers(0, 2**16),
)
def test_property_fallback_matches_textbook(b, h, lq, lk, d, kind, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, lq, h, d, generator=gen, dtype=torch.float64)
    k = torch.randn(b, lk, h, d, generator=gen, dtype=torch.float64)
    v = torch.randn(b, lk, h, d, generator=gen, dtype=torch.float64)
    kv_lens, kpm = random_valid(b, lk, gen, kind)
    valid = reference.key_valid_mask(b, lk, kv_lens, kpm, q.device)
    want = textbook_attention(q, k, v, valid, scale if scale is not None else 1 / math.sqrt(d))
    got = mk.cross_attention(q, k, v, kv_lens=kv_lens, key_padding_mask=kpm, scale=scale, backend="torch")
    naive = reference.cross_attention_naive(q, k, v, kv_lens=kv_lens, key_padding_mask=kpm, scale=scale)
    torch.testing.assert_close(got, want, **TOL[torch.float64])
    torch.testing.assert_close(naive, want, **TOL[torch.float64])


@pytest.mark.parametrize("kind", ["kv_lens", "kpm", "both"])
def test_fallback_gradients_match_naive_and_masked_rows_are_exactly_zero(kind):
    gen = torch.Generator().manual_seed(3)
    b, lq, lk, h, d = 3, 6, 9, 2, 8
    q, k, v = (torch.randn(b, n, h, d, generator=gen, dtype=torch.float64) for n in (lq, lk, lk))
    kv_lens, kpm = random_valid(b, lk, gen, kind)
    if kv_lens is not None:
        kv_lens[1] = 0
    if kpm is not None:
        kpm[1] = False
    grads = []
    for fn in (
        lambda *a: mk.cross_attention(*a, kv_lens=kv_lens, key_padding_mask=kpm, backend="torch"),
        lambda *a: reference.cross_attention_naive(*a, kv_lens=kv_lens, key_padding_mask=kpm),
    ):
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        out = fn(qq, kk, vv)
        out.backward(torch.ones_like(out))
        assert not any(torch.isnan(t).any() for t in (out, qq.grad, kk.grad, vv.grad))
        assert torch.count_nonzero(out[1]) == 0
        assert torch.count_nonzero(qq.grad[1]) == 0
        assert torch.count_nonzero(kk.grad[1]) == 0 and torch.count_nonzero(vv.grad[1]) == 0
        grads.append((out, qq.grad, kk.grad, vv.grad))
    for a, c in zip(*grads, strict=True):
        torch.testing.assert_close(a, c, **TOL[torch.float64])


def test_fallback_gradcheck_with_masked_samples():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(2, n, 2, 4, generator=gen, dtype=torch.float64, requires_grad=True) for n in (3, 5, 5)
    )
    kv_lens = torch.tensor([0, 3])
    assert torch.autograd.gradcheck(
        lambda q, k, v: mk.cross_attention(q, k, v, kv_lens=kv_lens, backend="torch"), (q, k, v)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fallback_low_precision(dtype):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, n, 3, 32, generator=gen) for n in (7, 33, 33))
    kv_lens = torch.tensor([33, 12])
    want = reference.cross_attention_naive(q.double(), k.double(), v.double(), kv_lens=kv_lens)
    got = mk.cross_attention(q.to(dtype), k.to(dtype), v.to(dtype), kv_lens=kv_lens, backend="torch")
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, atol=TOL[dtype]["atol"], rtol=TOL[dtype]["rtol"])


def test_fallback_takes_strided_views_without_copy():
    """SDPA gets transpose views: the inputs' storage is what SDPA reads (no .contiguous())."""
    kv = torch.randn(2, 9, 2, 3, 16)
    k, v = kv[:, :, 0], kv[:, :, 1]
    q = torch.randn(2, 3, 5, 16).transpose(1, 2)
    out = mk.cross_attention(q, k, v, backend="torch")
    want = reference.cross_attention_naive(q, k, v)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    assert out.shape == (2, 5, 3, 16)


def test_lse_and_explicit_backward_match_autograd():
    """The dense backward the ops use on CPU equals autograd of the naive math."""
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, n, 2, 8, generator=gen, dtype=torch.float64) for n in (4, 6, 6))
    kv_lens, kpm = torch.tensor([0, 5]), torch.rand(2, 6, generator=gen) < 0.7
    valid = reference.key_valid_mask(2, 6, kv_lens, kpm, q.device)
    qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
    out = reference.cross_attention_naive(qq, kk, vv, kv_lens=kv_lens, key_padding_mask=kpm, scale=0.4)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    out.backward(g)
    lse = reference.cross_attention_lse(q, k, valid, 0.4)
    assert torch.isposinf(lse[0]).all()
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * 0.4
    torch.testing.assert_close(lse[1], torch.logsumexp(s[1].masked_fill(~valid[1], float("-inf")), -1))
    dq, dk, dv = reference.cross_attention_backward_reference(g, q, k, v, out.detach(), lse, valid, 0.4)
    torch.testing.assert_close(dq, qq.grad)
    torch.testing.assert_close(dk, kk.grad)
    torch.testing.assert_close(dv, vv.grad)


# ------------------------------------------------------------------------------------------------
# concat_linear
# ------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    lead=st.lists(st.integers(0, 5), min_size=1, max_size=3),
    widths=st.lists(st.integers(0, 12), min_size=1, max_size=6),
    n=st.integers(1, 12),
    bias=st.booleans(),
    method=st.sampled_from(["addmm", "cat"]),
    seed=st.integers(0, 2**16),
)
def test_property_concat_linear_fallback_matches_math(lead, widths, n, bias, method, seed):
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(*lead, w, generator=gen, dtype=torch.float64, requires_grad=True) for w in widths]
    w = torch.randn(n, sum(widths), generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(n, generator=gen, dtype=torch.float64, requires_grad=True) if bias else None
    got = reference.concat_linear_reference(xs, w, b, method=method)
    # Naive math, written without cat or linear: sum over segments of x_i @ w_i^T.
    want = sum(
        x @ w[:, off : off + x.shape[-1]].T
        for x, off in zip(xs, [sum(widths[:i]) for i in range(len(widths))], strict=True)
    )
    if b is not None:
        want = want + b
    assert got.shape == (*lead, n)
    torch.testing.assert_close(got, want, **TOL[torch.float64])
    if got.numel():
        params = [*xs, w] + ([b] if b is not None else [])
        g = torch.randn(got.shape, generator=gen, dtype=torch.float64)
        ga = torch.autograd.grad(got, params, g, allow_unused=True)
        gb = torch.autograd.grad(want, params, g, allow_unused=True)
        for a, c in zip(ga, gb, strict=True):
            torch.testing.assert_close(a, c, **TOL[torch.float64])


def _graph_names(out):
    names, stack = set(), [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        names.add(node.name())
        stack.extend(fn for fn, _ in node.next_functions)
    return names


def test_concat_linear_addmm_method_never_builds_the_concatenation():
    xs = [torch.randn(3, 4, 5, requires_grad=True), torch.randn(3, 4, 7, requires_grad=True)]
    w = torch.randn(6, 12, requires_grad=True)
    out = reference.concat_linear_reference(xs, w, method="addmm")
    torch.testing.assert_close(out, F.linear(torch.cat(xs, -1), w))
    # No concatenated activation among what autograd keeps: the graph is per-segment GEMMs.
    names = _graph_names(out)
    assert not any("Cat" in n for n in names), names


def test_concat_linear_auto_method_picks_by_the_size_of_the_concatenation():
    limit = reference.CONCAT_LINEAR_ADDMM_FROM
    assert reference.CONCAT_LINEAR_DEFAULT_METHOD == "auto"
    assert reference.concat_linear_method(1, limit - 1) == "cat"
    assert reference.concat_linear_method(limit // 1024, 1024) == "addmm"
    small = [torch.randn(4, 5, requires_grad=True), torch.randn(4, 7, requires_grad=True)]
    w = torch.randn(6, 12, requires_grad=True)
    out = mk.concat_linear(small, w, backend="torch")
    torch.testing.assert_close(out, F.linear(torch.cat(small, -1), w))
    assert any("Cat" in n for n in _graph_names(out)), "small inputs: one GEMM on the concatenation"
    rows = limit // 12 + 1
    large = [torch.randn(rows, 5, requires_grad=True), torch.randn(rows, 7, requires_grad=True)]
    out = mk.concat_linear(large, w, backend="torch")
    torch.testing.assert_close(out, F.linear(torch.cat(large, -1), w), atol=1e-4, rtol=1e-4)
    assert not any("Cat" in n for n in _graph_names(out)), "large inputs: per-segment GEMMs"


def test_concat_linear_backward_helper_matches_autograd():
    gen = torch.Generator().manual_seed(4)
    xs = [torch.randn(2, 3, w, generator=gen, dtype=torch.float64, requires_grad=True) for w in (4, 1, 6)]
    w = torch.randn(5, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    out = F.linear(torch.cat(xs, -1), w, b)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    out.backward(g)
    dxs, dw, db = reference.concat_linear_backward(g, xs, w, [True, False, True], True, True)
    torch.testing.assert_close(dxs[0], xs[0].grad)
    assert dxs[1] is None
    torch.testing.assert_close(dxs[2], xs[2].grad)
    torch.testing.assert_close(dw, w.grad)
    torch.testing.assert_close(db, b.grad)
