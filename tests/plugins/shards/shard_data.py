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


#: A Trainer that records each optimiser step's sample numbers by epoch (``seen[epoch]``: ``[(step, ids)]``)
#: and stops like a killed process (KeyboardInterrupt: only the checkpoints written so far remain)
#: right after step ``kill_at``. Source text, so the torchrun workers run the same class.
RECORDING = """
from mmcore.engine.trainer import Trainer


class Recording(Trainer):
    def __init__(self, *args, kill_at=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.kill_at, self.seen = kill_at, {}

    def train_step(self, batch, **kwargs):
        loss = super().train_step(batch, **kwargs)
        if kwargs.get("counted", True):
            self.seen.setdefault(self.epoch, []).append((self.step, batch["index"].tolist()))
        if self.step == self.kill_at:
            raise KeyboardInterrupt
        return loss
"""
_namespace: dict = {}
exec(compile(RECORDING, "shard_data.RECORDING", "exec"), _namespace)  # noqa: S102 - our own source, above
Recording = _namespace["Recording"]
#: 13 training rows in global batches of 4: steps an epoch; with checkpoint_every_steps 2, a run killed
#: right after step KILL (epoch 2) resumes from its checkpoint of step SAVED
STEPS, KILL, SAVED = 4, 7, 6


def check_resumed(tmp_path, straight, resumed, before, after, straight_order):
    """The run ``resumed`` (killed after its mid-epoch checkpoint, then resumed) against the uninterrupted
    ``straight``: epoch 2's samples before the checkpoint (``before``) and after the resume (``after``)
    are each training sample exactly once, in the uninterrupted run's set; the same weights (1e-6),
    sample counts, steps and per-epoch training loss."""
    import json
    from collections import Counter

    import pytest
    from safetensors.torch import load_file

    from mmcore.engine.checkpoint import load_training_state

    assert Counter(before + after) == Counter(range(SPLIT_ROWS["train"])), "every sample of epoch 2 exactly once across the kill"
    assert sorted(before + after) == sorted(straight_order)
    assert "partial_epoch" not in load_training_state(tmp_path / resumed / "last")  # the epoch-end checkpoint replaced it
    wa, wb = (load_file(str(tmp_path / run / "last" / "model.safetensors")) for run in (straight, resumed))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] - wb[key]).abs().max() <= 1e-6, key
    a, b = (json.loads((tmp_path / run / "report.json").read_text()) for run in (straight, resumed))
    assert b["samples"] == a["samples"] == SPLIT_ROWS and b["steps"] == a["steps"] == 2 * STEPS
    assert [r["train/loss"] for r in b["history"]] == pytest.approx([r["train/loss"] for r in a["history"]], abs=1e-6)
