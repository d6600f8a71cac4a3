"""The captioning head: learns short captions, beam search is exact where it can be and equals greedy at beam 1."""

from __future__ import annotations

import itertools

import pytest
import torch
from torchmetrics.text import BLEUScore

import mmcore
from mmcore import Features
from mmcore_plugins.heads.captioning import BOS, EOS, PAD, CaptioningHead

CAPTIONS = ["a red cat sits", "a blue dog runs", "a red dog sits", "a blue cat runs"]
VOCAB = ["a", "red", "blue", "cat", "dog", "sits", "runs"]


def caption_model():
    torch.manual_seed(0)
    return mmcore.build_model({
        "encoders": {"x": {"name": "tabular_mlp", "num_features": 4, "dim": 16}},
        "head": {"name": "captioning", "vocab": VOCAB, "dim": 32, "heads": 2, "layers": 1, "max_length": 6,
                 "bleu_ngram": 2, "dropout": 0.0},
    })


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
        assert torch.equal(head.beam_search(memory, memory_mask, 1), greedy.predictions)
        beam3 = head.generate(memory, memory_mask, beam_size=3)
    assert head.format_predictions(mmcore.HeadOutput(logits=memory, predictions=beam3)) == CAPTIONS
    bleu = head.metrics()["bleu"]
    assert isinstance(bleu, BLEUScore)
    bleu.update(greedy.predictions, batch["targets"])
    assert float(bleu.compute()) == pytest.approx(1.0)


def sequence_log_prob(head: CaptioningHead, memory, mask, words: tuple[int, ...]) -> float:
    ids = torch.tensor([[BOS, *words]])
    logp = head.decode_logits(ids[:, :-1], memory, mask).log_softmax(-1)
    return float(logp[0, torch.arange(len(words)), ids[0, 1:]].sum())


def test_a_wide_beam_finds_the_most_likely_caption():
    """With beam >= V^(T-1), beam search over T steps is exhaustive: it must return the argmax sequence."""
    torch.manual_seed(1)
    head = CaptioningHead(6, vocab=["x", "y"], dim=8, heads=2, layers=1, max_length=3, dropout=0.0).eval()
    memory = head.memory(torch.randn(1, 3, 6))
    mask = torch.tensor([[True, True, False]])
    vocab = len(head.vocab)
    best, best_score = None, float("-inf")
    with torch.no_grad():
        # Every caption: up to 3 tokens, ending at EOS or at max_length (PAD never emitted before EOS).
        for length in range(1, 4):
            for words in itertools.product(range(vocab), repeat=length):
                ends = words[-1] == EOS
                if (EOS in words[:-1]) or (length < 3 and not ends):
                    continue
                score = sequence_log_prob(head, memory, mask, words)
                if score > best_score:
                    best, best_score = words, score
        found = head.beam_search(memory, mask, beam_size=vocab**2)[0].tolist()
    assert found == list(best) + [PAD] * (3 - len(best))


def test_absent_fused_tokens_still_give_a_caption():
    head = CaptioningHead(6, vocab=VOCAB, dim=8, heads=2, layers=1, max_length=4).eval()
    fused = Features.absent(2, 6)
    with torch.no_grad():
        out = head(fused)
    assert out.predictions.shape == (2, 4) and len(head.format_predictions(out)) == 2


def test_caption_targets_and_options_are_checked():
    head = caption_model().head
    assert head.collate_targets(["a cat", "Red dog sits"]).tolist() == [
        [BOS, head.vocab.index["a"], head.vocab.index["cat"], EOS, PAD],
        [BOS, head.vocab.index["red"], head.vocab.index["dog"], head.vocab.index["sits"], EOS],
    ]
    with pytest.raises(TypeError, match="caption target #0 must be a string, got int"):
        head.collate_targets([3])
    with pytest.raises(ValueError, match="caption target #0 has 7 words; max_length is 6"):
        head.collate_targets(["a a a a a a a"])
    with pytest.raises(ValueError, match=r"vocab entries must be single words .* got \['two words'\]"):
        CaptioningHead(8, vocab=["ok", "two words"])
    with pytest.raises(ValueError, match=r"captioning: dim \(10\) must be divisible by heads \(4\)"):
        CaptioningHead(8, vocab=["a"], dim=10, heads=4)
    with pytest.raises(ValueError, match="captioning: beam_size must be a positive int, got 0"):
        CaptioningHead(8, vocab=["a"], beam_size=0)


def test_non_finite_padding_in_the_fused_tokens_changes_nothing():
    torch.manual_seed(0)
    head = CaptioningHead(8, ["a", "red", "cat", "dog", "big"], dim=16, heads=2, layers=2, max_length=6, beam_size=3,
                          dropout=0.0).eval()
    tokens = torch.randn(4, 5, 8, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, :] = False
    present = torch.tensor([True, True, False, True])
    targets = head.collate_targets(["a red cat", "dog", "big big cat", "cat"])
    outputs = []
    for bad in (0.0, float("nan")):
        poisoned = torch.where((mask & present[:, None])[..., None], tokens, torch.full_like(tokens, bad))
        outputs.append(head(Features(tokens=poisoned, mask=mask, pooled=torch.zeros(4, 8), present=present), targets))
    torch.testing.assert_close(outputs[1].loss, outputs[0].loss)
    assert torch.equal(outputs[1].predictions, outputs[0].predictions)
