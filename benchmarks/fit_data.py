"""The `mmcore fit` benchmark data set: a table of files as a user would bring one.

Each row is one handwritten digit (scikit-learn's 1797 8x8 digits) with

- ``image``: the digit as an 8x8 grayscale PNG with Gaussian pixel noise (``--image-noise``, on
  [0, 1] pixels, then clipped and stored in 8 bits);
- ``audio``: the digit spoken by **flite** (5 voices: ``kal``, ``kal16``, ``awb``, ``rms``,
  ``slt``), at 4 speaking rates per voice, a random lead-in of silence and white noise at
  ``--snr-db``; written at the voice's own rate (8 kHz for ``kal``, 16 kHz for the others) as
  16-bit WAV. The ``--test-voices`` (default ``rms,slt``) are heard only in the test split:
  train and val use the other three;
- ``hint``: on half of the rows, a free-text note that is weak evidence (it names the digit's
  parity or its size, small = 0-4 / large = 5-9, and is wrong 20% of the time), in varied
  phrasings;
- ``ink``: a number, the digit's total ink (mean clean pixel value) plus noise: weak evidence;
- ``scanner``: a category with three values, independent of the digit (noise for the model);
- ``id``: a unique integer per row (to be ignored);
- ``digit``: the target; ``split``: train / val / test.

About 10% of images and 10% of audio clips are missing (empty cells), independently.

    python benchmarks/fit_data.py data/fit_digits          # ~15 s; needs flite (apt-get install flite)

writes ``images/``, ``audio/``, ``manifest.csv`` and ``manifest.jsonl`` (the same rows) and
``voices.json`` (which voices went where). Everything is drawn from ``--seed``: the same files on
every machine with the same flite.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

VOICES = ("kal", "kal16", "awb", "rms", "slt")
#: flite's duration_stretch: speaking rates per voice (1 = the voice's own).
STRETCHES = (0.8, 0.95, 1.1, 1.3)
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SCANNERS = ("flatbed", "phone camera", "tablet")

_PRE = ("", "I think", "maybe", "probably", "looks like", "hmm,", "the writer says", "quick guess:", "seems")
_POST = ("", "not sure", "I guess", "fairly sure", "at a glance", "don't quote me", "(checked twice)")
_PARITY = {0: ("even", "an even one", "even number", "divisible by two"), 1: ("odd", "an odd one", "odd number", "not divisible by two")}
_SIZE = {0: ("small", "a low digit", "below five", "one of the small ones"), 1: ("large", "a high digit", "five or more", "one of the big ones")}


def synthesise(voices: list[str], workdir: Path) -> dict[tuple[str, int, int], tuple[np.ndarray, int]]:
    """``{(voice, digit, stretch index): (waveform float32, rate)}``, one flite call each."""
    import soundfile as sf

    flite = shutil.which("flite")
    if flite is None:
        raise SystemExit("fit_data.py needs flite: apt-get install -y flite")
    out = {}
    for voice in voices:
        for digit, word in enumerate(WORDS):
            for k, stretch in enumerate(STRETCHES):
                file = workdir / f"{voice}_{digit}_{k}.wav"
                subprocess.run([flite, "-voice", voice, "--setf", f"duration_stretch={stretch}", "-t", word, "-o", str(file)],
                               check=True, capture_output=True)
                wav, rate = sf.read(str(file), dtype="float32")
                out[voice, digit, k] = (wav, rate)
    return out


def hint_text(digit: int, rng: np.random.Generator) -> str:
    """A weak, varied note: parity or size of the digit, wrong 20% of the time."""
    if rng.random() < 0.5:
        truth, words = digit % 2, _PARITY
    else:
        truth, words = int(digit >= 5), _SIZE
    said = truth if rng.random() >= 0.2 else 1 - truth
    phrase = words[said][rng.integers(len(words[said]))]
    pre, post = _PRE[rng.integers(len(_PRE))], _POST[rng.integers(len(_POST))]
    return " ".join(p for p in (pre, phrase + ("," if post else ""), post) if p).rstrip(",")


def generate(out: Path, *, seed: int = 0, image_noise: float = 0.45, snr_db: float = 5.0,
             test_voices: tuple[str, ...] = ("rms", "slt"), missing: float = 0.1, val_fraction: float = 0.15,
             test_fraction: float = 0.3) -> dict:
    import soundfile as sf
    from PIL import Image
    from sklearn.datasets import load_digits

    unknown = set(test_voices) - set(VOICES)
    if unknown or len(test_voices) >= len(VOICES):
        raise SystemExit(f"--test-voices must be some of {VOICES} (not all), got {test_voices}")
    train_voices = [v for v in VOICES if v not in test_voices]
    rng = np.random.default_rng(seed)
    digits = load_digits()
    images, labels = digits.images / 16.0, digits.target
    n = len(labels)
    order = rng.permutation(n)
    n_test, n_val = int(round(test_fraction * n)), int(round(val_fraction * n))
    split = np.empty(n, dtype=object)
    split[order[:n_test]] = "test"
    split[order[n_test:n_test + n_val]] = "val"
    split[order[n_test + n_val:]] = "train"
    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    (out / "audio").mkdir()
    with tempfile.TemporaryDirectory() as tmp:
        speech = synthesise(list(VOICES), Path(tmp))
    ids = rng.permutation(n) + 1000
    rows = []
    for i in range(n):
        digit = int(labels[i])
        row = {"id": int(ids[i]), "image": "", "audio": "", "hint": "", "ink": 0.0, "scanner": "", "digit": digit, "split": split[i]}
        # image: noisy 8-bit PNG
        pixels = np.clip(images[i] + image_noise * rng.standard_normal(images[i].shape), 0, 1)
        if rng.random() >= missing:
            name = f"images/{i:04d}.png"
            Image.fromarray(np.round(pixels * 255).astype(np.uint8), mode="L").save(out / name)
            row["image"] = name
        # audio: a voice of the split, a random rate, lead-in silence, white noise at snr_db
        voices = list(test_voices) if split[i] == "test" else train_voices
        voice = voices[rng.integers(len(voices))]
        wav, rate = speech[voice, digit, int(rng.integers(len(STRETCHES)))]
        lead = np.zeros(int(rng.uniform(0.0, 0.25) * rate), dtype=np.float32)
        clip = np.concatenate([lead, wav, np.zeros(int(0.05 * rate), dtype=np.float32)])
        power = float(np.mean(wav**2)) + 1e-12
        clip = clip + np.sqrt(power / 10 ** (snr_db / 10)) * rng.standard_normal(clip.shape).astype(np.float32)
        clip = clip / max(1.0, float(np.abs(clip).max()))
        if rng.random() >= missing:
            name = f"audio/{i:04d}.wav"
            sf.write(str(out / name), clip, rate, subtype="PCM_16")
            row["audio"] = name
        if rng.random() < 0.5:
            row["hint"] = hint_text(digit, rng)
        row["ink"] = round(float(images[i].mean() + 0.04 * rng.standard_normal()), 4)
        row["scanner"] = SCANNERS[rng.integers(len(SCANNERS))]
        rows.append(row)
    columns = list(rows[0])
    import csv

    with (out / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    with (out / "manifest.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({k: (None if v == "" else v) for k, v in row.items()}) + "\n")
    info = {"train_voices": train_voices, "test_voices": list(test_voices), "seed": seed, "image_noise": image_noise,
            "snr_db": snr_db, "missing": missing, "rows": {s: int((split == s).sum()) for s in ("train", "val", "test")}}
    (out / "voices.json").write_text(json.dumps(info, indent=2))
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output folder (replaced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-noise", type=float, default=0.45, help="Gaussian pixel noise sigma on [0, 1] pixels")
    parser.add_argument("--snr-db", type=float, default=5.0, help="signal-to-noise ratio of the speech, dB")
    parser.add_argument("--test-voices", default="rms,slt", help=f"comma-separated, from {','.join(VOICES)}")
    parser.add_argument("--missing", type=float, default=0.1, help="fraction of missing images (and, independently, audio)")
    args = parser.parse_args()
    info = generate(args.out, seed=args.seed, image_noise=args.image_noise, snr_db=args.snr_db,
                    test_voices=tuple(v.strip() for v in args.test_voices.split(",") if v.strip()), missing=args.missing)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
