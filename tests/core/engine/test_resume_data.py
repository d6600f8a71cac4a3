"""``--resume`` on a run whose data changed (issue 20.8): the run records what it trained on
(``data_summary.json``: rows per split, labels, each file's digest, rows and columns); a resume on
changed data is refused before anything is built, naming the file and saying what changed -- rows
added or removed, labels renamed, columns renamed or dropped, cells edited -- never blaming the config."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import mmcore
from mmcore.engine.data_record import DataChangedError
from mmcore.engine.trainer import Trainer


class _StopAfter:
    def __init__(self, epoch):
        self.epoch = epoch

    @mmcore.hookimpl
    def mmcore_epoch_end(self, epoch):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def _rows(n: int = 24) -> list[dict]:
    return [{"a": str(i % 5), "b": str((3 * i) % 7), "label": ["cat", "dog"][i % 2]} for i in range(n)]


def _write(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _config(table: Path, run: Path) -> dict:
    return {"data": {"name": "manifest", "path": str(table), "columns": {"x": ["a", "b"]}, "target": "label",
                     "val_fraction": 0.25, "test_fraction": 0.0},
            "model": {"encoders": {"x": {"name": "tabular_mlp", "num_features": 2, "dim": 8}},
                      "head": {"name": "classification"}},
            "trainer": {"epochs": 3, "batch_size": 8, "run_dir": str(run), "progress": False, "plots": False,
                        "tensorboard": False}}


@pytest.fixture
def interrupted(tmp_path) -> tuple[dict, Path, Path]:
    table = _write(tmp_path / "train.csv", _rows())
    run = tmp_path / "run"
    config = _config(table, run)
    with mmcore.register_plugin(_StopAfter(1), name="stop"), pytest.raises(KeyboardInterrupt):
        Trainer(config).fit()
    record = json.loads((run / "data_summary.json").read_text())
    assert record["sources"][str(table)]["rows"] == 24 and record["classes"] == ["cat", "dog"]
    return config, table, run


def _changed(rows: list[dict], change: str) -> list[dict]:
    if change == "rows added":
        return rows + _rows(30)[24:]
    if change == "rows removed":
        return rows[:20]
    if change == "label renamed":
        return [{**r, "label": "Cat" if r["label"] == "cat" else r["label"]} for r in rows]
    if change == "column renamed":
        return [{"a": r["a"], "bb": r["b"], "label": r["label"]} for r in rows]
    return [{**r, "a": "4"} if i == 3 else r for i, r in enumerate(rows)]  # a cell edited


@pytest.mark.parametrize("change, expected", [
    ("rows added", r"train\.csv: 30 rows, was 24 \(6 added\)"),
    ("rows removed", r"train\.csv: 20 rows, was 24 \(4 removed\).*\n.*splits: train 15 rows, was 18"),
    ("label renamed", r"labels: 'cat' no longer present; 'Cat' new \(renamed\? 'cat' -> 'Cat'\)"),
    ("column renamed", r"train\.csv' differs from what it read\), and reading it now fails: .*no column 'b'; did you mean 'bb'"),
    ("cell edited", r"train\.csv: cells edited"),
])
def test_resume_on_changed_data_says_what_changed(interrupted, change, expected):
    config, table, run = interrupted
    _write(table, _changed(_rows(), change))
    with pytest.raises(DataChangedError, match=expected) as info:
        Trainer(config, resume=run).fit()
    message = str(info.value)
    assert message.startswith(f"--resume {run}: the data changed since the run started")
    assert "config" not in message and "put the data back" in message
    assert (run / "last").is_dir(), "the run is left as it was"


def test_resume_on_the_same_data_continues(interrupted):
    config, table, run = interrupted
    _write(table, _rows())  # rewritten, byte for byte the same
    report = Trainer(config, resume=run).fit()
    assert report["status"] == "completed" and report["epochs_run"] == 3


def test_ctrl_c_names_the_run_and_how_to_continue(tmp_path, capsys):
    """Ctrl-C during `mmcore train`: exit 130, the message names the run and the --resume command that
    continues it, report.json marks the run partial; that command finishes it."""
    from mmcore.cli import main
    from mmcore.yamlio import dump_yaml

    table = _write(tmp_path / "train.csv", _rows())
    run = tmp_path / "run"
    (tmp_path / "c.yaml").write_text(dump_yaml(_config(table, run)))
    with mmcore.register_plugin(_StopAfter(1), name="stop"):
        assert main(["train", str(tmp_path / "c.yaml")]) == 130
    err = capsys.readouterr().err
    assert f"{run} keeps its 1 completed epoch(s)" in err
    assert f"continue it with: mmcore train {run}/config.yaml --resume {run}" in err
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "interrupted" and report["epochs_run"] == 1 and report["epochs_planned"] == 3
    assert main(["train", str(run / "config.yaml"), "--resume", str(run)]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "completed" and report["epochs_run"] == 3
