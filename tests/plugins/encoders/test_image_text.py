"""Image and text processors on real inputs (scikit-learn's bundled photos, multilingual words)."""

import numpy as np
import pytest
import torch

from mmcore_plugins.encoders.image import ImageProcessor, SmallCNNEncoder
from mmcore_plugins.encoders.text import ByteTokenizer


def test_real_photo_from_array_pil_and_path_gives_the_same_tensor(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_sample_image

    photo = load_sample_image("flower.jpg")  # [H, W, 3] uint8
    Image.fromarray(photo).save(tmp_path / "flower.png")
    processor = ImageProcessor(image_size=32, channels=3)
    from_array = processor(photo)
    assert from_array.shape == (3, 32, 32) and -1.0 <= from_array.min() and from_array.max() <= 1.0
    assert torch.allclose(processor(Image.fromarray(photo)), from_array)
    assert torch.allclose(processor(str(tmp_path / "flower.png")), from_array)


def test_grayscale_cnn_on_photos_and_bad_inputs(tmp_path):
    encoder = SmallCNNEncoder(dim=8, image_size=16, width=8).eval()
    processor = encoder.processor()
    batch = processor.collate([processor(np.full((8, 8), 128, dtype=np.uint8)), None])
    feats = encoder(batch)
    assert feats.tokens.shape == (2, 16, 8) and feats.present.tolist() == [True, False]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        processor(str(tmp_path / "broken.png"))
    with pytest.raises(ValueError, match=r"got shape \[2, 3, 4, 5\]"):
        processor(torch.zeros(2, 3, 4, 5))


def test_byte_tokenizer_handles_any_language_and_rejects_non_strings():
    tokenizer = ByteTokenizer(max_length=8)
    assert tokenizer("fünf").tolist() == list("fünf".encode())
    assert len(tokenizer("a" * 20)) == 8
    batch = tokenizer.collate([tokenizer("sept"), None])
    assert batch["mask"].tolist() == [[True] * 4, [False] * 4]
    with pytest.raises(TypeError, match="text must be a string .* got int"):
        tokenizer(7)


def test_char_and_word_vocabularies_are_fitted_on_training_text_and_saved():
    from mmcore_plugins.encoders.text import ByteTransformerEncoder

    train = ["sept", "Sieben", None, "sette", "seven seven"]
    for level, expected in (("char", 9 + 2), ("word", 4 + 2)):
        encoder = ByteTransformerEncoder(dim=16, heads=2, layers=1, tokenizer=level, vocab_size=9)
        processor = encoder.processor()
        with pytest.raises(ValueError, match="no vocabulary yet: fit it"):
            processor("sept")
        processor.fit(train)
        assert len(processor.vocab) + 2 == min(expected, 9)
        restored = encoder.processor()
        restored.load_state_dict(processor.state_dict())
        assert restored("zzz sieben").tolist() == processor("zzz sieben").tolist()
        assert 1 in processor("zzz").tolist(), "unseen tokens map to the unknown id"
        batch = processor.collate([processor("sept"), None, processor("seven seven")])
        feats = encoder.eval()(batch)
        assert feats.present.tolist() == [True, False, True] and feats.mask.sum(1)[1] == 0
    word = ByteTransformerEncoder(dim=16, heads=2, layers=1, tokenizer="word").processor()
    word.fit(train)
    assert word.state_dict()["vocab"][0] == "seven", "most frequent first"


def test_text_transformer_padding_does_not_change_a_sample():
    from mmcore_plugins.encoders.text import ByteTransformerEncoder

    encoder = ByteTransformerEncoder(dim=16, heads=2, layers=2, max_length=32).eval()
    processor = encoder.processor()
    alone = encoder(processor.collate([processor("huit")]))
    padded = encoder(processor.collate([processor("huit"), processor("quatre-vingt-dix-neuf")]))
    torch.testing.assert_close(alone.pooled[0], padded.pooled[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("pool", ["flatten", "mean"])
def test_small_cnn_pooled_vector_zeroes_absent_images_and_flatten_keeps_position(pool):
    torch.manual_seed(0)
    encoder = SmallCNNEncoder(dim=8, image_size=8, width=8, pool=pool).eval()
    processor = encoder.processor()
    blob = torch.zeros(8, 8)
    blob[1:3, 1:3] = 1.0
    moved = torch.roll(blob, shifts=(4, 4), dims=(0, 1))
    out = encoder(processor.collate([processor(blob), None, processor(moved)]))
    assert out.pooled.shape == (3, 8) and out.tokens.shape == (3, 4, 8)
    assert out.present.tolist() == [True, False, True]
    assert not out.mask[1].any() and (out.pooled[1] == 0).all() and (out.tokens[1] == 0).all()
    # The same blob in another corner is another input: tokens carry their position either way.
    assert not torch.allclose(out.tokens[0], out.tokens[2])
    if pool == "flatten":
        assert not torch.allclose(out.pooled[0], out.pooled[2], atol=1e-4)


def test_small_cnn_rejects_an_unknown_pooling():
    with pytest.raises(ValueError, match="pool must be 'flatten' or 'mean', got 'max'"):
        SmallCNNEncoder(pool="max")


def test_image_batch_steps_equal_the_per_image_processor_with_missing_images(tmp_path):
    """``batch_steps``: images read and resized one by one, normalised as one batch -- equal to ``collate`` of the
    processor's own outputs, missing images zero; a subclass with its own ``__call__`` keeps its steps."""
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(8, 8), (30, 17), (64, 64)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(paths[-1])
    processor = ImageProcessor(image_size=16, channels=1)
    decode, collate_decoded = processor.batch_steps()
    batch = [paths[0], None, paths[1], paths[2], None]
    expected = processor.collate([None if p is None else processor(p) for p in batch])
    got = collate_decoded([None if p is None else decode(p) for p in batch])
    assert torch.equal(got["pixels"], expected["pixels"]) and torch.equal(got["present"], expected["present"])

    class Inverted(ImageProcessor):
        def __call__(self, raw):
            return -super().__call__(raw)

    assert Inverted(image_size=16, channels=1).batch_steps() is None
