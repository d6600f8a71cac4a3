"""pytest-benchmark suite: preprocessing + collate throughput per modality, and what the frozen-feature
cache saves.

    python -m pytest benchmarks/bench_preprocessing.py --benchmark-only
    python benchmarks/bench_preprocessing.py          # the same, as one table (samples/s, speed-up)

Inputs are real files: scikit-learn's 8x8 digits and photo crops as PNG, espeak-ng speech as WAV
(a synthetic vowel-like tone when espeak-ng is missing), multilingual words, wine rows, and
clips of panned photo crops. Each case processes and collates one batch of ``BATCH`` raw samples
(the work a DataLoader worker does per batch); ``extra_info["samples_per_s"]`` is the throughput.
The cache cases time a forward of a frozen ResNet-18 (``image_size`` 64) over one batch, with
the features computed vs. served by :class:`mmcore.data.FeatureCache`.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

import mmcore
from mmcore.data import FeatureCache, SampleDataset, attach_feature_cache, precompute_features

BATCH = 32


def _write_wav(path: Path, wav: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(wav, -1, 1) * 32767).astype(np.int16).tobytes())


def make_inputs(folder: Path) -> dict[str, list]:
    """``BATCH`` real raw samples per modality, written under ``folder``."""
    from PIL import Image
    from sklearn.datasets import load_digits, load_sample_image, load_wine

    digits, photo = load_digits(), load_sample_image("flower.jpg")
    images, photos, wavs, clips = [], [], [], []
    words = ["sept", "sieben", "seven", "siete", "sette", "huit", "acht", "eight"]
    for i in range(BATCH):
        Image.fromarray((digits.images[i] * 16).astype(np.uint8)).save(folder / f"digit{i}.png")
        images.append(str(folder / f"digit{i}.png"))
        Image.fromarray(np.ascontiguousarray(photo[i : i + 200, 2 * i : 2 * i + 200])).save(folder / f"photo{i}.png")
        photos.append(str(folder / f"photo{i}.png"))
        wav = folder / f"speech{i}.wav"
        if shutil.which("espeak-ng"):
            subprocess.run(["espeak-ng", "-v", "en+m3", "-w", str(wav), words[i % len(words)]], check=True, capture_output=True)
        else:
            t = np.arange(int(22050 * (0.4 + 0.01 * i))) / 22050
            _write_wav(wav, 0.3 * np.sin(2 * math.pi * (120 + 5 * i) * t) * np.sin(2 * math.pi * 3 * t), 22050)
        wavs.append(str(wav))
        clip = folder / f"clip{i}"
        clip.mkdir()
        for t in range(8):
            Image.fromarray(np.ascontiguousarray(photo[100 : 164, 10 * t + i : 10 * t + i + 64])).save(clip / f"{t:02d}.png")
        clips.append(str(clip))
    wine = load_wine()
    rows = [[float(v) for v in wine.data[i]] for i in range(BATCH)]
    return {"image": images, "photo": photos, "audio": wavs, "text": [words[i % len(words)] for i in range(BATCH)],
            "tabular": rows, "video": clips}


#: (case, registered encoder, options, input kind)
CASES = [
    ("image_cnn 16px", "image_cnn", {"image_size": 16}, "image"),
    ("image_torchvision 224px", "image_torchvision", {"arch": "resnet18", "image_size": 224}, "photo"),
    ("audio log-mel 16 kHz", "audio_cnn", {"sample_rate": 16000, "n_mels": 64}, "audio"),
    ("audio log-mel 8 kHz", "audio_cnn", {"sample_rate": 8000, "n_mels": 40}, "audio"),
    ("text bytes", "text_transformer", {}, "text"),
    ("text minilm tokenizer", "minilm", {}, "text"),
    ("tabular", "tabular_mlp", {"num_features": 13}, "tabular"),
    ("video 8 frames", "video", {"frame_options": {"channels": 3, "image_size": 32}}, "video"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("bench_preprocessing"))


def _processor(name: str, options: dict):
    info = mmcore.get_registry().get("encoder", name)
    return info.factory(**options).processor()


def _prepare_and_collate(processor, raws):
    return lambda: processor.collate([processor(r) for r in raws])


@pytest.mark.parametrize("case, name, options, kind", CASES, ids=[c[0] for c in CASES])
def test_preprocessing_throughput(benchmark, inputs, case, name, options, kind):
    try:
        processor = _processor(name, options)
    except (ImportError, mmcore.UnknownComponentError) as exc:
        pytest.skip(str(exc))
    benchmark.group = "preprocessing + collate, one batch"
    benchmark(_prepare_and_collate(processor, inputs[kind]))
    benchmark.extra_info["samples_per_s"] = BATCH / benchmark.stats.stats.mean


def _cache_model():
    spec = {"encoders": {"image": {"name": "image_torchvision", "arch": "resnet18", "image_size": 64, "freeze": True, "dim": 64}},
            "head": {"name": "classification", "num_classes": 10}}
    torch.manual_seed(0)
    return mmcore.build_model(spec).eval()


@pytest.mark.parametrize("cached", [False, True], ids=["recomputed", "cached"])
def test_frozen_features(benchmark, inputs, cached):
    model = _cache_model()
    data = SampleDataset([{"inputs": {"image": p}, "target": 0} for p in inputs["photo"]])
    if cached:
        attach_feature_cache(model, "image", FeatureCache())
        precompute_features(model, "image", data)
    benchmark.group = "frozen resnet18 features, collate + forward of one batch"

    def step():
        with torch.no_grad():
            return model(model.collate(data.samples)["inputs"])

    benchmark(step)
    benchmark.extra_info["samples_per_s"] = BATCH / benchmark.stats.stats.mean


def _time(fn, repeats: int = 5) -> float:
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(Path(tmp))
        print(f"{'case':<28} {'samples/s':>10}")
        for case, name, options, kind in CASES:
            try:
                processor = _processor(name, options)
            except (ImportError, mmcore.UnknownComponentError) as exc:
                print(f"{case:<28} {'skipped':>10}  ({exc})")
                continue
            print(f"{case:<28} {BATCH / _time(_prepare_and_collate(processor, inputs[kind])):>10.0f}")
        data = SampleDataset([{"inputs": {"image": p}, "target": 0} for p in inputs["photo"]])
        model = _cache_model()

        def step():
            with torch.no_grad():
                model(model.collate(data.samples)["inputs"])

        recomputed = _time(step)
        attach_feature_cache(model, "image", FeatureCache())
        precompute_features(model, "image", data)
        cached = _time(step)
        print(f"{'frozen resnet18, recomputed':<28} {BATCH / recomputed:>10.0f}")
        print(f"{'frozen resnet18, cached':<28} {BATCH / cached:>10.0f}   speed-up x{recomputed / cached:.1f}")


if __name__ == "__main__":
    sys.exit(main())
