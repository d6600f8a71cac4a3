"""`av_digits`: handwritten digits (image) + the digit spoken by espeak-ng in many voices (audio) + the
digit written as a word in one of several languages (text, present for only part of the samples).

Everything is real and offline: scikit-learn's bundled 8x8 digits (1797 images) and speech
synthesised by espeak-ng. The data set is generated once, deterministically from its options,
into a cache folder (``root``, default ``$MMCORE_CACHE/av_digits`` or
``~/.cache/mmcore/av_digits``, one sub-folder per hash of the options) as PNG + WAV +
``manifest.jsonl``; after that it is an ordinary ``manifest`` data set.

Voices: a *speaker* is an espeak-ng voice variant (m3, f2, Alex, ...) with its own English
accent (en-us, en-gb, scottish, caribbean, ...) and pitch, both drawn from the seed. Train, val
and test use disjoint speakers (``test_voices``/``val_voices`` of them held out), so test
accuracy is on voices never heard in training. Each speaker says the ten digits once per speed
(one espeak-ng call per (speaker, speed); utterances are reused by every sample that needs them).

Degradations are applied once, at generation, with noise drawn per sample from the seed (so
the files are the same on every machine): ``image_noise`` adds Gaussian noise of that standard
deviation to the [0, 1] image (then clipped to [0, 1]: PNG stores 8 bits); ``audio_snr_db``
adds white noise at that signal-to-noise ratio over the whole clip and the full band of the
``audio_rate`` recording; ``text_typos`` hits each character with a typo with that
probability. ``train_views`` > 1 writes that many independently degraded copies of each
training sample (same clean digit, voice and word; fresh noise): noise augmentation that needs
no trainer support. Validation and test samples always have one view.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import torch

import mmcore
from mmcore.data import SampleDataset
from mmcore_plugins.datasets._generated import generated_folder, write_jsonl
from mmcore_plugins.datasets._speech import espeak_executable, speak

#: espeak-ng voice variants that sound human (robots, whispers and novelty voices left out).
VOICES = (
    "adam Alex Alicia Andrea Andy Annie antonio aunty belinda benjamin boris caleb david Denis Diogo ed edward "
    "edward2 Gene Gene2 gustave Henrique Hugo iven iven2 iven3 iven4 Jacky john kaukovalta Lee linda marcelo "
    "Marco Mario max Michael michel miguel Mike Mr Nguyen pablo paul pedro quincy rob robert steph steph2 steph3 "
    "Storm zac anika AnxiousAndy f1 f2 f3 f4 f5 grandpa klatt klatt2 klatt3 klatt4 klatt5 klatt6 m1 m2 m3 m4 "
    "m5 m6 m7 m8 norbert sandro shelby travis victor grandma"
).split()
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc")
SPEEDS = (140, 175)
PITCHES = (30, 70)  # espeak-ng -p range a speaker's pitch is drawn from (default 50)
WORDS = {
    "en": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "fr": ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"],
    "de": ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"],
    "es": ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"],
    "it": ["zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove"],
    "pt": ["zero", "um", "dois", "três", "quatro", "cinco", "seis", "sete", "oito", "nove"],
    "nl": ["nul", "een", "twee", "drie", "vier", "vijf", "zes", "zeven", "acht", "negen"],
}
#: Bump when generation changes: the cache folder name includes it.
FORMAT_VERSION = 3
N_DIGITS = 1797


def default_root() -> Path:
    """``$MMCORE_CACHE/av_digits``, or ``~/.cache/mmcore/av_digits``."""
    return Path(os.environ.get("MMCORE_CACHE", Path.home() / ".cache" / "mmcore")) / "av_digits"


def speakers(seed: int, test_voices: int, val_voices: int) -> dict[str, list[tuple[str, str, int]]]:
    """``{split: [(variant, accent, pitch), ...]}`` with disjoint variants per split, drawn from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    order = [VOICES[i] for i in torch.randperm(len(VOICES), generator=g).tolist()]
    people = [(v, ACCENTS[int(torch.randint(len(ACCENTS), (1,), generator=g))],
               int(torch.randint(PITCHES[0], PITCHES[1] + 1, (1,), generator=g))) for v in order]
    return {"test": people[:test_voices], "val": people[test_voices : test_voices + val_voices],
            "train": people[test_voices + val_voices :]}


