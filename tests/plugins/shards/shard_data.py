"""A small real table for the shard tests: PNG images (one row without), WAV audio, inline text, a text
file cell, two numbers, a class label and a split column; and the config that reads it."""

from __future__ import annotations

import csv
import random

import numpy as np

SPLIT_ROWS = {"train": 13, "val": 4, "test": 3}  # odd: shares and shards of uneven sizes


def write_table(folder, splits=SPLIT_ROWS):
    import soundfile
    from PIL import Image

    rng = random.Random(0)
    (folder / "media").mkdir(parents=True, exist_ok=True)
    rows = []
    i = 0
    for split, count in splits.items():
        for _ in range(count):
            label = ("cat", "dog", "owl")[i % 3]
            image = f"media/{i}.png"
            Image.fromarray(np.random.default_rng(i).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(folder / image)
            sound = f"media/{i}.wav"
            soundfile.write(folder / sound, np.random.default_rng(i).uniform(-0.5, 0.5, 800).astype(np.float32), 8000)
            note = f"media/{i}.txt"
            (folder / note).write_text(f"note {i} about a {label}\n", encoding="utf-8")
            rows.append({"image": "" if i == 2 else image, "sound": sound, "note": note, "caption": f"a {label} number {i}",
                         "x1": "" if i == 5 else round(rng.gauss(0, 1), 4), "x2": "" if i == 5 else round(rng.gauss(0, 1), 4),
                         "label": label, "split": split})
            i += 1
    path = folder / "table.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


DATA = {"name": "manifest", "columns": {"image": "image", "sound": "sound", "note": "note", "caption": "caption",
                                        "table": ["x1", "x2"]},
        "path_columns": ["image", "sound", "note"], "target": "label", "split_column": "split"}

MODEL = {
    "encoders": {"image": {"name": "image_cnn", "dim": 8, "image_size": 8, "channels": 3, "width": 8, "dropout": 0.0},
                 "sound": {"name": "audio_cnn", "dim": 8, "sample_rate": 8000, "n_mels": 8, "width": 8, "blocks": 1, "dropout": 0.0,
                           "n_fft": 128, "hop": 64, "max_seconds": 0.1},
                 "note": {"name": "text_transformer", "dim": 8, "layers": 1, "heads": 2, "max_length": 32, "dropout": 0.0},
                 "caption": {"name": "text_transformer", "dim": 8, "layers": 1, "heads": 2, "max_length": 32, "dropout": 0.0},
                 "table": {"name": "tabular_mlp", "num_features": 2, "dim": 8, "dropout": 0.0}},
    "fusion": {"name": "concat", "dim": 8},
    "head": {"name": "classification"},
}
