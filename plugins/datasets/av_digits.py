"""`av_digits`: handwritten digits (image) + the digit spoken by espeak-ng in many voices (audio) + the
digit written as a word in one of five languages (text, present for only part of the samples).

Everything is real and offline: scikit-learn's bundled 8x8 digits, speech synthesised by
espeak-ng. The data set is generated once, deterministically from its options, into a cache
folder as PNG + WAV + ``manifest.jsonl``; after that it is an ordinary ``manifest`` data set.
Degradations (image Gaussian noise, audio white noise at a given SNR) are baked into the files
with per-sample seeded noise. The test split uses voices that never occur in train/val.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Literal

import torch

import mmcore
from mmcore.data import SampleDataset

#: espeak-ng voice variants; the last ``TEST_VOICES`` are heard only in the test split.
VOICES = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "Alex", "Andy", "Annie", "Michael"]
SPEEDS = [135, 160, 185]
TEST_VOICES = 4
WORDS = {
    "en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "fr": ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"],
    "de": ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"],
    "es": ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"],
    "it": ["zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove"],
}
AUDIO_RATE = 8000  # speech intelligibility lives below 4 kHz; keeps the cache small


def default_root() -> Path:
    return Path(os.environ.get("MMCORE_CACHE", Path.home() / ".cache" / "mmcore")) / "av_digits"


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError(
            "av_digits synthesises its speech with espeak-ng, which is not installed. "
            "Install it with: sudo apt-get install espeak-ng  (Debian/Ubuntu), or run bash .ci/setup"
        )
    return exe


def _synthesise(text: str, voice: str, speed: int, out: Path) -> torch.Tensor:
    subprocess.run([_espeak(), "-v", f"en+{voice}", "-s", str(speed), "-w", str(out), text], check=True, capture_output=True)
    from mmcore_plugins.encoders.audio import read_wav, resample

    wav, rate = read_wav(out)
    # Trim leading/trailing silence so the word fills the clip.
    loud = (wav.abs() > 0.02).nonzero()
    if len(loud):
        wav = wav[int(loud[0]) : int(loud[-1]) + 1]
    return resample(wav, rate, AUDIO_RATE)


def _write_wav(path: Path, wav: torch.Tensor) -> None:
    pcm = (wav.clamp(-1, 1) * 32767).round().to(torch.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(AUDIO_RATE)
        f.writeframes(pcm.numpy().tobytes())


def generate(root: Path, *, seed: int, image_noise: float, audio_snr_db: float | None, text_fraction: float,
             val_fraction: float) -> Path:
    """Write the data set into ``root`` (atomically: a half-written folder is never used); return the manifest."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    g = torch.Generator().manual_seed(seed)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".av_digits-", dir=root.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "audio").mkdir()
        scratch = tmp / "scratch.wav"
        utterances = {
            (voice, speed, d): _synthesise(WORDS["en"][d], voice, speed, scratch)
            for voice in VOICES for speed in SPEEDS for d in range(10)
        }
        scratch.unlink()
        test_voices = set(VOICES[-TEST_VOICES:])
        train_voices = VOICES[:-TEST_VOICES]
        n = len(digits.target)
        is_test = torch.rand(n, generator=g) < 0.25
        rows = []
        for i in range(n):
            d = int(digits.target[i])
            voices = sorted(test_voices) if is_test[i] else train_voices
            voice = voices[int(torch.randint(len(voices), (1,), generator=g))]
            speed = SPEEDS[int(torch.randint(len(SPEEDS), (1,), generator=g))]
            image = torch.tensor(digits.images[i], dtype=torch.float32) / 16.0
            image = (image + image_noise * torch.randn(image.shape, generator=g)).clamp(0, 1)
            Image.fromarray((image * 255).round().to(torch.uint8).numpy(), mode="L").save(tmp / "images" / f"{i:05d}.png")
            wav = utterances[(voice, speed, d)]
            lead = torch.zeros(int(torch.randint(0, AUDIO_RATE // 10, (1,), generator=g)))
            wav = torch.cat([lead, wav, torch.zeros(AUDIO_RATE // 20)])
            if audio_snr_db is not None:
                signal_power = wav.pow(2).mean()
                noise_power = signal_power / (10 ** (audio_snr_db / 10))
                wav = wav + noise_power.sqrt() * torch.randn(wav.shape, generator=g)
                wav = wav / wav.abs().max().clamp_min(1.0)
            _write_wav(tmp / "audio" / f"{i:05d}.wav", wav)
            text = ""
            if float(torch.rand((), generator=g)) < text_fraction:
                language = list(WORDS)[int(torch.randint(len(WORDS), (1,), generator=g))]
                text = WORDS[language][d]
            split = "test" if is_test[i] else ("val" if float(torch.rand((), generator=g)) < val_fraction else "train")
            rows.append({"image": f"images/{i:05d}.png", "audio": f"audio/{i:05d}.wav", "text": text,
                         "label": d, "voice": f"{voice}@{speed}", "split": split})
        (tmp / "manifest.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        if root.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / "manifest.jsonl"


def load_av_digits(
    split: Literal["train", "val", "test"],
    root: str | None = None,
    seed: int = 0,
    image_noise: float = 0.0,
    audio_snr_db: float | None = None,
    text_fraction: float = 0.4,
    val_fraction: float = 0.15,
    modalities: list[str] | None = None,
) -> SampleDataset:
    """Digits as image + espeak-ng speech (speaker-disjoint test) + words in 5 languages (text partly missing)."""
    if image_noise < 0:
        raise ValueError(f"image_noise must be >= 0, got {image_noise}")
    if not 0.0 <= text_fraction <= 1.0:
        raise ValueError(f"text_fraction must be in [0, 1], got {text_fraction}")
    wanted = modalities if modalities is not None else ["image", "audio", "text"]
    unknown = sorted(set(wanted) - {"image", "audio", "text"})
    if unknown:
        raise ValueError(f"modalities must be among image, audio, text; got {unknown}")
    options = {"seed": seed, "image_noise": image_noise, "audio_snr_db": audio_snr_db,
               "text_fraction": text_fraction, "val_fraction": val_fraction, "version": 1}
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    folder = (Path(root).expanduser() if root else default_root()) / key
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        generate(folder, seed=seed, image_noise=image_noise, audio_snr_db=audio_snr_db,
                 text_fraction=text_fraction, val_fraction=val_fraction)
    from mmcore_plugins.datasets.manifest import load_manifest

    dataset = load_manifest(split, str(manifest), columns={m: m for m in wanted}, target="label",
                            path_columns=["image", "audio"], split_column="split")
    dataset.metadata.update({"num_classes": 10, "root": str(folder), "options": options})
    return dataset


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_dataset("av_digits", load_av_digits)
