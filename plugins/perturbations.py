"""Built-in perturbations of raw inputs, for robustness evaluation (``mmcore eval --robustness``)
and train-time augmentation (``trainer.augment``).

A perturbation is registered with the modality it applies to; its factory takes a ``level``
(0 = unchanged, larger = stronger) and returns a callable ``(raw, generator) -> raw`` that
works on the same raw values the encoders' processors read (file paths, PIL images, arrays,
waveforms, strings, rows of numbers) and returns a raw value those processors accept. The
class attribute ``levels`` is the default sweep of ``mmcore eval --robustness``.
"""

from __future__ import annotations

import io
import os
import string
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

import mmcore

# The base class is mmcore's (mmcore.Perturbation); the name stays importable from here.
Perturbation = mmcore.Perturbation


# ------------------------------------------------------------------------------ images
def _image_tensor(raw: Any) -> torch.Tensor:
    """Path / PIL image / array / tensor -> float ``[C, H, W]`` in [0, 1], read by
    :func:`mmcore_plugins.io.read_image` with its own channels (grey stays grey, colour is RGB, alpha
    composited on white)."""
    from mmcore_plugins.io import read_image

    return read_image(raw, channels=None)


class ImageGaussianNoise(Perturbation):
    """Image: additive Gaussian pixel noise of standard deviation ``level`` (pixels in [0, 1]), clipped."""

    levels = (0.1, 0.3, 0.6, 1.0)

    def __call__(self, raw: Any, generator: torch.Generator) -> torch.Tensor:
        x = _image_tensor(raw)
        return (x + self.level * torch.randn(x.shape, generator=generator)).clamp(0, 1)


