"""The contrastive head: CLIP's symmetric InfoNCE, missing modalities, recall@K metrics, and it learns retrieval."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchmetrics import Metric

import mmcore
from mmcore import Features
from mmcore_plugins.heads.contrastive import ContrastiveHead
from mmcore_plugins.heads.metrics import RetrievalRecall


def paired_samples(n: int, seed: int) -> list[dict]:
    """Two views of one latent vector: 'a' and 'b' are different noisy linear maps of it."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.Generator().manual_seed(99)
    wa, wb = torch.randn(4, 6, generator=maps), torch.randn(4, 5, generator=maps)
    z = torch.randn(n, 4, generator=g)
    a, b = z @ wa + 0.05 * torch.randn(n, 6, generator=g), z @ wb + 0.05 * torch.randn(n, 5, generator=g)
    return [{"inputs": {"a": a[i].tolist(), "b": b[i].tolist()}, "target": i} for i in range(n)]


def recall(model, samples) -> dict[str, float]:
    model.eval()
    batch = model.collate(samples)
    with torch.no_grad():
        out = model(batch["inputs"], batch["targets"])
    metrics = model.head.metrics()
    for metric in metrics.values():
        metric.update(out.predictions, batch["targets"])
    return {name: float(metric.compute()) for name, metric in metrics.items()}


