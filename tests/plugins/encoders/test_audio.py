"""Audio front end on real espeak-ng speech: reading (through mmcore_plugins.io), resampling, log-mel, the encoders."""

import math
import shutil
import subprocess

import pytest
import torch

from mmcore_plugins.encoders.audio import (
    AudioCNNEncoder,
    AudioTransformerEncoder,
    LogMelProcessor,
    mel_filterbank,
    read_wav,
    resample,
    spec_augment,
)

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
    with pytest.raises(ValueError, match="cannot read audio .*bad.wav"):
        read_wav(bad)
    with pytest.raises(ValueError, match="must hold samples"):
        LogMelProcessor()(torch.zeros(0))
    with pytest.raises(ValueError, match=r"\[T\], \[channels, T\] or \[T, channels\]"):
        LogMelProcessor()(torch.zeros(2, 3, 4))


def test_downsampling_removes_what_the_new_rate_cannot_hold():
    t = torch.arange(16000) / 16000
    low, high = torch.sin(2 * math.pi * 500 * t), torch.sin(2 * math.pi * 6000 * t)
    down = resample(low + high, 16000, 8000)  # 6 kHz is above the new 4 kHz Nyquist: removed, not aliased to 2 kHz
    spectrum = torch.fft.rfft(down).abs()
    assert spectrum.argmax().item() == 500
    assert spectrum[1900:2100].max() < 0.01 * spectrum[500]


@needs_espeak
def test_patch_transformer_on_real_speech_tokens_follow_the_length(tmp_path):
    encoder = AudioTransformerEncoder(dim=16, n_mels=32, patch_freq=8, patch_time=4, heads=2, layers=1).eval()
    processor = encoder.processor()
    one, long = processor(speak(tmp_path, "one")), processor(speak(tmp_path, "seventeen hundred"))
    feats = encoder(processor.collate([one, None, long]))
    assert feats.present.tolist() == [True, False, True]
    assert feats.mask[0].sum() == 4 * -(-one.shape[1] // 4)  # 32 mels / 8 = 4 frequency patches per time patch
    assert feats.mask[0].sum() < feats.mask[2].sum() and not feats.mask[1].any()
    # Padding does not change a sample's features: alone or batched with a longer clip, the same.
    alone = encoder(processor.collate([one]))
    torch.testing.assert_close(alone.pooled[0], feats.pooled[0], atol=1e-5, rtol=1e-4)


@needs_espeak
def test_real_digits_are_told_apart_by_a_nearest_neighbour_on_log_mels(tmp_path):
    """Two voices say each digit; the other voice's same digit is the nearest spectrogram (time-aligned)."""
    processor = LogMelProcessor(sample_rate=8000, n_mels=32, n_fft=200, hop=80)
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

    def fixed(word, voice):
        mel = processor(speak(tmp_path, word, voice))
        return torch.nn.functional.interpolate(mel[None], size=24, mode="linear", align_corners=False)[0].flatten()

    a = torch.stack([fixed(w, "m3") for w in words])
    b = torch.stack([fixed(w, "m1") for w in words])
    correct = (torch.cdist(a, b).argmin(1) == torch.arange(10)).sum().item()
    assert correct >= 7, f"only {correct} of 10 digits matched across voices"


@pytest.mark.parametrize("blocks", [1, 3])
def test_cnn_features_of_a_clip_do_not_depend_on_the_batch_it_is_in(blocks):
    encoder = AudioCNNEncoder(dim=16, n_mels=16, width=8, blocks=blocks).eval()
    processor = encoder.processor()
    g = torch.Generator().manual_seed(0)
    short, long = processor(torch.randn(3000, generator=g)), processor(torch.randn(9000, generator=g))
    alone, batched = encoder(processor.collate([short])), encoder(processor.collate([short, None, long]))
    torch.testing.assert_close(alone.pooled[0], batched.pooled[0], atol=1e-5, rtol=1e-4)
    assert batched.mask.sum(1).tolist()[:2] == [alone.mask.sum().item(), 0]


def test_spec_augment_masks_only_in_training():
    mels, mask = torch.randn(2, 16, 50), torch.ones(2, 50, dtype=torch.bool)
    masked = spec_augment(mels, mask, generator=torch.Generator().manual_seed(0))
    assert (masked == 0).any() and ((masked == 0) | (masked == mels)).all()
    encoder = AudioCNNEncoder(dim=8, n_mels=16, width=8, spec_augment=True)
    processor = encoder.processor()
    batch = processor.collate([processor(torch.randn(4000))])
    encoder.eval()
    torch.testing.assert_close(encoder(batch).pooled, encoder(batch).pooled)


def test_24_bit_and_stereo_wavs_are_read(tmp_path):
    import wave

    samples = torch.tensor([0, 2**22, -(2**22), 2**23 - 1], dtype=torch.int64)
    raw = bytearray()
    for s in samples.tolist():
        raw += (s & 0xFFFFFF).to_bytes(3, "little")
    with wave.open(str(tmp_path / "a.wav"), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(3)
        f.setframerate(8000)
        f.writeframes(bytes(raw))
    wav, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000
    torch.testing.assert_close(wav, torch.tensor([0.25, 0.25]), atol=1e-6, rtol=0)  # (0 + 0.5) / 2, (-0.5 + 1) / 2


def test_a_truncated_24_bit_wav_is_a_named_error(tmp_path):
    """Its header claims more audio than the file holds: refused by name (issue 12), not half-read."""
    import wave

    with wave.open(str(tmp_path / "t.wav"), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(3)
        f.setframerate(8000)
        f.writeframes((2**22).to_bytes(3, "little") * 4)
    data = (tmp_path / "t.wav").read_bytes()
    (tmp_path / "t.wav").write_bytes(data[:-1])  # cut in the middle of the last sample
    with pytest.raises(ValueError, match=r"t\.wav.*header claims 12 bytes of audio but the file holds 11"):
        read_wav(tmp_path / "t.wav")


def test_batched_log_mels_equal_the_per_clip_ones_with_missing_and_short_clips():
    """``batch_steps``: the waveforms decoded one by one, the spectrograms of the batch in one STFT -- what a server
    does -- equal ``collate([processor(w), ...])``: clips of every length (shorter than n_fft, exactly n_fft, a
    few frames, long), a missing one, any batch."""
    processor = LogMelProcessor(sample_rate=8000, n_mels=16, n_fft=200, hop=80, max_seconds=1.0)
    decode, collate_decoded = processor.batch_steps()
    generator = torch.Generator().manual_seed(0)
    clips = [torch.randn(n, generator=generator) * 0.3 for n in (1, 50, 199, 200, 201, 330, 1000, 2222, 8000)]
    batch = [clips[3], None, *clips, None]
    expected = processor.collate([None if w is None else processor(w) for w in batch])
    got = collate_decoded([None if w is None else decode(w) for w in batch])
    assert got["mels"].shape == expected["mels"].shape
    assert torch.equal(got["mask"], expected["mask"]) and torch.equal(got["present"], expected["present"])
    assert (got["mels"] - expected["mels"]).abs().max() <= 2e-6  # float32 sums in another order, |z|^2 as re^2 + im^2
    for w in clips:  # one clip alone
        assert (collate_decoded([w])["mels"] - processor.collate([processor(w)])["mels"]).abs().max() <= 2e-6
    assert torch.equal(collate_decoded([None, None])["present"], torch.tensor([False, False]))

    class Louder(LogMelProcessor):
        def logmel(self, wav):
            return super().logmel(wav * 2)

    assert Louder(sample_rate=8000, n_mels=16, n_fft=200, hop=80).batch_steps() is None  # its own steps hold
