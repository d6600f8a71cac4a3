"""Fixtures of the autofit tests: a small real table of media files written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from autofit_helpers import WORDS, write_csv, write_png, write_wav


@pytest.fixture
def media_table(tmp_path: Path) -> Path:
    """24 rows: image (PNG), audio (WAV), clip (frame folder), note (free text), colour (3 values),
    size (numbers), row (dense integer id), code (string id), label (2 classes); some cells empty."""
    rng = np.random.default_rng(0)
    for k in range(3):
        write_png(tmp_path / "img" / f"{k}.png", k)
        write_wav(tmp_path / "wav" / f"{k}.wav", k)
        for f in range(2):
            write_png(tmp_path / "clips" / f"c{k}" / f"frame_{f}.png", 10 * k + f)
    rows = []
    for i in range(24):
        words = rng.choice(WORDS, size=4, replace=True)
        rows.append({
            "image": f"img/{i % 3}.png" if i % 6 else "",
            "audio": f"wav/{i % 3}.wav",
            "clip": f"clips/c{i % 3}",
            "note": " ".join(words) + f" {i}",
            "colour": ["red", "green", "blue"][i % 3],
            "size": f"{1.5 * i + rng.random():.3f}",
            "row": str(100 + i),
            "code": f"X{i:04d}",
            "label": "yes" if i % 2 else "no",
        })
    return write_csv(tmp_path / "table.csv", rows)

