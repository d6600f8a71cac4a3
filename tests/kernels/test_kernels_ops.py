"""torch.library registration: opcheck, gradcheck through the ops, torch.compile on CPU."""

from __future__ import annotations

import pytest
import torch

import mmcore_kernels as mk
from mmcore_kernels import ops, reference

OPS = torch.ops.mmcore_kernels


def _attn_args(dtype=torch.float32, kv_lens=None, kpm=None, requires_grad=True):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 2, 16, generator=gen, dtype=dtype) for n in (5, 7, 7))
    return (
        q.requires_grad_(requires_grad),
        k.requires_grad_(requires_grad),
        v.requires_grad_(requires_grad),
        kv_lens,
        kpm,
        0.25,
    )


ATTN_CASES = {
    "plain": dict(),
    "kv_lens": dict(kv_lens=torch.tensor([0, 5])),
    "mask+kv_lens": dict(
        kv_lens=torch.tensor([7, 4]), kpm=torch.tensor([[True] * 7, [False, True] * 3 + [True]])
    ),
}


@pytest.mark.parametrize("case", list(ATTN_CASES))
def test_opcheck_cross_attention(case):
    torch.library.opcheck(OPS.cross_attention.default, _attn_args(**ATTN_CASES[case]))


def test_opcheck_cross_attention_backward():
    q, k, v, kv_lens, kpm, scale = _attn_args(kv_lens=torch.tensor([3, 0]), requires_grad=False)
    out, lse = OPS.cross_attention(q, k, v, kv_lens, kpm, scale)
    torch.library.opcheck(
        OPS.cross_attention_backward.default, (torch.randn_like(out), q, k, v, out, lse, kv_lens, kpm, scale)
    )


@pytest.mark.parametrize("bias", [True, False])
def test_opcheck_concat_linear(bias):
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(3, 4, w, generator=gen, requires_grad=True) for w in (5, 7, 1)]
    w = torch.randn(6, 13, generator=gen, requires_grad=True)
    b = torch.randn(6, generator=gen, requires_grad=True) if bias else None
    torch.library.opcheck(OPS.concat_linear.default, (xs, w, b))
    torch.library.opcheck(
        OPS.concat_linear_grad_weight.default, (torch.randn(3, 4, 6), [x.detach() for x in xs])
    )


def test_op_outputs_match_reference_and_lse_is_not_differentiable():
    q, k, v, kv_lens, kpm, scale = _attn_args(kv_lens=torch.tensor([0, 6]))
    out, lse = OPS.cross_attention(q, k, v, kv_lens, kpm, scale)
    want = reference.cross_attention_naive(q, k, v, kv_lens=kv_lens, scale=scale)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    assert out.is_contiguous() and lse.shape == (2, 2, 5) and lse.dtype == torch.float32
    assert torch.isposinf(lse[0]).all()
    assert not lse.requires_grad


def test_gradcheck_through_ops():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (
        torch.randn(2, n, 2, 4, generator=gen, dtype=torch.float64, requires_grad=True) for n in (3, 5, 5)
    )
    kv_lens = torch.tensor([0, 4])
    kpm = torch.tensor([[True] * 5, [True, False, True, True, True]])
    assert torch.autograd.gradcheck(
        lambda q, k, v: ops.cross_attention(q, k, v, kv_lens, kpm, 0.7), (q, k, v)
    )
    xs = [torch.randn(2, 3, w, generator=gen, dtype=torch.float64, requires_grad=True) for w in (2, 3)]
    w = torch.randn(4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c, w, b: ops.concat_linear([a, c], w, b), (*xs, w, b))


@pytest.mark.slow  # ~25 s when it is the session's first Inductor compile (cold C++ toolchain)
def test_compile_ops_on_cpu():
    """The registered ops trace under torch.compile (fullgraph) and give eager's values and grads."""
    q, k, v, kv_lens, kpm, scale = _attn_args(kv_lens=torch.tensor([7, 2]))
    fn = torch.compile(lambda q, k, v, n: ops.cross_attention(q, k, v, n, None, 0.25), fullgraph=True)
    out = fn(q, k, v, kv_lens)
    out.sum().backward()
    grads = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    ops.cross_attention(q, k, v, kv_lens, None, 0.25).sum().backward()
    for a, t in zip(grads, (q, k, v), strict=True):
        torch.testing.assert_close(a, t.grad, atol=1e-5, rtol=1e-5)

    xs = [torch.randn(3, w, requires_grad=True) for w in (5, 7)]
    w = torch.randn(6, 12, requires_grad=True)
    cl = torch.compile(lambda a, c, w: ops.concat_linear([a, c], w, None), fullgraph=True)
    y = cl(*xs, w)
    y.sum().backward()
    torch.testing.assert_close(w.grad, torch.ones(3, 6).T @ torch.cat(xs, -1).detach())


@pytest.mark.slow  # ~25 s when it is the session's first Inductor compile
def test_compile_public_api_on_cpu():
    """The public functions (auto backend -> torch path on CPU) compile with fullgraph=True; the
    backend selection and validation trace without graph breaks."""
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, n, 2, 16, generator=gen, requires_grad=True) for n in (5, 7, 7))
    kv_lens = torch.tensor([0, 6])
    xs = [torch.randn(2, 5, w, generator=gen, requires_grad=True) for w in (3, 4)]
    w = torch.randn(8, 7, generator=gen, requires_grad=True)

    def model(q, k, v, kv_lens, a, c, w):
        att = mk.cross_attention(q, k, v, kv_lens=kv_lens)  # [2, 5, 2, 16]
        return att.sum() + mk.concat_linear([a, c], w).sum()

    compiled = torch.compile(model, fullgraph=True)
    loss = compiled(q, k, v, kv_lens, *xs, w)
    loss.backward()
    got = [t.grad.clone() for t in (q, k, v, *xs, w)]
    assert not any(torch.isnan(g).any() for g in got)
    for t in (q, k, v, *xs, w):
        t.grad = None
    eager = model(q, k, v, kv_lens, *xs, w)
    eager.backward()
    torch.testing.assert_close(loss, eager, atol=1e-4, rtol=1e-5)
    for g, t in zip(got, (q, k, v, *xs, w), strict=True):
        torch.testing.assert_close(g, t.grad, atol=1e-4, rtol=1e-4)
    assert torch.count_nonzero(got[0][0]) == 0  # sample 0 has no key: zero gradient, even compiled


def test_concat_linear_op_partial_requires_grad():
    """Only some inputs need grad: the others get None, the rest are right."""
    xs = [torch.randn(3, 4, requires_grad=True), torch.randn(3, 5)]
    w = torch.randn(6, 9)
    ops.concat_linear(xs, w, None).sum().backward()
    torch.testing.assert_close(xs[0].grad, torch.ones(3, 6) @ w[:, :4])
    assert xs[1].grad is None
    xs = [torch.randn(3, 4), torch.randn(3, 5)]
    w = torch.randn(6, 9, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    ops.concat_linear(xs, w, b).sum().backward()
    torch.testing.assert_close(w.grad, torch.ones(6, 3) @ torch.cat(xs, -1))
    torch.testing.assert_close(b.grad, torch.full((6,), 3.0))
