"""``text_ngram``: fastText's bag of words and character n-grams -- its units, its fitted vocabulary,
padding and absent texts, bad options, and that it reads a misspelt word that a word vocabulary
cannot."""

from __future__ import annotations

import pytest
import torch

import mmcore
from mmcore_plugins.deploy.frontend import ngram_ids, subword_ngrams
from mmcore_plugins.encoders.text import UNK, NgramBagEncoder, NgramTokenizer, VocabTokenizer


def _units(text, min_n, max_n):
    return list(subword_ngrams(text, min_n, max_n))


def test_units_are_the_marked_word_then_its_ngrams_shorter_than_it():
    assert _units("cat", 2, 3) == ["<cat>", "<c", "ca", "at", "t>", "<ca", "cat", "at>"]
    assert _units("a", 2, 4) == ["<a>", "<a", "a>"], "no n-gram as long as the marked word itself"
    assert _units("Go, go!", 3, 3) == ["<Go>", "<Go", "Go>", "<go>", "<go", "go>"], "punctuation splits words"
    assert _units("  ,;  ", 2, 4) == []
    assert _units("naïve 42", 4, 4)[:3] == ["<naïve>", "<naï", "naïv"] and "<42>" in _units("naïve 42", 4, 4)


def test_the_vocabulary_is_the_most_frequent_units_of_the_training_texts_and_saved():
    tokenizer = NgramTokenizer(vocab_size=12, max_length=64, min_n=2, max_n=3)
    tokenizer.fit(["red red jacket", "Red shoes", None])
    assert len(tokenizer.vocab) == 10 and min(tokenizer.vocab.values()) == 2
    first = sorted(tokenizer.vocab, key=tokenizer.vocab.get)[:3]
    assert first == ["<r", "<re", "<red>"], "'red' three times (lowercased) first; ties alphabetical"
    ids = tokenizer("RED zzz").tolist()
    assert ids == [tokenizer.vocab[u] for u in _units("red zzz", 2, 3) if u in tokenizer.vocab], "unseen units are left out"
    assert tokenizer("zzz").tolist() == [UNK], "no known unit: one unknown id"
    again = NgramTokenizer(vocab_size=12, max_length=64, min_n=2, max_n=3)
    again.load_state_dict(tokenizer.state_dict())
    assert again("a red jacket").tolist() == tokenizer("a red jacket").tolist()
    assert len(tokenizer("jacket " * 50)) == 64, "at most max_length units a text"


def test_known_units_are_found_up_to_the_limit_and_splitting_stops_there():
    vocab = {u: i + 2 for i, u in enumerate(["<red>", "ed", "<sh", "oes>"])}
    text = "red shoes, " * 1000
    every = [vocab[u] for u in _units(text, 2, 4) if u in vocab]
    assert ngram_ids(text, vocab, 2, 4, 7) == every[:7] and len(every) == 4000
    assert ngram_ids("zzz", vocab, 2, 4, 7) == [UNK] and ngram_ids("", vocab, 2, 4, 7) == [UNK]


def test_a_typo_keeps_most_of_a_words_ngrams_where_a_word_vocabulary_has_none():
    texts = ["leather jacket", "denim trousers"]
    ngrams, words = NgramTokenizer(vocab_size=500), VocabTokenizer("word", vocab_size=500)
    ngrams.fit(texts)
    words.fit(texts)
    assert words("lether jaket").tolist() == [UNK, UNK]
    known = [i for i in ngrams("lether jaket").tolist() if i != UNK]
    assert len(known) >= 10 and set(known) <= set(ngrams("leather jacket").tolist())


def test_padding_does_not_change_a_text_and_absent_texts_are_zeros():
    torch.manual_seed(0)
    encoder = NgramBagEncoder(dim=8, vocab_size=100, max_length=32).eval()
    processor = encoder.processor()
    processor.fit(["a blue shirt", "a long red woollen winter coat", "sandals"])
    alone = encoder(processor.collate([processor("a blue shirt")])).pooled
    batch = processor.collate([processor("a long red woollen winter coat"), None, processor("a blue shirt")])
    features = encoder(batch)
    assert torch.allclose(features.pooled[2], alone[0], atol=1e-6)
    assert features.present.tolist() == [True, False, True] and features.pooled[1].abs().max() == 0


def test_a_text_with_no_known_unit_is_absent_whatever_the_unknown_vector_holds():
    encoder = NgramBagEncoder(dim=8, vocab_size=50).eval()
    processor = encoder.processor()
    processor.fit(["a blue shirt"])
    batch = processor.collate([processor("zzz qqq"), processor("!?"), processor(""), processor("blue")])
    first = encoder(batch)
    with torch.no_grad():
        encoder.embed.weight[UNK].fill_(100.0)
    again = encoder(batch)
    assert first.present.tolist() == [False, False, False, True] and first.pooled[:3].abs().max() == 0
    assert torch.equal(first.pooled, again.pooled)


def test_it_exports_to_onnx_and_torch_export_as_eager_computes():
    from mmcore.testing import check_export

    assert check_export("encoder", "text_ngram", registry=mmcore.get_registry(), onnx=True, atol=1e-5, rtol=0.0) is None


@pytest.mark.parametrize("options,named", [({"vocab_size": 2}, "vocab_size"), ({"min_n": 0}, "min_n"),
                                           ({"min_n": 4, "max_n": 3}, "max_n"), ({"max_length": 0}, "max_length"),
                                           ({"dim": 1.5}, "dim"), ({"dropout": 1.0}, "dropout")])
def test_bad_options_are_refused_by_name(options, named):
    with pytest.raises(ValueError, match=named):
        NgramBagEncoder(**options)


def _train(encoder, processor, texts, labels, steps=150):
    head = torch.nn.Linear(encoder.dim, 2)
    optimiser = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=0.05)
    batch, target = processor.collate([processor(t) for t in texts]), torch.tensor(labels)
    for _ in range(steps):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(head(encoder(batch).pooled), target).backward()
        optimiser.step()
    encoder.eval()
    return lambda raws: head(encoder(processor.collate([processor(t) for t in raws])).pooled).argmax(1).tolist()


def test_it_learns_classes_that_it_then_reads_through_misspellings():
    """Words seen in training, misspelt at test time: the n-gram bag classifies them; a bag of the
    same words alone (the word vocabulary, also trained here) cannot tell them apart."""
    torch.manual_seed(0)
    warm, cold = ["scarlet", "crimson", "orange", "amber", "golden"], ["azure", "indigo", "silver", "violet", "turquoise"]
    texts = [f"{w} {n}" for n in ("shirt", "scarf", "coat") for w in warm + cold]
    labels = [0 if t.split()[0] in warm else 1 for t in texts]
    misspelt = ["scarlett", "crimsn", "orangee", "ambar", "goldn", "azzure", "indgo", "silvr", "violett", "turqoise"]
    expected = [0] * 5 + [1] * 5
    encoder = NgramBagEncoder(dim=16, vocab_size=2000, dropout=0.0)
    processor = encoder.processor()
    processor.fit(texts)
    predict = _train(encoder, processor, texts, labels)
    assert predict(texts) == labels
    right = sum(p == e for p, e in zip(predict([f"{w} hat" for w in misspelt]), expected, strict=True))
    assert right >= 9, right
    # a word-only bag: every misspelt word is the unknown id, so every such text reads the same
    words = VocabTokenizer("word", vocab_size=2000)
    words.fit(texts)
    assert len({tuple(words(f"{w} hat").tolist()) for w in misspelt}) == 1
