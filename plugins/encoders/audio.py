"""Audio: WAV / waveform -> resampling -> log-mel spectrogram (pure PyTorch) -> ``audio_cnn`` encoder."""

from __future__ import annotations

import math
import os
import wave
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

import mmcore
from mmcore import Features


def read_wav(path: str | os.PathLike) -> tuple[torch.Tensor, int]:
    """A PCM WAV file (8/16/32-bit, any channel count) -> mono float waveform in [-1, 1] and its rate."""
    try:
        with wave.open(os.fspath(path), "rb") as f:
            rate, width, channels, frames = f.getframerate(), f.getsampwidth(), f.getnchannels(), f.readframes(f.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise ValueError(f"cannot read WAV file {os.fspath(path)!r}: {exc}") from exc
    dtype = {1: torch.uint8, 2: torch.int16, 4: torch.int32}.get(width)
    if dtype is None:
        raise ValueError(f"{os.fspath(path)!r}: unsupported sample width {width * 8} bits (expected 8, 16 or 32)")
    data = torch.frombuffer(bytearray(frames), dtype=dtype).float()
    data = (data - 128) / 128 if width == 1 else data / float(2 ** (8 * width - 1))
    return data.view(-1, channels).mean(1), rate


def resample(waveform: torch.Tensor, source_rate: int, target_rate: int) -> torch.Tensor:
    """Band-limited resampling in the frequency domain (ideal low-pass when downsampling)."""
    if source_rate == target_rate:
        return waveform
    n = waveform.shape[-1]
    m = max(1, round(n * target_rate / source_rate))
    spectrum = torch.fft.rfft(waveform)
    keep = min(spectrum.shape[-1], m // 2 + 1)
    out = torch.zeros(m // 2 + 1, dtype=spectrum.dtype)
    out[:keep] = spectrum[:keep]
    return torch.fft.irfft(out, n=m) * (m / n)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """Triangular HTK-mel filters ``[n_fft // 2 + 1, n_mels]``."""
    f_max = f_max or sample_rate / 2

    def to_mel(f):
        return 2595.0 * math.log10(1.0 + f / 700.0)

    mels = torch.linspace(to_mel(f_min), to_mel(f_max), n_mels + 2)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, center, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - lower) / (center - lower)
    down = (upper - freqs[None]) / (upper - center)
    return torch.clamp(torch.minimum(up, down), min=0).T


class LogMelProcessor(mmcore.Processor):
    """WAV path or waveform (array/tensor at ``sample_rate``, or ``(waveform, rate)``) -> log-mel ``[n_mels, T]``."""

    def __init__(self, sample_rate: int = 16000, n_mels: int = 64, n_fft: int = 400, hop: int = 160, max_seconds: float = 4.0) -> None:
        self.sample_rate, self.n_mels, self.n_fft, self.hop, self.max_seconds = sample_rate, n_mels, n_fft, hop, max_seconds
        self.filters = mel_filterbank(n_fft, n_mels, sample_rate)
        self.window = torch.hann_window(n_fft)

    def waveform(self, raw: Any) -> torch.Tensor:
        if isinstance(raw, (str, os.PathLike)):
            wav, rate = read_wav(raw)
        elif isinstance(raw, tuple) and len(raw) == 2:
            wav, rate = torch.as_tensor(raw[0], dtype=torch.float32), int(raw[1])
        else:
            try:
                wav, rate = torch.as_tensor(raw, dtype=torch.float32), self.sample_rate
            except (TypeError, ValueError, RuntimeError) as exc:
                raise TypeError(f"audio must be a WAV path, a waveform, or (waveform, rate), got {type(raw).__name__}") from exc
        if wav.dim() != 1 or wav.numel() == 0:
            raise ValueError(f"a waveform must be a non-empty 1-D signal, got shape {list(wav.shape)}")
        wav = resample(wav, rate, self.sample_rate)
        return wav[: int(self.max_seconds * self.sample_rate)]

    def __call__(self, raw: Any) -> torch.Tensor:
        wav = self.waveform(raw)
        if wav.numel() < self.n_fft:
            wav = torch.nn.functional.pad(wav, (0, self.n_fft - wav.numel()))
        spec = torch.stft(wav, self.n_fft, self.hop, window=self.window, return_complex=True).abs() ** 2
        logmel = torch.log(spec.T @ self.filters + 1e-6).T  # [n_mels, T]
        # Per-utterance standardisation: loudness-invariant, and padding (zeros) sits at the mean.
        return (logmel - logmel.mean()) / logmel.std().clamp_min(1e-5)

    def collate(self, items: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor]:
        length = max((i.shape[1] for i in items if i is not None), default=1)
        mels = torch.zeros(len(items), self.n_mels, length)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        for row, item in enumerate(items):
            if item is not None:
                mels[row, :, : item.shape[1]] = item
                mask[row, : item.shape[1]] = True
        return {"mels": mels, "mask": mask, "present": torch.tensor([i is not None for i in items])}

    def example(self, generator: torch.Generator) -> torch.Tensor:
        seconds = 0.1 + 0.2 * float(torch.rand((), generator=generator))
        return torch.randn(int(seconds * self.sample_rate), generator=generator) * 0.1


class AudioCNNEncoder(mmcore.Encoder):
    """CNN over log-mel spectrograms; tokens over time [B, T/4, dim] with masks, pooled over real frames."""

    modality = "audio"

    def __init__(self, dim: int = 128, sample_rate: int = 16000, n_mels: int = 64, width: int = 32,
                 dropout: float = 0.1, spec_augment: bool = False) -> None:
        super().__init__()
        self.dim, self.sample_rate, self.n_mels, self.spec_augment = dim, sample_rate, n_mels, spec_augment

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.GELU(), nn.MaxPool2d(2))

        self.net = nn.Sequential(block(1, width), block(width, 2 * width), nn.Dropout(dropout))
        self.project = nn.Linear(2 * width * (n_mels // 4), dim)

    def processor(self) -> LogMelProcessor:
        return LogMelProcessor(sample_rate=self.sample_rate, n_mels=self.n_mels)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> Features:
        mels, mask, present = batch["mels"], batch["mask"], batch["present"].bool()
        x = mels * mask[:, None, :]
        if self.training and self.spec_augment:
            x = _spec_augment(x)
        maps = self.net(x[:, None])  # [B, C, F/4, T/4]
        tokens = self.project(maps.flatten(1, 2).transpose(1, 2))
        frames = tokens.shape[1]
        token_mask = mask[:, : frames * 4 : 4][:, :frames]
        return Features.from_tokens(tokens, token_mask, present)


def _spec_augment(x: torch.Tensor, freq_width: int = 8, time_width: int = 10) -> torch.Tensor:
    """SpecAugment-style masking: one random frequency band and one time span zeroed per sample."""
    b, n_mels, length = x.shape
    f0 = torch.randint(0, max(1, n_mels - freq_width), (b, 1, 1))
    t0 = torch.randint(0, max(1, length - time_width), (b, 1, 1))
    freqs = torch.arange(n_mels)[None, :, None]
    times = torch.arange(length)[None, None, :]
    keep = ~(((freqs >= f0) & (freqs < f0 + freq_width)) | ((times >= t0) & (times < t0 + time_width)))
    return x * keep


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_encoder("audio_cnn", AudioCNNEncoder, modality="audio", example_options={"dim": 16, "n_mels": 16, "width": 8})
