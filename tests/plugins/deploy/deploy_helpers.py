"""Files for the deploy tests (the fixtures in conftest.py train on them): PNG images, WAV clips, texts and a number, three
classes, written here as files and trained for one epoch (image_cnn + audio_cnn +
text_transformer + tabular_mlp, gated fusion); and its ONNX export."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import yaml

CLASSES = ["circle", "cross", "stripe"]
WORDS = {"circle": "round ring", "cross": "plus sign", "stripe": "bar line"}
PITCH = {"circle": 300.0, "cross": 900.0, "stripe": 1800.0}
RATE = 8000


def picture(label: str, rng: np.random.Generator, size: int = 16) -> np.ndarray:
    """A grey uint8 picture of the class's shape with noise."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    shape = {"circle": np.abs(np.hypot(x, y) - 0.3) < 0.08, "cross": (np.abs(x) < 0.08) | (np.abs(y) < 0.08),
             "stripe": np.abs(x + y) < 0.1}[label]
    values = shape * 200 + rng.normal(0, 25, (size, size)) + 30
    return np.clip(values, 0, 255).astype(np.uint8)


def tone(label: str, rng: np.random.Generator, seconds: float = 0.25) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.4 * np.sin(2 * math.pi * PITCH[label] * t) + 0.05 * rng.normal(size=t.shape)).astype(np.float32)


def png_bytes(label: str, seed: int = 0) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture(label, np.random.default_rng(seed))).save(buffer, format="PNG")
    return buffer.getvalue()


def wav_bytes(label: str, seed: int = 0) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, tone(label, np.random.default_rng(seed)), RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_data(folder: Path, rows: int = 30) -> Path:
    import soundfile
    from PIL import Image

    rng = np.random.default_rng(0)
    lines = ["image,audio,note,size,label,split"]
    for i in range(rows):
        label = CLASSES[i % 3]
        Image.fromarray(picture(label, rng)).save(folder / f"img{i}.png")
        soundfile.write(folder / f"snd{i}.wav", tone(label, rng), RATE, subtype="PCM_16")
        split = "test" if i % 10 == 9 else "val" if i % 10 == 8 else "train"
        image = str(folder / f"img{i}.png") if i % 7 else ""
        note = WORDS[label] if i % 4 else ""
        lines.append(f"{image},{folder / f'snd{i}.wav'},{note},{1.0 + CLASSES.index(label) + 0.1 * (i % 5)},{label},{split}")
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    return folder / "data.csv"


def write_config(folder: Path, manifest: Path) -> Path:
    config = {
        "data": {"name": "manifest", "path": str(manifest), "target": "label", "split_column": "split",
                 "columns": {"image": "image", "audio": "audio", "text": "note", "profile": {"numeric": ["size"]}}},
        "model": {"encoders": {"image": {"name": "image_cnn", "image_size": 16, "width": 8, "dim": 16},
                               "audio": {"name": "audio_cnn", "sample_rate": RATE, "n_mels": 16, "width": 8, "dim": 16,
                                         "n_fft": 200, "hop": 80, "max_seconds": 1.0},
                               "text": {"name": "text_transformer", "dim": 16, "heads": 2, "layers": 1, "max_length": 16},
                               "profile": {"name": "tabular_mlp", "num_features": 1, "columns": ["size"], "dim": 8}},
                  "fusion": {"name": "gated", "dim": 16}, "head": {"name": "classification"}},
        "trainer": {"epochs": 1, "batch_size": 8, "lr": 0.01, "progress": False, "plots": False, "tensorboard": False,
                    "run_dir": str(folder / "run")},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder / "config.yaml"
