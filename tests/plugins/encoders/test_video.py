"""The video encoder: clips from folders of real frames or tensors, any image encoder per frame,
temporal transformer or mean, variable lengths padded with masks."""

import numpy as np
import pytest
import torch

from mmcore.testing import check_encoder
from mmcore_plugins.encoders.video import VideoEncoder


def pan(photo: np.ndarray, frames: int, size: int = 64) -> list[np.ndarray]:
    """A camera pan over a real photo: ``frames`` crops sliding to the right."""
    return [np.ascontiguousarray(photo[100 : 100 + size, 20 * t : 20 * t + size]) for t in range(frames)]


@pytest.fixture(scope="module")
def flower():
    from sklearn.datasets import load_sample_image

    return load_sample_image("flower.jpg")


@pytest.mark.parametrize("temporal", ["transformer", "mean"])
def test_conformance_with_either_temporal_model(temporal):
    check_encoder(VideoEncoder(frame_options={"dim": 8, "image_size": 8, "width": 8}, dim=16, heads=2,
                               max_frames=4, temporal=temporal))


def test_folder_of_frames_tensor_and_list_give_the_same_clip(flower, tmp_path):
    from PIL import Image

    frames = pan(flower, 3)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"frame_{t:03d}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    encoder = VideoEncoder(frame_options={"channels": 3, "image_size": 16, "dim": 8, "width": 8}, dim=16, heads=2).eval()
    processor = encoder.processor()
    from_folder = processor(str(tmp_path))
    from_tensor = processor(torch.tensor(np.stack(frames)).permute(0, 3, 1, 2))  # [T, C, H, W] uint8
    from_list = processor(frames)
    assert len(from_folder) == 3
    for a, b, c in zip(from_folder, from_tensor, from_list, strict=True):
        torch.testing.assert_close(a, c)
        torch.testing.assert_close(b, c)


def test_variable_lengths_are_masked_and_padding_changes_nothing(flower):
    encoder = VideoEncoder(frame_options={"channels": 3, "image_size": 16, "dim": 8, "width": 8}, dim=16, heads=2,
                           max_frames=6).eval()
    processor = encoder.processor()
    short, long = processor(pan(flower, 2)), processor(pan(flower, 5))
    feats = encoder(processor.collate([short, None, long]))
    assert feats.tokens.shape == (3, 5, 16)
    assert feats.mask.sum(1).tolist() == [2, 0, 5] and feats.present.tolist() == [True, False, True]
    alone = encoder(processor.collate([short]))
    torch.testing.assert_close(alone.pooled[0], feats.pooled[0], atol=1e-5, rtol=1e-4)


def test_long_clips_are_subsampled_evenly_and_frames_need_an_image_encoder(flower):
    encoder = VideoEncoder(frame_options={"channels": 3, "image_size": 16, "dim": 8, "width": 8}, dim=16, heads=2, max_frames=3)
    processor = encoder.processor()
    frames = pan(flower, 7)
    kept = processor(frames)
    assert len(kept) == 3
    torch.testing.assert_close(kept[1], processor.frame_processor(frames[3]))  # 0, 3, 6
    with pytest.raises(ValueError, match="frame_encoder must be an image encoder"):
        VideoEncoder(frame_encoder="text_transformer")
    with pytest.raises(ValueError, match=r"must be \[T, C, H, W\]"):
        processor(torch.zeros(3, 8, 8))


def test_pretrained_frame_encoder_frozen():
    encoder = VideoEncoder(frame_encoder="image_torchvision",
                           frame_options={"arch": "resnet18", "image_size": 32, "freeze": True}, dim=16, heads=2, max_frames=4)
    assert not any(p.requires_grad for p in encoder.frame_encoder.parameters())
    check_encoder(encoder)


def test_frames_are_read_in_natural_order_without_zero_padding(flower, tmp_path):
    from PIL import Image

    frames = pan(flower, 12, size=16)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"frame_{t}.png")  # frame_10 sorts before frame_2 as text
    processor = VideoEncoder(frame_options={"channels": 3, "image_size": 16, "dim": 8, "width": 8}, dim=16, heads=2,
                             max_frames=12).processor()
    for got, want in zip(processor(str(tmp_path)), processor(frames), strict=True):
        torch.testing.assert_close(got, want)


def test_frame_folders_read_every_pillow_format_and_transparency_as_images_do(tmp_path):
    from PIL import Image

    from mmcore_plugins.io import ImageReadError

    grey = np.zeros((8, 8), dtype=np.uint8)
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent black: shown white, like a still image
    Image.fromarray(grey).save(tmp_path / "f1.bmp")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "f2.png")
    Image.fromarray(grey).save(tmp_path / "f3.tif")
    (tmp_path / "notes.txt").write_text("not a frame")
    processor = VideoEncoder(frame_options={"channels": 1, "image_size": 8, "dim": 8, "width": 8}, dim=16, heads=2,
                             max_frames=4).processor()
    clip = processor(tmp_path)
    assert len(clip) == 3
    assert [round(f.mean().item(), 3) for f in clip] == [-1.0, 1.0, -1.0]  # normalised: black -1, white +1
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match=r"empty.*holds no frame images"):
        processor(tmp_path / "empty")
