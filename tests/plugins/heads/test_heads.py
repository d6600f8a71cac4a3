"""Heads learn what they claim: regression in original units, multilabel thresholds, contrastive retrieval."""

from __future__ import annotations

import pytest
import torch

import mmcore
from mmcore import Features
from mmcore_plugins.heads.contrastive import ContrastiveHead, RetrievalRecall
from mmcore_plugins.heads.regression import MultilabelHead, RegressionHead


def paired_samples(n: int, seed: int):
    """Two views of one latent vector: 'a' and 'b' are different noisy linear maps of it."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.Generator().manual_seed(99)
    wa, wb = torch.randn(4, 6, generator=maps), torch.randn(4, 5, generator=maps)
    z = torch.randn(n, 4, generator=g)
    a, b = z @ wa + 0.05 * torch.randn(n, 6, generator=g), z @ wb + 0.05 * torch.randn(n, 5, generator=g)
    return [{"inputs": {"a": a[i].tolist(), "b": b[i].tolist()}, "target": i} for i in range(n)]


def recall_at_1(model, samples):
    model.eval()
    batch = model.collate(samples)
    with torch.no_grad():
        out = model(batch["inputs"], batch["targets"])
    metric = model.head.metrics()["recall@1_ab"]
    metric.update(out.predictions, batch["targets"])
    return float(metric.compute())


def test_contrastive_recall_rises_with_training():
    torch.manual_seed(0)
    model = mmcore.build_model({
        "encoders": {"a": {"name": "tabular_mlp", "num_features": 6, "dim": 32}, "b": {"name": "tabular_mlp", "num_features": 5, "dim": 32}},
        "fusion": {"name": "mean", "dim": 8},
        "head": {"name": "contrastive", "embed_dim": 16},
    })
    train, test = paired_samples(256, seed=1), paired_samples(64, seed=2)
    model.fit_processors(train)
    before = recall_at_1(model, test)
    batch = model.collate(train)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        out = model(batch["inputs"], batch["targets"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    after = recall_at_1(model, test)
    assert before < 0.2 and after > 0.6, f"recall@1 {before:.2f} -> {after:.2f} on 64 held-out pairs"


def test_retrieval_recall_counts_matches_within_k():
    metric = RetrievalRecall(k=1, direction="a->b")
    e = torch.eye(3)
    metric.update(torch.stack([e, e[[1, 0, 2]]], dim=1), torch.tensor([0, 1, 2]))
    assert float(metric.compute()) == pytest.approx(1 / 3)


def test_contrastive_ignores_samples_missing_either_modality():
    head = ContrastiveHead(8, {"a": 4, "b": 3}, embed_dim=5)
    a = Features.from_pooled(torch.randn(3, 4), torch.tensor([True, True, False]))
    b = Features.from_pooled(torch.randn(3, 3))
    out = head(a, torch.tensor([0, 1, 2]), {"a": a, "b": b})
    assert torch.isfinite(out.loss) and torch.isnan(out.predictions[2]).all()
    assert head.format_predictions(out)[2] is None
    with pytest.raises(ValueError, match=r"modalities \['c'\] are not in the model's modalities"):
        ContrastiveHead(8, {"a": 4, "b": 3}, modalities=["a", "c"])


def test_regression_predicts_in_original_units_after_fitting_target_statistics():
    torch.manual_seed(0)
    head = RegressionHead(4, num_targets=1)
    x = torch.randn(64, 4)
    y = 1000.0 + 50.0 * x[:, :1]
    head.fit_targets(y.tolist())
    assert head.target_mean.item() == pytest.approx(y.mean().item(), rel=1e-4)
    fused = Features.from_pooled(x)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    for _ in range(200):
        out = head(fused, y)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert (head(fused).predictions - y).abs().max() < 5.0


def test_multilabel_applies_per_label_thresholds():
    head = MultilabelHead(2, num_labels=2, thresholds=[0.3, 0.9])
    with torch.no_grad():
        head.net[-1].weight.zero_()
        head.net[-1].bias.copy_(torch.tensor([0.0, 0.0]))  # probabilities 0.5 for both labels
    out = head(Features.from_pooled(torch.zeros(1, 2)))
    assert out.predictions.tolist() == [[1, 0]]
    with pytest.raises(ValueError, match="multilabel target #0 must be 2 values of 0/1"):
        head.collate_targets([[1, 2]])


def caption_model():
    torch.manual_seed(0)
    return mmcore.build_model({
        "encoders": {"x": {"name": "tabular_mlp", "num_features": 4, "dim": 16}},
        "head": {"name": "captioning", "vocab": ["a", "red", "blue", "cat", "dog", "sits", "runs"],
                 "dim": 32, "heads": 2, "layers": 1, "max_length": 6, "bleu_ngram": 2, "dropout": 0.0},
    })


CAPTIONS = ["a red cat sits", "a blue dog runs", "a red dog sits", "a blue cat runs"]


def test_captioning_learns_short_captions_and_beam_one_equals_greedy():
    model = caption_model()
    samples = [{"inputs": {"x": [float(i == j) for j in range(4)]}, "target": c} for i, c in enumerate(CAPTIONS)]
    batch = model.collate(samples)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        out = model(batch["inputs"], batch["targets"])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        greedy = model(batch["inputs"])
    assert model.head.format_predictions(greedy) == CAPTIONS
    head = model.head
    with torch.no_grad():
        fused = model.encode(batch["inputs"])["x"]
        memory, memory_mask = head.memory(fused.tokens), fused.mask
        beam1 = torch.stack([head._beam(memory[i : i + 1], memory_mask[i : i + 1], 1) for i in range(4)])
        assert torch.equal(beam1, greedy.predictions)
        assert head.format_predictions(mmcore.HeadOutput(logits=memory, predictions=head.generate(memory, memory_mask, beam_size=3))) == CAPTIONS
    bleu = head.metrics()["bleu"]
    bleu.update(greedy.predictions, batch["targets"])
    assert float(bleu.compute()) == pytest.approx(1.0)


def test_caption_targets_are_checked():
    head = caption_model().head
    with pytest.raises(TypeError, match="caption target #0 must be a string, got int"):
        head.collate_targets([3])
    with pytest.raises(ValueError, match="caption target #0 has 7 words; max_length is 6"):
        head.collate_targets(["a a a a a a a"])
