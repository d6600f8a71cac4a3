"""Fusions defined by a formula compute that formula; missing modalities reduce them as documented."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from mmcore import Features
from mmcore_plugins.fusions.bilinear import LowRankTensorFusion, TensorFusion, with_one
from mmcore_plugins.fusions.concat import WeightedConcatFusion
from mmcore_plugins.fusions.factorized import MCBFusion, MFBFusion, signed_sqrt
from mmcore_plugins.fusions.gating import GatedFusion
from mmcore_plugins.fusions.pooling import LateFusion, MeanFusion
from mmcore_plugins.heads.classification import ClassificationHead


def pooled_features(b: int, dims: dict[str, int], present: dict[str, torch.Tensor] | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    present = present or {}
    return {
        s: Features.from_pooled(torch.randn(b, d, generator=g), present.get(s, torch.ones(b, dtype=torch.bool)))
        for s, d in dims.items()
    }


# ---------------------------------------------------------------------- TFN / LMF
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


def test_low_rank_fusion_at_full_rank_is_exactly_tensor_fusion():
    """A full-rank CP decomposition of TFN's weight, loaded into LMF, computes TFN's output (N = 2 and 3).

    TFN: ``h_d = sum_{i,j,k} W[d,i,j,k] a_i b_j c_k``. Rank one term per index tuple (i,j,k):
    factor_a^(r)[:, d] = W[d,i,j,k] e_i, factor_b^(r) = e_j, factor_c^(r) = e_k (for every d).
    """
    for n in (2, 3):
        torch.manual_seed(n)
        width, dim = 2, 5
        slots = "abc"[:n]
        dims = {s: 3 + i for i, s in enumerate(slots)}
        tfn = TensorFusion(dims, dim=dim, factor_dim=width).eval()
        feats = pooled_features(4, dims, seed=n)
        vectors = tfn.factor_vectors(feats)  # [1; z_i] per slot
        lmf = LowRankTensorFusion({s: width for s in slots}, dim=dim, rank=(width + 1) ** n)
        weight = tfn.out.weight.detach().view(dim, *([width + 1] * n))
        with torch.no_grad():
            for r, index in enumerate(itertools.product(range(width + 1), repeat=n)):
                for position, s in enumerate(slots):
                    lmf.factors[s][r].zero_()
                    lmf.factors[s][r, index[position]] = weight[(slice(None), *index)] if position == 0 else 1.0
            lmf.rank_weights.fill_(1.0)
            lmf.bias.copy_(tfn.out.bias)
            assert torch.allclose(lmf.fuse_vectors(vectors), tfn(feats).pooled, atol=1e-5)


def test_low_rank_fusion_forward_is_the_cp_form_over_normalised_inputs():
    torch.manual_seed(0)
    lmf = LowRankTensorFusion({"a": 4, "b": 3}, dim=6, rank=2).eval()
    feats = pooled_features(3, {"a": 4, "b": 3}, present={"b": torch.tensor([True, False, True])})
    v = {s: with_one(lmf.norms[s](feats[s].pooled)) for s in "ab"}
    v["b"][1] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # absent: only the constant
    expected = sum(
        lmf.rank_weights[0, r] * (v["a"] @ lmf.factors["a"][r]) * (v["b"] @ lmf.factors["b"][r]) for r in range(2)
    ) + lmf.bias
    assert torch.allclose(lmf(feats).pooled, expected, atol=1e-5)


# ---------------------------------------------------------------------- bilinear poolings
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


def test_mcb_forward_and_an_absent_modality():
    torch.manual_seed(0)
    fusion = MCBFusion({"a": 5, "b": 4}, dim=3, sketch_dim=16).eval()
    feats = pooled_features(2, {"a": 5, "b": 4}, present={"b": torch.tensor([True, False])})
    xa, xb = fusion.norms["a"](feats["a"].pooled), fusion.norms["b"](feats["b"].pooled)
    conv = torch.fft.irfft(torch.fft.rfft(fusion.count_sketch("a", xa)) * torch.fft.rfft(fusion.count_sketch("b", xb)), n=16)
    both = fusion.out(F.normalize(signed_sqrt(conv[0]), dim=-1))
    alone = fusion.out(F.normalize(signed_sqrt(fusion.count_sketch("a", xa)[1]), dim=-1))  # delta: a's sketch alone
    out = fusion(feats).pooled
    assert torch.allclose(out[0], both, atol=1e-5) and torch.allclose(out[1], alone, atol=1e-5)


def test_mfb_is_sum_pooled_product_then_power_and_l2_normalisation():
    torch.manual_seed(0)
    fusion = MFBFusion({"a": 5, "b": 4}, dim=3, factors=2, dropout=0.0).eval()
    feats = pooled_features(2, {"a": 5, "b": 4})
    u = fusion.project["a"](fusion.norms["a"](feats["a"].pooled))
    v = fusion.project["b"](fusion.norms["b"](feats["b"].pooled))
    z = (u * v).view(2, 3, 2).sum(-1)
    assert torch.allclose(fusion(feats).pooled, F.normalize(signed_sqrt(z), dim=-1), atol=1e-6)


# ---------------------------------------------------------------------- gating and pooling
def test_gmu_with_two_modalities_is_the_papers_sigmoid_gate():
    """``h = z h_a + (1 - z) h_b`` with ``z = sigmoid(W_z [x_a; x_b])`` (Arevalo et al. 2017, eq. 1-4)."""
    torch.manual_seed(0)
    fusion = GatedFusion({"a": 5, "b": 4}, dim=3).eval()
    feats = pooled_features(4, {"a": 5, "b": 4}, present={"b": torch.tensor([True, True, False, True])})
    xa, xb = fusion.norms["a"](feats["a"].pooled), fusion.norms["b"](feats["b"].pooled)
    ha, hb = torch.tanh(fusion.hidden["a"](xa)), torch.tanh(fusion.hidden["b"](xb))
    logits = fusion.gate(torch.cat([xa, xb], -1)).view(4, 2, 3)
    z = torch.sigmoid(logits[:, 0] - logits[:, 1])
    out = fusion(feats).pooled
    keep = [0, 1, 3]
    assert torch.allclose(out[keep], (z * ha + (1 - z) * hb)[keep], atol=1e-6)
    assert torch.allclose(out[2], ha[2], atol=1e-6)  # b absent: the gate gives a everything


def test_mean_fusion_averages_only_present_modalities():
    torch.manual_seed(0)
    fusion = MeanFusion({"a": 4, "b": 4}, dim=3).eval()
    feats = pooled_features(2, {"a": 4, "b": 4}, present={"b": torch.tensor([True, False])})
    pa = fusion.project["a"](feats["a"].pooled)
    pb = fusion.project["b"](feats["b"].pooled)
    out = fusion(feats).pooled
    assert torch.allclose(out[0], (pa[0] + pb[0]) / 2, atol=1e-6)
    assert torch.allclose(out[1], pa[1], atol=1e-6)


def test_weighted_concat_renormalises_the_learned_weights_over_present_modalities():
    torch.manual_seed(0)
    fusion = WeightedConcatFusion({"a": 4, "b": 3, "c": 2}, dim=5, activation="none").eval()
    with torch.no_grad():
        fusion.scores.copy_(torch.tensor([0.0, 1.0, 2.0]))
    feats = pooled_features(2, {"a": 4, "b": 3, "c": 2}, present={"b": torch.tensor([True, False])})
    normed = [fusion.norms[s](feats[s].pooled) for s in "abc"]
    out = fusion(feats).pooled
    for row, alive in ((0, [0, 1, 2]), (1, [0, 2])):
        w = torch.zeros(3)
        w[alive] = torch.softmax(fusion.scores.detach()[alive], 0)
        x = torch.cat([3 * w[i] * normed[i][row] for i in range(3)])
        assert torch.allclose(out[row], fusion.linear(x), atol=1e-5)


def test_late_fusion_with_a_linear_head_averages_per_modality_predictions():
    """With a linear head, classifying the combined decision == the weighted mean of per-modality logits."""
    torch.manual_seed(0)
    fusion = LateFusion({"a": 4, "b": 3, "c": 5}, dim=6, combine="learned").eval()
    with torch.no_grad():
        fusion.scores.copy_(torch.tensor([0.5, -1.0, 2.0]))
    head = ClassificationHead(6, num_classes=3).eval()
    feats = pooled_features(3, {"a": 4, "b": 3, "c": 5}, present={"c": torch.tensor([True, False, True])})
    logits = head(fusion(feats)).logits
    per_modality = {s: head.net(fusion.decide[s](fusion.project[s](feats[s].pooled))) for s in "abc"}
    for row, alive in ((0, "abc"), (1, "ab")):
        w = torch.softmax(torch.stack([fusion.scores["abc".index(s)] for s in alive]).detach(), 0)
        expected = sum(wi * per_modality[s][row] for wi, s in zip(w, alive, strict=True))
        assert torch.allclose(logits[row], expected, atol=1e-5)


def test_film_ignores_non_finite_padding_of_its_target_in_values_and_gradients():
    from mmcore_plugins.fusions.gating import FiLMFusion

    torch.manual_seed(0)
    fusion = FiLMFusion({"a": 4, "b": 3}, dim=8)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    results = []
    for pad in (0.0, float("inf")):
        tokens = torch.where(mask[..., None], torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1)),
                             torch.full((2, 3, 4), pad))
        condition = torch.randn(2, 3, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
        present = torch.ones(2, dtype=torch.bool)
        out = fusion({"a": Features(tokens=tokens, mask=mask, pooled=tokens[:, 0], present=present),
                      "b": Features(tokens=condition[:, None].detach(), mask=present[:, None].clone(), pooled=condition,
                                    present=present)})
        fusion.zero_grad()
        out.pooled.sum().backward()
        results.append((out.pooled.detach(), condition.grad, [p.grad.clone() for p in fusion.parameters() if p.grad is not None]))
    (clean, clean_grad, clean_params), (padded, padded_grad, padded_params) = results
    torch.testing.assert_close(padded, clean)
    torch.testing.assert_close(padded_grad, clean_grad)
    for a, b in zip(padded_params, clean_params, strict=True):
        torch.testing.assert_close(a, b)
