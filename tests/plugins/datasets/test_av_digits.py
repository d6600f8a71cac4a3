"""av_digits is generated deterministically from real data (scikit-learn digits, espeak-ng speech),
with speaker-disjoint splits and partly missing text."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from mmcore_plugins.datasets import _speech, av_digits

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
TINY = {"seed": 3, "size": 60, "image_noise": 0.3, "audio_snr_db": 0.0, "text_fraction": 0.5, "train_views": 2,
        "test_fraction": 0.3, "val_fraction": 0.2}


def rows(dataset):
    return [json.loads(line) for line in open(Path(dataset.metadata["root"]) / "manifest.jsonl", encoding="utf-8")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("avd")
    return {s: av_digits.load_av_digits(s, root=str(root), **TINY) for s in ("train", "val", "test")}


@needs_espeak
def test_one_espeak_call_says_all_ten_digits_and_they_split_into_words():
    words, rate = _speech.speak(av_digits.WORDS["en"], "en-gb+m3", 160, 50)
    assert rate == 22050 and len(words) == 10
    assert all(0.15 < len(w) / rate < 1.2 for w in words), [len(w) / rate for w in words]


@needs_espeak
def test_splits_are_speaker_disjoint_and_views_only_in_train(tiny):
    manifest = rows(tiny["train"])
    voices = {s: {r["voice"].split("@")[0] for r in manifest if r["split"] == s} for s in ("train", "val", "test")}
    assert voices["test"].isdisjoint(voices["train"] | voices["val"]) and voices["val"].isdisjoint(voices["train"])
    assert len({r["id"] for r in manifest}) == 60
    assert {r["view"] for r in manifest if r["split"] != "train"} == {0}
    by_id = {}
    for r in manifest:
        by_id.setdefault(r["id"], []).append(r)
    for copies in by_id.values():  # views: the same clean sample, with fresh noise
        assert len({(c["label"], c["voice"], c["text"]) for c in copies}) == 1
        assert len(copies) == (2 if copies[0]["split"] == "train" else 1)
    n_train = sum(len(c) for c in by_id.values() if c[0]["split"] == "train")
    assert len(tiny["train"]) == n_train and len(tiny["val"]) + len(tiny["test"]) == 60 - n_train // 2
    train_pixels = Path(tiny["train"].metadata["root"]) / by_id[next(i for i, c in by_id.items() if len(c) == 2)][1]["image"]
    assert train_pixels.is_file()


@needs_espeak
def test_text_is_partly_missing_and_names_the_digit(tiny):
    samples = [s for split in tiny.values() for s in split.samples]
    texts = [s["inputs"]["text"] for s in samples]
    assert 0 < sum(t is not None for t in texts) < len(texts)
    for s in samples:
        if s["inputs"]["text"] is not None:
            assert any(s["inputs"]["text"] == words[s["target"]] for words in av_digits.WORDS.values())
        assert s["inputs"]["image"].endswith(".png") and s["inputs"]["audio"].endswith(".wav")


@needs_espeak
def test_same_options_give_identical_files(tiny, tmp_path):
    again = av_digits.load_av_digits("test", root=str(tmp_path), **TINY)
    first = tiny["test"]
    assert rows(first) == rows(again)
    for column in ("audio", "image"):
        name = rows(first)[0][column]
        assert (Path(first.metadata["root"]) / name).read_bytes() == (Path(again.metadata["root"]) / name).read_bytes()
    other = av_digits.load_av_digits("test", root=str(tmp_path), **{**TINY, "seed": 4})
    assert other.metadata["root"] != again.metadata["root"]


@needs_espeak
def test_audio_is_real_speech_at_the_requested_snr(tiny):
    from mmcore_plugins.encoders.audio import read_wav

    assert tiny["test"].metadata["options"]["audio_rate"] == 16000
    wav, rate = read_wav(tiny["test"].samples[0]["inputs"]["audio"])
    assert rate == 16000 and 0.2 < len(wav) / rate < 1.5
    assert wav.abs().max() <= 1.0 and wav.std() > 0.01


def test_speakers_are_disjoint_for_any_seed():
    for seed in range(3):
        groups = av_digits.speakers(seed, test_voices=16, val_voices=8)
        names = {s: {v for v, _, _ in people} for s, people in groups.items()}
        assert len(names["test"]) == 16 and len(names["val"]) == 8
        assert not (names["test"] & names["val"]) and not ((names["test"] | names["val"]) & names["train"])
        assert all(a in av_digits.ACCENTS and 30 <= p <= 70 for people in groups.values() for _, a, p in people)


def test_typos_are_seeded_and_rate_zero_is_identity():
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert av_digits.typos("quattro", 0.0, g()) == "quattro"
    assert av_digits.typos("quattro", 0.5, g()) == av_digits.typos("quattro", 0.5, g()) != "quattro"


def test_bad_options_are_refused_before_generating(tmp_path):
    with pytest.raises(ValueError, match="languages must be a non-empty list"):
        av_digits.load_av_digits("train", root=str(tmp_path), languages=["xx"])
    with pytest.raises(ValueError, match="train_views must be >= 1"):
        av_digits.load_av_digits("train", root=str(tmp_path), train_views=0)
    assert not list(tmp_path.iterdir())


def test_missing_espeak_says_how_to_install(monkeypatch):
    monkeypatch.setattr(_speech.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        _speech.espeak_executable()
