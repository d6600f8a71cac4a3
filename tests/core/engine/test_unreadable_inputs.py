"""A file that passes validation but fails when training reads it (issue 20.3): NaN samples after a WAV's
first second, a finite 3e29 burst. Validation decodes the first second; training reads up to the
processor's max_seconds. Under ``trainer.unreadable_inputs: missing`` (the default) such a file is a
missing modality of its row, counted and listed with table, row and column; ``error`` stops the run
naming them. Real WAVs written with soundfile, a real manifest, a real (tiny) training run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from mmcore.engine.trainer import Trainer
from mmcore.errors import InputReadError

RATE = 8000


def _wav(path: Path, seed: int, *, bad: float | None = None) -> str:
    import soundfile as sf

    t = np.arange(2 * RATE) / RATE
    wave = (0.3 * np.sin(2 * np.pi * (200 + 40 * seed) * t)).astype(np.float32)
    if bad is not None:
        wave[int(1.5 * RATE):int(1.5 * RATE) + 50] = bad  # after the first second validation decodes
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, RATE, subtype="FLOAT")
    return path.name


def _table(tmp_path: Path, bad: dict[int, float]) -> Path:
    rows = []
    for i in range(24):
        _wav(tmp_path / "wav" / f"{i}.wav", i % 4, bad=bad.get(i))
        rows.append({"audio": f"wav/{i}.wav", "x": str(i % 4), "y": str(i % 2), "split": ["train", "train", "val"][i % 3]})
    path = tmp_path / "t.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _config(table: Path, run: Path, **trainer) -> dict:
    return {
        "data": {"name": "manifest", "path": str(table), "columns": {"audio": "audio", "x": ["x"]}, "target": "y",
                 "path_columns": ["audio"], "split_column": "split", "test_fraction": 0.0},
        "model": {"encoders": {"audio": {"name": "audio_cnn", "sample_rate": RATE, "n_mels": 16, "width": 4, "dim": 8},
                               "x": {"name": "tabular_mlp", "num_features": 1, "dim": 8}},
                  "fusion": {"name": "concat", "dim": 8}, "head": {"name": "classification"}},
        "trainer": {"epochs": 2, "batch_size": 8, "run_dir": str(run), "progress": False, "plots": False,
                    "tensorboard": False, **trainer},
    }


@pytest.mark.parametrize("bad", [float("nan"), 3e29], ids=["nan-after-1s", "finite-3e29-burst"])
def test_a_file_failing_deep_inside_is_a_counted_missing_modality(tmp_path, bad, caplog):
    table = _table(tmp_path, {4: bad, 7: bad})  # row 5 (train) and row 8 (val)
    report = Trainer(_config(table, tmp_path / "run")).fit()
    assert report["status"] == "completed"
    unreadable = report["unreadable_inputs"]
    assert unreadable["count"] == 2 and unreadable["columns"] == {"audio": 2}
    listed = "\n".join(unreadable["listed"])
    for row, name in ((5, "4.wav"), (8, "7.wav")):
        assert f"row {row}, column 'audio'" in listed and name in listed
    assert str(table) in listed
    assert json.loads((tmp_path / "run" / "report.json").read_text())["unreadable_inputs"]["count"] == 2
    assert "could not be read" in caplog.text and "7.wav" in caplog.text  # a warning in the epoch it was met


def test_strict_refuses_naming_file_row_and_column(tmp_path):
    table = _table(tmp_path, {4: 3e29})
    with pytest.raises(InputReadError) as info:
        Trainer(_config(table, tmp_path / "run", unreadable_inputs="error")).fit()
    message = str(info.value)
    assert "row 5, column 'audio'" in message and "4.wav" in message and str(table) in message
    assert "3e+29" in message


def test_a_waveform_burst_is_refused_by_the_reader_naming_the_file(tmp_path):
    from mmcore_plugins.io import AudioReadError, read_audio

    path = tmp_path / "burst.wav"
    _wav(path, 0, bad=3e29)
    with pytest.raises(AudioReadError, match=r"burst\.wav.*magnitude 3e\+29"):
        read_audio(path, sample_rate=RATE)
    assert read_audio(path, sample_rate=RATE, max_seconds=1.0).abs().max() < 1  # the first second is fine


def test_the_warning_is_a_line_of_its_own_after_the_progress_bar(tmp_path):
    """`mmcore train` with its progress bar (a process of its own: the CLI's log handler writes to stderr): the
    warning used to run on from the bar's last frame, written while the bar was open; it now follows the
    epoch's line, the bar closed."""
    import subprocess
    import sys

    from mmcore.yamlio import dump_yaml

    table = _table(tmp_path, {4: 3e29})
    (tmp_path / "c.yaml").write_text(dump_yaml(_config(table, tmp_path / "run", progress=True, epochs=1)))
    done = subprocess.run([sys.executable, "-m", "mmcore", "train", str(tmp_path / "c.yaml")], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.split("\n") if "could not be read" in line]
    assert len(lines) == 1, done.stderr
    assert "%|" not in lines[0] and "it/s" not in lines[0], lines[0]  # no frame of the bar on the warning's line
