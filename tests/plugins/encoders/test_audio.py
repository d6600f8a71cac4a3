"""Audio front end on real espeak-ng speech: WAV reading, resampling, log-mel, the CNN encoder."""

import math
import shutil
import subprocess

import pytest
import torch

from mmcore_plugins.encoders.audio import AudioCNNEncoder, LogMelProcessor, mel_filterbank, read_wav, resample

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def speak(tmp_path, word, voice="m3"):
    out = tmp_path / f"{word}-{voice}.wav"
    subprocess.run(["espeak-ng", "-v", f"en+{voice}", "-w", str(out), word], check=True)
    return out


def test_resampling_keeps_a_tone_at_its_frequency():
    t = torch.arange(8000) / 8000
    tone = torch.sin(2 * math.pi * 440 * t)
    up = resample(tone, 8000, 16000)
    assert up.shape == (16000,)
    peak_hz = torch.fft.rfft(up).abs().argmax().item() * 16000 / 16000
    assert peak_hz == pytest.approx(440, abs=1)
    assert up.abs().max().item() == pytest.approx(1.0, abs=0.02)


def test_mel_filters_are_triangles_covering_the_band():
    filters = mel_filterbank(400, 40, 16000)
    assert filters.shape == (201, 40)
    assert (filters >= 0).all() and filters.max(0).values.min() > 0.5


@needs_espeak
def test_real_speech_gives_distinct_spectrograms_per_word(tmp_path):
    processor = LogMelProcessor(sample_rate=16000, n_mels=40)
    seven, seven_again, two = (processor(speak(tmp_path, w, v)) for w, v in [("seven", "m3"), ("seven", "m3"), ("two", "m3")])
    assert seven.shape[0] == 40 and seven.shape[1] > 20
    assert torch.equal(seven, seven_again)
    n = min(seven.shape[1], two.shape[1])
    assert (seven[:, :n] - two[:, :n]).abs().mean() > 0.3


@needs_espeak
def test_encoder_runs_on_real_wavs_with_padding_masks(tmp_path):
    encoder = AudioCNNEncoder(dim=16, n_mels=40, width=8).eval()
    processor = encoder.processor()
    batch = processor.collate([processor(speak(tmp_path, "one")), None, processor(speak(tmp_path, "seventeen"))])
    feats = encoder(batch)
    assert feats.present.tolist() == [True, False, True]
    assert feats.mask[0].sum() < feats.mask[2].sum(), "the shorter word has fewer real frames"


def test_corrupt_wav_is_reported_with_its_path(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not a wav")
    with pytest.raises(ValueError, match="cannot read WAV file .*bad.wav"):
        read_wav(bad)
    with pytest.raises(ValueError, match="non-empty 1-D signal"):
        LogMelProcessor()(torch.zeros(2, 3))
