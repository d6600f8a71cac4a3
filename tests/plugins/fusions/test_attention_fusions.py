"""Attention fusions: the kernel path equals textbook masked attention, and the kernel gets views, not copies."""

from __future__ import annotations

import pytest
import torch

import mmcore_kernels
from mmcore.testing import random_features
from mmcore_plugins.fusions.attention import (
    BottleneckFusion,
    CoAttentionFusion,
    CrossAttentionFusion,
    JointTransformerFusion,
    MulTFusion,
    PerceiverFusion,
)
from mmcore_plugins.fusions.gating import NonLocalGateFusion
from mmcore_plugins.layers.attention import MultiHeadAttention, key_lengths

ATTENTION_FUSIONS = [
    CrossAttentionFusion, CoAttentionFusion, MulTFusion, JointTransformerFusion, BottleneckFusion, PerceiverFusion,
    NonLocalGateFusion,
]


def naive_attention(q, k, v, *, kv_lens=None, key_padding_mask=None, scale=None):
    """``softmax(q k^T / sqrt(d)) v`` per head with masked keys at -inf; a row without keys gives zeros."""
    b, _, _, d = q.shape
    scale = d**-0.5 if scale is None else scale
    valid = torch.ones(b, k.shape[1], dtype=torch.bool)
    if key_padding_mask is not None:
        valid &= key_padding_mask
    if kv_lens is not None:
        valid &= torch.arange(k.shape[1])[None, :] < kv_lens[:, None]
    scores = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) * scale
    probs = scores.masked_fill(~valid[:, None, None, :], float("-inf")).softmax(-1)
    probs = torch.nan_to_num(probs, nan=0.0)  # all keys masked: softmax of all -inf
    return torch.einsum("bhqk,bkhd->bqhd", probs, v.double()).to(q.dtype)


def ragged_inputs(requires_grad: bool = False):
    dims = {"a": 6, "b": 10, "c": 4}
    g = torch.Generator().manual_seed(3)
    present = {
        "a": torch.tensor([True, False, True, True, False, False]),
        "b": torch.tensor([True, True, False, True, False, True]),
        "c": torch.tensor([True, True, False, False, True, False]),
    }
    return dims, {s: random_features(6, d, 5, present=present[s], generator=g, requires_grad=requires_grad) for s, d in dims.items()}


@pytest.mark.parametrize("factory", ATTENTION_FUSIONS, ids=lambda f: f.__name__)
def test_attention_fusions_through_the_kernel_equal_naive_attention(factory, monkeypatch):
    dims, feats = ragged_inputs(requires_grad=True)
    torch.manual_seed(0)
    fusion = factory(dims, dim=16, heads=4).eval()

    def run():
        for f in feats.values():
            f.tokens.grad = None
        out = fusion(feats)
        (out.pooled.square().sum() + (out.tokens * out.mask[..., None]).sum()).backward()
        return out, [f.tokens.grad.clone() for f in feats.values()]

    with mmcore_kernels.backend("torch"):
        through_kernel, kernel_grads = run()
    monkeypatch.setattr(mmcore_kernels, "cross_attention", naive_attention)
    naive, naive_grads = run()
    assert torch.allclose(through_kernel.tokens, naive.tokens, atol=1e-5)
    assert torch.allclose(through_kernel.pooled, naive.pooled, atol=1e-5)
    assert torch.equal(through_kernel.mask, naive.mask) and torch.equal(through_kernel.present, naive.present)
    for a, b in zip(kernel_grads, naive_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("factory", ATTENTION_FUSIONS, ids=lambda f: f.__name__)
def test_attention_fusions_through_the_triton_kernel_equal_the_torch_path(factory):
    """The projections' strided [B, L, H, D] views, key masks and key-less rows through the real Triton
    kernel (compiled on CUDA, the Triton interpreter on CPU): same outputs and input gradients."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if "triton" not in mmcore_kernels.available_backends(device):
        pytest.skip(f"the Triton kernel cannot run on {device} here")
    g = torch.Generator().manual_seed(5)
    dims = {"a": 6, "b": 10}
    present = {"a": torch.tensor([True, False, True]), "b": torch.tensor([True, True, False])}
    feats = {s: random_features(3, d, 4, present=present[s], generator=g).to(device) for s, d in dims.items()}
    for f in feats.values():
        f.tokens.requires_grad_(True)
    torch.manual_seed(0)
    fusion = factory(dims, dim=32, heads=2).to(device)  # head dim 16: one the Triton kernel supports
    results = []
    for backend in ("torch", "triton"):
        for f in feats.values():
            f.tokens.grad = None
        with mmcore_kernels.backend(backend):
            out = fusion(feats)
            (out.pooled.square().sum() + (out.tokens * out.mask[..., None]).sum()).backward()
        results.append((out.tokens.detach(), out.pooled.detach(), [f.tokens.grad.clone() for f in feats.values()]))
    (tokens, pooled, grads), (tokens_t, pooled_t, grads_t) = results
    assert torch.allclose(tokens, tokens_t, atol=1e-4) and torch.allclose(pooled, pooled_t, atol=1e-4)
    for a, b in zip(grads, grads_t, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_multi_head_attention_is_the_textbook_formula():
    torch.manual_seed(0)
    attention = MultiHeadAttention(8, heads=2).eval()
    x, context = torch.randn(3, 4, 8), torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    wq, wk, wv = attention.in_proj.weight.split(8)
    bq, bk, bv = attention.in_proj.bias.split(8)

    def expected(queries, keys, key_mask):
        q = (queries @ wq.T + bq).view(3, -1, 2, 4)
        k = (keys @ wk.T + bk).view(3, -1, 2, 4)
        v = (keys @ wv.T + bv).view(3, -1, 2, 4)
        return attention.out_proj(naive_attention(q, k, v, key_padding_mask=key_mask).reshape(3, -1, 8))

    assert torch.allclose(attention(x, context, mask), expected(x, context, mask), atol=1e-5)
    self_mask = mask[:, :4]
    assert torch.allclose(attention(x, key_mask=self_mask), expected(x, x, self_mask), atol=1e-5)
    # A query without a single valid key gets exactly the output bias (zero attention), never NaN.
    assert torch.allclose(attention(x, context, mask)[1], attention.out_proj.bias.expand(4, 8))


def test_the_kernel_receives_views_of_the_projection_outputs(monkeypatch):
    seen = []

    def spy(q, k, v, **kwargs):
        seen.append((q, k, v))
        return naive_attention(q, k, v, **kwargs)

    monkeypatch.setattr(mmcore_kernels, "cross_attention", spy)
    attention = MultiHeadAttention(8, heads=2)
    x, context = torch.randn(3, 4, 8), torch.randn(3, 5, 8)
    attention(x)
    attention(x, context)
    (q, k, v), (q2, k2, v2) = seen
    assert q.shape == (3, 4, 2, 4) and k2.shape == (3, 5, 2, 4)
    # Self-attention: q, k and v are three strided views of one [B, L, 3 * dim] projection output.
    assert q.untyped_storage().data_ptr() == k.untyped_storage().data_ptr() == v.untyped_storage().data_ptr()
    assert not k.is_contiguous() and k.stride() == (4 * 24, 24, 4, 1)
    # Cross-attention: k and v share the key/value projection's output.
    assert k2.untyped_storage().data_ptr() == v2.untyped_storage().data_ptr()


def test_key_lengths_is_one_past_the_last_real_key():
    mask = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert key_lengths(mask).tolist() == [3, 0, 4]
