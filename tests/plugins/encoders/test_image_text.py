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
    with pytest.raises(TypeError, match="text must be a string, got int"):
        tokenizer(7)
