"""Fusions defined by a formula compute that formula; attention fusions match naive attention."""

from __future__ import annotations

import pytest
import torch

import mmcore_kernels
from mmcore import Features
from mmcore.testing import random_features
from mmcore_kernels.reference import cross_attention_naive
from mmcore_plugins.fusions.attention import (
    BottleneckFusion,
    CoAttentionFusion,
    CrossAttentionFusion,
    JointTransformerFusion,
    MulTFusion,
    NonLocalGateFusion,
    PerceiverFusion,
)
from mmcore_plugins.fusions.bilinear import LowRankTensorFusion, TensorFusion, with_one
from mmcore_plugins.fusions.factorized import MCBFusion
from mmcore_plugins.fusions.pooling import MeanFusion


def pooled_features(b, dims, present=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    present = present or {}
    return {
        s: Features.from_pooled(torch.randn(b, d, generator=g), present.get(s, torch.ones(b, dtype=torch.bool)))
        for s, d in dims.items()
    }


def test_tensor_fusion_is_the_outer_product_with_appended_ones():
    torch.manual_seed(0)
    fusion = TensorFusion({"a": 5, "b": 3, "c": 4}, dim=8, factor_dim=2).eval()
    feats = pooled_features(4, {"a": 5, "b": 3, "c": 4})
    z = {s: with_one(fusion.factors[s](feats[s].pooled)) for s in "abc"}
    expected = torch.einsum("bi,bj,bk->bijk", z["a"], z["b"], z["c"]).flatten(1)
    assert torch.allclose(fusion.fused_tensor(feats), expected, atol=1e-6)
    assert torch.allclose(fusion(feats).pooled, fusion.out(expected), atol=1e-5)


def test_tensor_fusion_keeps_only_the_constant_of_an_absent_modality():
    torch.manual_seed(0)
    fusion = TensorFusion({"a": 5, "b": 3}, dim=8, factor_dim=2).eval()
    feats = pooled_features(3, {"a": 5, "b": 3}, present={"b": torch.tensor([True, False, True])})
    z_a = with_one(fusion.factors["a"](feats["a"].pooled))
    t = fusion.fused_tensor(feats).view(3, 3, 3)
    assert torch.allclose(t[1, :, 0], z_a[1]) and torch.equal(t[1, :, 1:], torch.zeros(3, 2))


def test_low_rank_fusion_at_full_rank_equals_tensor_fusion():
    """LMF with rank (d_a+1)(d_b+1) and factors built from TFN's weight computes exactly TFN."""
    torch.manual_seed(0)
    da, dim = 3, 5  # TFN uses one factor width for every modality
    tfn = TensorFusion({"a": 7, "b": 6}, dim=dim, factor_dim=da).eval()
    feats = pooled_features(4, {"a": 7, "b": 6})
    z = {s: Features.from_pooled(tfn.factors[s](feats[s].pooled)) for s in "ab"}
    lmf = LowRankTensorFusion({"a": da, "b": da}, dim=dim, rank=(da + 1) ** 2)
    weight = tfn.out.weight.detach().view(dim, da + 1, da + 1)  # W[d, i, j]
    with torch.no_grad():
        for r in range((da + 1) ** 2):
            i, j = divmod(r, da + 1)
            lmf.factors["a"][r].zero_()
            lmf.factors["a"][r, i] = weight[:, i, j]
            lmf.factors["b"][r].zero_()
            lmf.factors["b"][r, j] = 1.0
        lmf.rank_weights.fill_(1.0)
        lmf.bias.copy_(tfn.out.bias)
        assert torch.allclose(lmf(z).pooled, tfn(feats).pooled, atol=1e-5)


def test_mean_fusion_averages_only_present_modalities():
    torch.manual_seed(0)
    fusion = MeanFusion({"a": 4, "b": 4}, dim=3).eval()
    feats = pooled_features(2, {"a": 4, "b": 4}, present={"b": torch.tensor([True, False])})
    pa = fusion.project["a"](feats["a"].pooled)
    pb = fusion.project["b"](feats["b"].pooled)
    out = fusion(feats).pooled
    assert torch.allclose(out[0], (pa[0] + pb[0]) / 2, atol=1e-6)
    assert torch.allclose(out[1], pa[1], atol=1e-6)


@pytest.mark.parametrize(
    "factory",
    [CrossAttentionFusion, PerceiverFusion, NonLocalGateFusion, CoAttentionFusion, MulTFusion,
     JointTransformerFusion, BottleneckFusion],
)
def test_attention_fusions_match_naive_attention_math(factory, monkeypatch):
    torch.manual_seed(0)
    dims = {"a": 6, "b": 10, "c": 4}
    fusion = factory(dims, dim=16, heads=4).eval()
    g = torch.Generator().manual_seed(3)
    present = {s: torch.tensor([True, True, False, True, False]) if s != "a" else torch.tensor([True, False, True, True, False]) for s in dims}
    feats = {s: random_features(5, d, 6, present=present[s], generator=g) for s, d in dims.items()}
    with mmcore_kernels.backend("torch"):
        through_kernel = fusion(feats)
    monkeypatch.setattr(mmcore_kernels, "cross_attention", lambda q, k, v, **kw: cross_attention_naive(q, k, v, **kw))
    naive = fusion(feats)
    assert torch.allclose(through_kernel.tokens, naive.tokens, atol=1e-5)
    assert torch.allclose(through_kernel.pooled, naive.pooled, atol=1e-5)
    assert torch.equal(through_kernel.present, naive.present)


def test_bad_options_are_clear():
    with pytest.raises(ValueError, match=r"query must be one of the modalities \['a', 'b'\], got 'c'"):
        CrossAttentionFusion({"a": 3, "b": 4}, dim=8, heads=2, query="c")
    with pytest.raises(ValueError, match=r"dim \(10\) must be a positive multiple of heads \(4\)"):
        PerceiverFusion({"a": 3, "b": 4}, dim=10, heads=4)
    with pytest.raises(ValueError, match="built for modalities"):
        MeanFusion({"a": 3, "b": 4}, dim=8)(pooled_features(2, {"a": 3}))


def test_mcb_sketch_product_is_the_count_sketch_of_the_outer_product():
    """Circular convolution of the count sketches == count sketch of x (outer) y (Pham & Pagh)."""
    fusion = MCBFusion({"a": 5, "b": 4}, dim=3, sketch_dim=16, seed=1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 5, generator=g), torch.randn(1, 4, generator=g)
    ha, hb = fusion.sketch_a.abs().argmax(1), fusion.sketch_b.abs().argmax(1)
    sa, sb = fusion.sketch_a.sum(1), fusion.sketch_b.sum(1)
    direct = torch.zeros(16)
    for i in range(5):
        for j in range(4):
            direct[(ha[i] + hb[j]) % 16] += sa[i] * sb[j] * x[0, i] * y[0, j]
    spectra = torch.fft.rfft(fusion.count_sketch("a", x), dim=-1) * torch.fft.rfft(fusion.count_sketch("b", y), dim=-1)
    assert torch.allclose(torch.fft.irfft(spectra, n=16, dim=-1)[0], direct, atol=1e-5)
