"""av_digits is generated deterministically from real data, with a speaker-disjoint test split."""

import json
import shutil

import pytest

from mmcore_plugins.datasets import av_digits

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("avd")


def rows(dataset):
    return [json.loads(line) for line in open(dataset.metadata["root"] + "/manifest.jsonl")]


def test_splits_are_speaker_disjoint_and_text_is_partly_missing(root):
    splits = {s: av_digits.load_av_digits(s, root=str(root), seed=3) for s in ("train", "val", "test")}
    manifest = rows(splits["train"])
    voices = {s: {r["voice"].split("@")[0] for r in manifest if r["split"] == s} for s in splits}
    assert voices["test"].isdisjoint(voices["train"] | voices["val"])
    assert sum(len(d) for d in splits.values()) == 1797
    texts = [s["inputs"]["text"] for s in splits["train"].samples]
    assert 0.3 < sum(t is not None for t in texts) / len(texts) < 0.5
    for sample in splits["test"].samples[:50]:
        if sample["inputs"]["text"] is not None:
            assert any(sample["inputs"]["text"] == words[sample["target"]] for words in av_digits.WORDS.values())


def test_same_options_give_identical_files(root, tmp_path):
    a = av_digits.load_av_digits("test", root=str(root), seed=3)
    b = av_digits.load_av_digits("test", root=str(tmp_path), seed=3)
    assert rows(a) == rows(b)
    first = rows(a)[0]["audio"]
    assert open(a.metadata["root"] + "/" + first, "rb").read() == open(b.metadata["root"] + "/" + first, "rb").read()


def test_missing_espeak_says_how_to_install(monkeypatch):
    monkeypatch.setattr(av_digits.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        av_digits._espeak()