def test_contrastive_recall_rises_with_training():
    torch.manual_seed(0)
    model = mmcore.build_model({
        "encoders": {"a": {"name": "tabular_mlp", "num_features": 6, "dim": 32}, "b": {"name": "tabular_mlp", "num_features": 5, "dim": 32}},
        "fusion": {"name": "mean", "dim": 8},
        "head": {"name": "contrastive", "embed_dim": 16},
    })
    train, test = paired_samples(256, seed=1), paired_samples(64, seed=2)
    model.fit_processors(train)
    before = recall(model, test)
    batch = model.collate(train)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        out = model(batch["inputs"], batch["targets"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    after = recall(model, test)
    assert set(after) == {f"recall@{k}_{d}" for k in (1, 5, 10) for d in ("ab", "ba")} | {"median_rank_ab", "median_rank_ba"}
    assert before["median_rank_ab"] > 5 and after["median_rank_ab"] == 1.0 and after["median_rank_ba"] == 1.0
    assert before["recall@1_ab"] < 0.2 and after["recall@1_ab"] > 0.6, f"recall@1 {before} -> {after}"
    assert after["recall@1_ba"] > 0.6 and after["recall@10_ab"] >= after["recall@5_ab"] >= after["recall@1_ab"]


def test_loss_is_clips_symmetric_cross_entropy():
    torch.manual_seed(0)
    head = ContrastiveHead(8, {"a": 4, "b": 3}, embed_dim=5, temperature=0.1)
    a, b = Features.from_pooled(torch.randn(5, 4)), Features.from_pooled(torch.randn(5, 3))
    out = head(a, torch.arange(5), {"a": a, "b": b})
    ea, eb = F.normalize(head.project["a"](a.pooled), dim=-1), F.normalize(head.project["b"](b.pooled), dim=-1)
    logits = ea @ eb.T / 0.1
    expected = (F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.T, torch.arange(5))) / 2
    assert torch.allclose(out.logits, logits, atol=1e-5) and torch.allclose(out.loss, expected, atol=1e-5)
    out.loss.backward()
    assert head.logit_scale.grad is not None and head.logit_scale.grad != 0  # the temperature is learned
    assert torch.equal(out.predictions, torch.stack([ea, eb], 1).detach())


def test_samples_sharing_a_pair_id_are_positives_not_negatives():
    torch.manual_seed(0)
    head = ContrastiveHead(8, {"a": 4, "b": 3}, embed_dim=5)
    a, b = Features.from_pooled(torch.randn(3, 4)), Features.from_pooled(torch.randn(3, 3))
    out = head(a, torch.tensor([7, 7, 9]), {"a": a, "b": b})
    logp = out.logits.log_softmax(1)
    row_ab = -torch.stack([logp[0, :2].mean(), logp[1, :2].mean(), logp[2, 2]])
    logp_t = out.logits.T.log_softmax(1)
    row_ba = -torch.stack([logp_t[0, :2].mean(), logp_t[1, :2].mean(), logp_t[2, 2]])
    assert torch.allclose(out.loss, (row_ab.mean() + row_ba.mean()) / 2, atol=1e-5)


def test_samples_missing_either_modality_are_left_out():
    torch.manual_seed(0)
    head = ContrastiveHead(8, {"a": 4, "b": 3}, embed_dim=5)
    a = Features.from_pooled(torch.randn(4, 4), torch.tensor([True, True, False, True]))
    b = Features.from_pooled(torch.randn(4, 3))
    out = head(a, torch.arange(4), {"a": a, "b": b})
    kept = out.logits[[0, 1, 3]][:, [0, 1, 3]]
    expected = (F.cross_entropy(kept, torch.arange(3)) + F.cross_entropy(kept.T, torch.arange(3))) / 2
    assert torch.allclose(out.loss, expected, atol=1e-5)
    assert torch.isnan(out.predictions[2]).all() and head.format_predictions(out)[2] is None
    nobody = Features.from_pooled(torch.randn(4, 4), torch.zeros(4, dtype=torch.bool))
    empty = head(nobody, torch.arange(4), {"a": nobody, "b": b})
    assert empty.loss.item() == 0.0 and empty.loss.requires_grad


def test_modalities_option_and_errors():
    head = ContrastiveHead(8, {"x": 4, "y": 3, "z": 2}, modalities=["z", "x"])
    assert head.slots == ["z", "x"]
    assert ContrastiveHead(8, {"x": 4, "y": 3, "z": 2}).slots == ["x", "y"]
    with pytest.raises(ValueError, match=r"modalities \['c'\] are not in the model's modalities \['a', 'b'\]"):
        ContrastiveHead(8, {"a": 4, "b": 3}, modalities=["a", "c"])
    with pytest.raises(ValueError, match="exactly two different modalities"):
        ContrastiveHead(8, {"a": 4, "b": 3}, modalities=["a", "a"])
    with pytest.raises(TypeError, match="contrastive target #1 must be an int pair id, got str"):
        head.collate_targets([0, "1"])


def test_retrieval_recall_is_a_torchmetrics_metric_over_every_update():
    metric = RetrievalRecall(k=1, direction="a->b")
    assert isinstance(metric, Metric)
    e = torch.eye(4)
    # Queries a_i = e_i; gallery b = e permuted: only items 0 and 3 are retrieved correctly.
    pairs = torch.stack([e, e[[0, 2, 1, 3]]], dim=1)
    metric.update(pairs[:2], torch.tensor([0, 1]))
    metric.update((pairs[2:, 0], pairs[2:, 1]), torch.tensor([2, 3]))  # an (a, b) pair works too
    metric.update(torch.full((1, 2, 4), float("nan")), torch.tensor([4]))  # a sample lacking a modality: skipped
    assert float(metric.compute()) == pytest.approx(0.5)
    backwards = RetrievalRecall(k=1, direction="b->a", chunk_size=1)  # chunked ranking gives the same answer
    backwards.update(pairs, torch.arange(4))
    assert float(backwards.compute()) == pytest.approx(0.5)
    everything = RetrievalRecall(k=10)  # K larger than the gallery: every query hits
    everything.update(pairs, torch.arange(4))
    assert float(everything.compute()) == 1.0
    metric.reset()
    with pytest.warns(UserWarning, match="called before the ``update`` method"):
        assert float(metric.compute()) == 0.0  # nothing seen: 0, not an error
    with pytest.raises(ValueError, match=r"predictions must be \[B, 2, E\] paired embeddings"):
        metric.update(torch.randn(3, 4), torch.arange(3))


def test_a_non_finite_absent_vector_leaves_every_gradient_finite():
    head = ContrastiveHead(6, {"a": 6, "b": 6}, embed_dim=5)
    grads = []
    for bad in (0.0, float("nan")):
        features = {}
        for slot, present in (("a", [1, 1, 0, 1]), ("b", [1, 0, 1, 1])):
            present = torch.tensor(present, dtype=torch.bool)
            pooled = torch.where(present[:, None], torch.randn(4, 6, generator=torch.Generator().manual_seed(len(slot))),
                                 torch.full((4, 6), bad)).requires_grad_(True)
            features[slot] = Features(tokens=pooled[:, None].detach(), mask=present[:, None].clone(), pooled=pooled, present=present)
        head.zero_grad()
        head(None, torch.arange(4), features=features).loss.backward()
        grads.append([features["a"].pooled.grad.clone(), *(p.grad.clone() for p in head.parameters() if p.grad is not None)])
    for clean, poisoned in zip(*grads, strict=True):
        torch.testing.assert_close(poisoned, clean)
