"""Built-in perturbations: what each does to raw inputs, at which strength, and that processors accept the result."""

import math
import wave

import numpy as np
import pytest
import torch

from mmcore_plugins.encoders.audio import LogMelProcessor
from mmcore_plugins.encoders.image import ImageProcessor
from mmcore_plugins.perturbations import (
    AudioSpeed,
    AudioWhiteNoise,
    ImageBlur,
    ImageGaussianNoise,
    TabularFeatureNoise,
    TextTypos,
    TextWordDropout,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_every_builtin_is_registered_with_its_modality(manager):
    # Inclusion, not equality: a user's third-party plugin may register more perturbations.
    found = {info.name: info.modality for info in manager.registry if info.kind == "perturbation"}
    expected = {"gaussian_noise": "image", "blur": "image", "white_noise": "audio", "speed": "audio",
                "word_dropout": "text", "typos": "text", "feature_noise": "tabular"}
    assert {name: found.get(name) for name in expected} == expected


def test_image_noise_has_the_requested_strength_and_reads_files(tmp_path):
    from PIL import Image

    flat = np.full((64, 64), 128, dtype=np.uint8)
    Image.fromarray(flat).save(tmp_path / "grey.png")
    noisy = ImageGaussianNoise(0.1)(str(tmp_path / "grey.png"), gen())
    assert noisy.shape == (1, 64, 64)
    assert float((noisy - 128 / 255).std()) == pytest.approx(0.1, rel=0.1)
    assert ImageProcessor(16, 1)(noisy).shape == (1, 16, 16), "the image processor accepts the perturbed image"
    rgb = ImageGaussianNoise(0.2)(np.zeros((8, 8, 3), dtype=np.uint8), gen())
    assert rgb.shape == (3, 8, 8) and float(rgb.min()) == 0.0, "clipped to [0, 1]"


def test_blur_keeps_the_mean_and_smooths():
    x = (torch.rand(1, 32, 32, generator=gen()) > 0.5).float()
    blurred = ImageBlur(1.5)(x, gen())
    assert float(blurred.mean()) == pytest.approx(float(x.mean()), abs=0.02)
    assert float(blurred.std()) < 0.5 * float(x.std())
    assert torch.equal(ImageBlur(0.0)(x, gen()), x)


@pytest.mark.parametrize("side", [1, 2, 4])
def test_blur_keeps_the_brightness_of_images_smaller_than_its_kernel(side):
    grey = torch.full((1, side, side), 0.5)
    torch.testing.assert_close(ImageBlur(2.5)(grey, gen()), grey)


def _tone(seconds=1.0, rate=8000, amplitude=0.05):
    t = torch.arange(int(seconds * rate)) / rate
    return amplitude * torch.sin(2 * math.pi * 440 * t)


def test_white_noise_reaches_the_stated_snr(tmp_path):
    wav = _tone()
    noisy, rate = AudioWhiteNoise(2.0)((wav, 8000), gen())
    snr = 10 * math.log10(float(wav.pow(2).mean()) / float((noisy - wav).pow(2).mean()))
    assert rate == 8000 and snr == pytest.approx(-6.0, abs=0.3)
    assert AudioWhiteNoise.describe(2.0) == "-6 dB" and AudioWhiteNoise.describe(0.5) == "+6 dB"
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(8000)
        f.writeframes((wav * 32767).to(torch.int16).numpy().tobytes())
    perturbed = AudioWhiteNoise(1.0)(str(path), gen())
    assert isinstance(perturbed, tuple) and perturbed[1] == 8000
    loud = AudioWhiteNoise(8.0)((wav * 20, 8000), gen())[0]
    assert float(loud.abs().max()) <= 1.0, "rescaled rather than clipped when the noise would overflow"
    assert LogMelProcessor(sample_rate=8000, n_mels=16)(perturbed).shape[0] == 16


def test_speed_changes_duration_and_pitch_together():
    wav = _tone()
    out = AudioSpeed(0.25)(wav, gen(1))
    factor = len(wav) / len(out)
    assert factor == pytest.approx(1.25, abs=0.01) or factor == pytest.approx(0.75, abs=0.01)
    spectrum = torch.fft.rfft(out).abs()
    peak_hz = int(spectrum.argmax()) * 8000 / len(out)
    assert peak_hz == pytest.approx(440 * factor, rel=0.02)


def test_text_perturbations_are_seeded_and_scale_with_the_level():
    text = "the quick brown fox jumps over the lazy dog " * 5
    assert TextWordDropout(0.5)(text, gen(3)) == TextWordDropout(0.5)(text, gen(3))
    kept = [len(TextWordDropout(p)(text, gen()).split()) for p in (0.0, 0.3, 0.8)]
    assert kept[0] == 45 and kept[0] > kept[1] > kept[2]
    assert TextWordDropout(1.0)("seven", gen()) == ""
    changed = [sum(a != b for a, b in zip(text, TextTypos(p)(text, gen()), strict=False)) for p in (0.0, 0.05, 0.4)]
    assert changed[0] == 0 and changed[1] < changed[2]
    with pytest.raises(TypeError, match="text must be a string"):
        TextTypos(0.1)(3, gen())


def test_tabular_noise_is_relative_and_keeps_the_row_form():
    row = [1.0, 10.0, 100.0]
    noisy = TabularFeatureNoise(0.1)(row, gen())
    assert len(noisy) == 3 and all(abs(n - v) < 0.5 * v for n, v in zip(noisy, row, strict=True))
    assert TabularFeatureNoise(0.0)(row, gen()) == row
    assert set(TabularFeatureNoise(0.1)({"a": 1.0, "b": 2.0}, gen())) == {"a", "b"}
    # Categorical values (and missing ones) pass through; only the numbers get noise.
    mixed = TabularFeatureNoise(0.5)({"age": 40.0, "city": "Lyon", "pet": None, "count": 3}, gen())
    assert mixed["city"] == "Lyon" and mixed["pet"] is None and mixed["age"] != 40.0 and mixed["count"] != 3
    assert TabularFeatureNoise(0.5)([1.0, "red", None], gen())[1:] == ["red", None]
    with pytest.raises(ValueError, match="level must be a number >= 0"):
        TabularFeatureNoise(-1)


@pytest.mark.parametrize("perturbation", [AudioWhiteNoise(1.0), AudioSpeed(0.1)])
def test_an_audio_file_claiming_hours_is_read_as_its_first_minutes(tmp_path, perturbation):
    """A crafted WAV whose header claims 3 GiB of samples (a sparse file: nothing on disk) is read
    up to PERTURB_MAX_SECONDS, never as the 6 GiB of float32 it claims (issue 28's attack)."""
    import struct

    from mmcore_plugins.perturbations import PERTURB_MAX_SECONDS

    size, rate = 3 << 30, 8000
    path = tmp_path / "bomb.wav"
    header = (b"RIFF" + struct.pack("<I", size - 8) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
              + b"data" + struct.pack("<I", size - 44))
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(size)
    wav, got_rate = perturbation(str(path), torch.Generator().manual_seed(0))
    assert got_rate == rate
    assert wav.numel() <= 1.2 * PERTURB_MAX_SECONDS * rate