def typos(text: str, rate: float, g: torch.Generator) -> str:
    """Each character deleted, doubled, swapped with the next or replaced by a letter with probability ``rate``."""
    if rate <= 0:
        return text
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if float(torch.rand((), generator=g)) >= rate:
            out.append(c)
        else:
            kind = int(torch.randint(4, (1,), generator=g))
            if kind == 1:
                out += [c, c]
            elif kind == 2 and i + 1 < len(text):
                out += [text[i + 1], c]
                i += 1
            elif kind == 3:
                out.append(string.ascii_lowercase[int(torch.randint(26, (1,), generator=g))])
        i += 1
    return "".join(out) or text[0]


def _write_wav(path: Path, wav: torch.Tensor, rate: int) -> None:
    pcm = (wav.clamp(-1, 1) * 32767).round().to(torch.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.numpy().tobytes())


def _add_noise(wav: torch.Tensor, snr_db: float, g: torch.Generator) -> torch.Tensor:
    noise_power = wav.pow(2).mean() / (10 ** (snr_db / 10))
    noisy = wav + noise_power.sqrt() * torch.randn(wav.shape, generator=g)
    return noisy / noisy.abs().max().clamp_min(1.0)  # scale down only if it would clip


def generate(root: Path, *, seed: int, image_noise: float, audio_snr_db: float | None, text_fraction: float,
             text_typos: float, languages: list[str], test_voices: int, val_voices: int, test_fraction: float,
             val_fraction: float, train_views: int, audio_rate: int, size: int | None, workers: int = 2) -> Path:
    """Write the data set into ``root`` (atomically: a half-written folder is never used); return the manifest."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from mmcore_plugins.io import resample

    espeak_executable()  # fail early, with the install hint
    digits = load_digits()
    groups = speakers(seed, test_voices, val_voices)
    g = torch.Generator().manual_seed(seed + 1)
    order = torch.randperm(N_DIGITS, generator=g).tolist()[: size or N_DIGITS]
    draws = torch.rand(len(order), generator=g).tolist()
    split_of = {i: ("test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train")
                for i, u in zip(order, draws, strict=True)}
    plan = {}
    for i in order:
        people = groups[split_of[i]]
        plan[i] = (people[int(torch.randint(len(people), (1,), generator=g))], SPEEDS[int(torch.randint(len(SPEEDS), (1,), generator=g))])

    # Synthesis: one espeak-ng call per (speaker, speed) actually used, two at a time (the work
    # is in the espeak-ng processes; threads only wait for them).
    needed = sorted({plan[i] for i in order})

    def say(key):
        (variant, accent, pitch), speed = key
        words, rate = speak(WORDS["en"], f"{accent}+{variant}", speed, pitch)
        return [resample(w, rate, audio_rate) for w in words]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        utterances = dict(zip(needed, pool.map(say, needed), strict=True))

    with generated_folder(root, prefix=".av_digits-") as tmp:
        (tmp / "images").mkdir()
        (tmp / "audio").mkdir()
        rows = []
        for i in sorted(order):
            d, split = int(digits.target[i]), split_of[i]
            (variant, accent, pitch), speed = plan[i]
            ng = torch.Generator().manual_seed(seed * 1_000_003 + i)  # this sample's own noise stream
            text = ""
            if float(torch.rand((), generator=ng)) < text_fraction:
                language = languages[int(torch.randint(len(languages), (1,), generator=ng))]
                text = typos(WORDS[language][d], text_typos, ng)
            lead = torch.zeros(int(torch.randint(0, audio_rate // 10, (1,), generator=ng)))
            clean_wav = torch.cat([lead, utterances[plan[i]][d], torch.zeros(audio_rate // 20)])
            clean_image = torch.tensor(digits.images[i], dtype=torch.float32) / 16.0
            for view in range(train_views if split == "train" else 1):
                name = f"{i:04d}" if view == 0 else f"{i:04d}_{view}"
                image = (clean_image + image_noise * torch.randn(clean_image.shape, generator=ng)).clamp(0, 1)
                Image.fromarray((image * 255).round().to(torch.uint8).numpy(), mode="L").save(tmp / "images" / f"{name}.png")
                wav = clean_wav if audio_snr_db is None else _add_noise(clean_wav, audio_snr_db, ng)
                _write_wav(tmp / "audio" / f"{name}.wav", wav, audio_rate)
                rows.append({"id": i, "view": view, "image": f"images/{name}.png", "audio": f"audio/{name}.wav",
                             "text": text, "label": d, "voice": f"{variant}@{accent}", "speed": speed, "split": split})
        write_jsonl(tmp / "manifest.jsonl", rows)
    return root / "manifest.jsonl"


def load_av_digits(
    split: Literal["train", "val", "test"],
    root: str | None = None,
    seed: int = 0,
    image_noise: float = 0.0,
    audio_snr_db: float | None = None,
    text_fraction: float = 0.4,
    text_typos: float = 0.0,
    languages: list[str] | None = None,
    test_voices: int = 16,
    val_voices: int = 8,
    test_fraction: float = 0.25,
    val_fraction: float = 0.15,
    train_views: int = 1,
    audio_rate: int = 16000,
    size: int | None = None,
    modalities: list[str] | None = None,
) -> SampleDataset:
    """Digits as image + espeak-ng speech (speaker-disjoint splits) + words in 7 languages (text partly missing)."""
    if image_noise < 0:
        raise ValueError(f"image_noise must be >= 0, got {image_noise}")
    for name, value in (("text_fraction", text_fraction), ("text_typos", text_typos)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise ValueError(f"test_fraction and val_fraction must be in [0, 1) and leave training data, got {test_fraction}, {val_fraction}")
    if test_voices < 1 or val_voices < 1 or test_voices + val_voices > len(VOICES) - 4:
        raise ValueError(f"test_voices and val_voices must be >= 1 and leave at least 4 of the {len(VOICES)} voices "
                         f"for training, got {test_voices} and {val_voices}")
    if train_views < 1:
        raise ValueError(f"train_views must be >= 1, got {train_views}")
    if not 4000 <= audio_rate <= 48000:
        raise ValueError(f"audio_rate must be in 4000..48000 Hz, got {audio_rate}")
    if size is not None and not 10 <= size <= N_DIGITS:
        raise ValueError(f"size must be in 10..{N_DIGITS} (or null for all), got {size}")
    languages = list(languages) if languages is not None else list(WORDS)
    unknown = sorted(set(languages) - set(WORDS)) or ([] if languages else ["(none)"])
    if unknown:
        raise ValueError(f"languages must be a non-empty list among {sorted(WORDS)}, got unknown {unknown}")
    wanted = modalities if modalities is not None else ["image", "audio", "text"]
    bad = sorted(set(wanted) - {"image", "audio", "text"})
    if bad or not wanted:
        raise ValueError(f"modalities must be a non-empty list among image, audio, text; got {wanted}")
    options = {"seed": seed, "image_noise": image_noise, "audio_snr_db": audio_snr_db, "text_fraction": text_fraction,
               "text_typos": text_typos, "languages": languages, "test_voices": test_voices, "val_voices": val_voices,
               "test_fraction": test_fraction, "val_fraction": val_fraction, "train_views": train_views,
               "audio_rate": audio_rate, "size": size, "version": FORMAT_VERSION}
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    folder = (Path(root).expanduser() if root else default_root()) / key
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        generate(folder, **{k: v for k, v in options.items() if k != "version"})
    from mmcore_plugins.datasets.manifest import load_manifest

    # Files were written by `generate` just now or earlier: check they exist, skip decoding them all.
    dataset = load_manifest(split, str(manifest), columns={m: m for m in wanted}, target="label",
                            path_columns=["image", "audio"], split_column="split", validate="exists",
                            target_type="class", num_classes=10)  # the digit is the class index, in every split
    dataset.metadata.update({"num_classes": 10, "class_names": WORDS["en"], "root": str(folder), "options": options})
    return dataset


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    # example_options: a small data set for the conformance kit (the full one is synthesised for minutes)
    registry.add_dataset("av_digits", load_av_digits, example_options={"size": 60})