class ImageBlur(Perturbation):
    """Image: Gaussian blur with a standard deviation of ``level`` pixels (of the raw image)."""

    levels = (0.5, 1.0, 1.5, 2.5)

    def __call__(self, raw: Any, generator: torch.Generator) -> torch.Tensor:
        x = _image_tensor(raw)
        if self.level <= 0:
            return x
        radius = max(1, int(3 * self.level + 0.5))
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (t / self.level) ** 2)
        kernel = kernel / kernel.sum()
        c = x.shape[0]
        y = x[None]
        pad_h, pad_w = min(radius, x.shape[1] - 1), min(radius, x.shape[2] - 1)
        # Separable blur with reflected borders (kernel cropped where the image is smaller).
        y = F.pad(y, (pad_w, pad_w, 0, 0), mode="reflect" if pad_w else "replicate")
        # A cropped kernel is renormalised, so a small image keeps its brightness.
        kw, kh = kernel[radius - pad_w : radius + pad_w + 1], kernel[radius - pad_h : radius + pad_h + 1]
        y = F.conv2d(y, (kw / kw.sum()).view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
        y = F.pad(y, (0, 0, pad_h, pad_h), mode="reflect" if pad_h else "replicate")
        y = F.conv2d(y, (kh / kh.sum()).view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
        return y[0].clamp(0, 1)


# ------------------------------------------------------------------------------ audio
#: Seconds of a file an audio perturbation reads. A perturbation runs before the encoder's processor,
#: which keeps at most its own ``max_seconds`` (4 s by default, fit plans at most 10 s), so this only
#: bounds memory: a file whose header claims hours (a crafted 3 GiB WAV is 1.6 billion frames, 6 GiB
#: as float32) is read as its first 10 minutes, as any encoder would read less still (issue 28).
PERTURB_MAX_SECONDS = 600.0


def _waveform(raw: Any) -> tuple[torch.Tensor, int | None]:
    """Audio path / (waveform, rate) / waveform -> (mono float waveform, rate or None when unknown), read by
    :mod:`mmcore_plugins.io` at the clip's own rate (files: any format libsndfile reads; at most
    :data:`PERTURB_MAX_SECONDS` of them)."""
    from mmcore_plugins.io import load_audio, read_audio

    if isinstance(raw, (str, os.PathLike, io.IOBase)):  # a file, or its bytes (a shard's member): its own rate
        return load_audio(raw, max_seconds=PERTURB_MAX_SECONDS)
    if isinstance(raw, tuple) and len(raw) == 2:
        rate = int(raw[1])
        return read_audio(raw, sample_rate=rate), rate
    return read_audio(raw, sample_rate=16000), None  # rate unknown: no resampling happens at equal rates


def _same_form(wav: torch.Tensor, rate: int | None) -> Any:
    return (wav, rate) if rate is not None else wav


class AudioWhiteNoise(Perturbation):
    """Audio: added white noise whose RMS is ``level`` times the signal's (SNR = -20 log10(level) dB)."""

    levels = (0.5, 1.0, 2.0, 4.0)
    unit = "dB SNR"

    def __call__(self, raw: Any, generator: torch.Generator) -> Any:
        wav, rate = _waveform(raw)
        rms = wav.pow(2).mean().sqrt()
        noisy = wav + self.level * rms * torch.randn(wav.shape, generator=generator)
        return _same_form(noisy / noisy.abs().max().clamp_min(1.0), rate)

    @classmethod
    def describe(cls, level: float) -> str:
        import math

        snr = round(-20 * math.log10(level)) if level > 0 else None
        return "clean" if snr is None else f"{snr:+d} dB" if snr else "0 dB"  # never "-0 dB"


class AudioSpeed(Perturbation):
    """Audio: played faster or slower by a factor 1 +- ``level`` (tempo and pitch move together: another voice)."""

    levels = (0.05, 0.1, 0.2, 0.3)

    def __call__(self, raw: Any, generator: torch.Generator) -> Any:
        from mmcore_plugins.io import resample

        wav, rate = _waveform(raw)
        sign = 1.0 if float(torch.rand((), generator=generator)) < 0.5 else -1.0
        factor = max(0.2, 1.0 + sign * self.level)
        # Resampling from `factor * 1000` to 1000 Hz shortens (factor > 1) or stretches the clip.
        return _same_form(resample(wav, round(1000 * factor), 1000), rate)


# ------------------------------------------------------------------------------ text
def _text(raw: Any) -> str:
    """A str is the text; a pathlib.Path a text file to read (as the text processors do)."""
    from mmcore_plugins.encoders.text import text_of

    return text_of(raw)


class TextWordDropout(Perturbation):
    """Text: each word removed with probability ``level``."""

    levels = (0.1, 0.3, 0.5, 0.8)

    def __call__(self, raw: Any, generator: torch.Generator) -> str:
        words = _text(raw).split()
        keep = torch.rand(len(words), generator=generator) >= self.level
        return " ".join(w for w, k in zip(words, keep.tolist(), strict=True) if k)


class TextTypos(Perturbation):
    """Text: each character hit by a typo (deleted, doubled, swapped or replaced) with probability ``level``."""

    levels = (0.05, 0.1, 0.2, 0.4)

    def __call__(self, raw: Any, generator: torch.Generator) -> str:
        chars = list(_text(raw))
        out: list[str] = []
        i = 0
        letters = string.ascii_lowercase
        while i < len(chars):
            c = chars[i]
            if float(torch.rand((), generator=generator)) >= self.level:
                out.append(c)
                i += 1
                continue
            kind = int(torch.randint(4, (1,), generator=generator))
            if kind == 0:  # delete
                pass
            elif kind == 1:  # double
                out += [c, c]
            elif kind == 2 and i + 1 < len(chars):  # swap with the next character
                out += [chars[i + 1], c]
                i += 1
            else:  # replace
                out.append(letters[int(torch.randint(len(letters), (1,), generator=generator))])
            i += 1
        return "".join(out)


# ------------------------------------------------------------------------------ tabular
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TabularFeatureNoise(Perturbation):
    """Tabular: each value multiplied by (1 + ``level`` * N(0, 1)) — relative noise on every numeric
    feature; categorical values (strings, None) pass through unchanged."""

    levels = (0.1, 0.25, 0.5, 1.0)

    def __call__(self, raw: Any, generator: torch.Generator) -> Any:
        if isinstance(raw, Mapping):
            keys = list(raw)
            noise = torch.randn(len(keys), generator=generator, dtype=torch.float64).tolist()
            return {k: float(raw[k]) * (1 + self.level * e) if _is_number(raw[k]) else raw[k]
                    for k, e in zip(keys, noise, strict=True)}
        values = raw.detach().flatten().tolist() if isinstance(raw, torch.Tensor) else list(raw.tolist() if hasattr(raw, "tolist") else raw)
        if not isinstance(values, Sequence) or isinstance(raw, (str, bytes)):
            raise TypeError(f"a tabular row must be a sequence of numbers or a mapping, got {type(raw).__name__}")
        noise = torch.randn(len(values), generator=generator, dtype=torch.float64).tolist()
        return [float(v) * (1 + self.level * e) if _is_number(v) else v for v, e in zip(values, noise, strict=True)]


BUILTIN = {
    "gaussian_noise": (ImageGaussianNoise, "image"),
    "blur": (ImageBlur, "image"),
    "white_noise": (AudioWhiteNoise, "audio"),
    "speed": (AudioSpeed, "audio"),
    "word_dropout": (TextWordDropout, "text"),
    "typos": (TextTypos, "text"),
    "feature_noise": (TabularFeatureNoise, "tabular"),
}


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    for name, (factory, modality) in BUILTIN.items():
        registry.add_perturbation(name, factory, modality=modality, example_options={"level": factory.levels[1]})
