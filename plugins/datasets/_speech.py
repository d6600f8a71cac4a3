"""espeak-ng speech synthesis for av_digits: one espeak-ng call per (voice, speed) says all ten digits,
split into words at the long pauses between them."""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Sequence

import torch

INSTALL_HINT = (
    "av_digits synthesises its speech with espeak-ng, which is not installed (or not on PATH). "
    "Install it with: apt-get install espeak-ng  (Debian/Ubuntu; brew install espeak-ng on macOS)"
)

#: Pause between words, in units of 10 ms (espeak-ng's -g): long enough to split on, unlike the
#: short closures inside a word (the stop in "eight", "six").
WORD_GAP = 40
#: Splitting: a quiet stretch longer than this (seconds) separates two words.
MIN_GAP_SECONDS = 0.2
QUIET = 0.01


def espeak_executable() -> str:
    """The espeak-ng executable, or a RuntimeError that says how to install it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError(INSTALL_HINT)
    return exe


def _decode(data: bytes) -> tuple[torch.Tensor, int]:
    """WAV bytes from ``espeak-ng --stdout`` (whose header leaves the length open) -> waveform, rate."""
    from mmcore_plugins.io import load_audio

    return load_audio(io.BytesIO(data))


def speak(words: Sequence[str], voice: str, speed: int, pitch: int) -> tuple[list[torch.Tensor], int]:
    """Say ``words`` in one espeak-ng call; returns each word's waveform (silence trimmed) and the rate.

    ``voice`` is an espeak-ng voice such as ``en-gb+m3`` (language + variant).
    """
    text = " ".join(words)
    cmd = [espeak_executable(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-g", str(WORD_GAP), "--stdout", text]
    result = subprocess.run(cmd, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"espeak-ng failed for voice {voice!r}: {result.stderr.decode(errors='replace').strip()}")
    wav, rate = _decode(result.stdout)
    pieces = split_words(wav, rate)
    if len(pieces) != len(words):
        # Rare: a word with a long internal pause, or two words run together. Say them one by one.
        pieces = [_trim(_decode(subprocess.run(
            [espeak_executable(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", w],
            capture_output=True, check=True).stdout)[0]) for w in words]
    return pieces, rate


def split_words(wav: torch.Tensor, rate: int) -> list[torch.Tensor]:
    """Cut a recording at quiet stretches longer than ``MIN_GAP_SECONDS``."""
    hop = max(1, rate // 100)
    frames = wav[: len(wav) // hop * hop].abs().view(-1, hop).amax(1) > QUIET
    loud = frames.nonzero().flatten().tolist()
    if not loud:
        return []
    min_gap = int(MIN_GAP_SECONDS * 100)
    segments, start, last = [], loud[0], loud[0]
    for i in loud[1:]:
        if i - last > min_gap:
            segments.append((start, last))
            start = i
        last = i
    segments.append((start, last))
    return [wav[a * hop : (b + 1) * hop] for a, b in segments]


def _trim(wav: torch.Tensor) -> torch.Tensor:
    loud = (wav.abs() > QUIET).nonzero()
    return wav[int(loud[0]) : int(loud[-1]) + 1] if len(loud) else wav
