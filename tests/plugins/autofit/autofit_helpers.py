"""Writers of small real files (PNG, WAV, CSV, JSONL) and tables for the autofit tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np


def write_png(path: Path, seed: int, size: int = 8, mode: str = "L") -> str:
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (size, size) if mode == "L" else (size, size, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    return path.name


def write_wav(path: Path, seed: int, seconds: float = 0.2, rate: int = 8000) -> None:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.01 * rng.standard_normal(t.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave.astype(np.float32), rate, subtype="PCM_16")


def write_csv(path: Path, rows: list[dict]) -> Path:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path

WORDS = ["red", "green", "blue", "small", "large", "round", "sharp", "soft", "bright", "dark", "old", "new"]



def tabular_rows(n: int = 60, seed: int = 0, task: str = "classification") -> list[dict]:
    """A small learnable table: two numbers and a category decide the target."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a, b = rng.standard_normal(2)
        group = ["north", "south"][i % 2]
        score = a + 0.5 * b + (0.8 if group == "north" else -0.8)
        row = {"id": i, "a": round(float(a), 4), "b": round(float(b), 4) if i % 10 else None, "group": group}
        if task == "classification":
            row["y"] = "high" if score > 0 else "low"
        elif task == "regression":
            row["y"] = round(float(3.0 * score + 0.1 * rng.standard_normal()), 4)
        else:
            row["y"] = [t for t, on in (("pos_a", a > 0), ("pos_b", b > 0), ("north", group == "north")) if on]
        rows.append(row)
    return rows
