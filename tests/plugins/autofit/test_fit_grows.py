"""A fit whose epochs turn out faster than planned gets more of them (the plan grows within the time
limit), and its run directory still reproduces it: ``mmcore train RUN/config.yaml`` gives the same
learning rate at every step and the same weights, and ``--resume`` of a killed grown run ends the same."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from autofit_helpers import tabular_rows, write_jsonl
from safetensors.torch import load_file

import mmcore
from mmcore.cli import main
from mmcore.errors import RunInterrupted
from mmcore.yamlio import load_yaml_file
from mmcore_plugins.autofit import fitting


class Rates:
    """The learning rate after every optimiser step (what the next step uses) of the run in ``folder``
    (not fit's probes), and a kill switch."""

    def __init__(self, folder: Path, kill_after: int | None = None) -> None:
        self.folder, self.kill_after = folder.resolve(), kill_after
        self.rates: list[float] = []

    def watched(self, trainer) -> bool:
        return Path(trainer.run_dir).resolve() == self.folder

    @mmcore.hookimpl
    def mmcore_train_step_end(self, trainer, step, metrics):
        if self.watched(trainer):
            self.rates.append(metrics["lr"])

    @mmcore.hookimpl
    def mmcore_epoch_end(self, trainer, epoch):
        if epoch == self.kill_after and self.watched(trainer):
            raise KeyboardInterrupt  # as a killed process would


def _planned_two(monkeypatch):
    """The plan says 2 epochs (as a slow probe would); the tiny table's epochs take well under a second
    of the 10 minutes, so the plan grows to the cap after epoch 1 (the first epoch always improves)."""
    real = fitting.plan_schedule

    def plan(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), epochs=2)

    monkeypatch.setattr(fitting, "plan_schedule", plan)


def _fit(tmp_path: Path, plugin: Rates):
    table = write_jsonl(tmp_path / "train.jsonl", tabular_rows(60, seed=0))
    test = write_jsonl(tmp_path / "test.jsonl", tabular_rows(20, seed=1))
    with mmcore.register_plugin(plugin, name=f"rates#{id(plugin)}"):
        mmcore.fit(table, target="y", test=test, time_limit="10m", preset="fast", max_epochs=4, run_dir=tmp_path / "run",
                   verbose=False)
    return tmp_path / "run"


def _train(*argv: str, plugin: Rates) -> None:
    quick = ["trainer.plots=false", "trainer.diagnostics=false", "trainer.tensorboard=false"]  # outputs only
    with mmcore.register_plugin(plugin, name=f"rates#{id(plugin)}"):
        assert main(["train", *argv, *quick]) == 0


def _same_weights(a: Path, b: Path) -> None:
    for which in ("last", "best"):
        wa, wb = load_file(str(a / which / "model.safetensors")), load_file(str(b / which / "model.safetensors"))
        assert wa.keys() == wb.keys()
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0)


def test_a_faster_fit_grows_and_mmcore_train_of_its_config_repeats_every_rate(tmp_path: Path, monkeypatch):
    _planned_two(monkeypatch)
    seen = Rates(tmp_path / "run")
    run = _fit(tmp_path, seen)
    summary = json.loads((run / "fit_summary.json").read_text())
    assert summary["epochs_planned"] == 2 and summary["epochs_final"] == 4 and summary["epochs_run"] == 4
    assert [(g["after_epoch"], g["from"], g["to"]) for g in summary["epochs_grown"]] == [(1, 2, 4)]
    assert summary["seconds"] <= summary["time_limit_s"]
    training = next(p for p in summary["time"]["phases"] if p["phase"] == "training")
    assert "4 of 4 epochs (planned 2, grown after epoch 1)" in training["note"]
    written = load_yaml_file(run / "config.yaml")["trainer"]
    assert written["epochs"] == 4 and written["schedule_extensions"] == [[1, 2, 4]]

    again = Rates(tmp_path / "again")
    _train(str(run / "config.yaml"), f"trainer.run_dir={tmp_path / 'again'}", plugin=again)
    assert again.rates == seen.rates and len(seen.rates) == json.loads((run / "report.json").read_text())["steps"]
    _same_weights(run, tmp_path / "again")


def test_a_grown_fit_killed_resumes_with_its_horizon(tmp_path: Path, monkeypatch):
    _planned_two(monkeypatch)
    with pytest.raises(RunInterrupted):
        _fit(tmp_path, Rates(tmp_path / "run", kill_after=3))
    run = tmp_path / "run"
    assert json.loads((run / "report.json").read_text())["epochs_run"] == 3
    written = load_yaml_file(run / "config.yaml")["trainer"]
    assert written["epochs"] == 4 and written["schedule_extensions"] == [[1, 2, 4]]
    straight, resumed = Rates(tmp_path / "straight"), Rates(run)
    _train(str(run / "config.yaml"), f"trainer.run_dir={tmp_path / 'straight'}", plugin=straight)
    _train(str(run / "config.yaml"), "--resume", str(run), plugin=resumed)
    steps = len(straight.rates) // 4
    assert resumed.rates == straight.rates[3 * steps:]
    _same_weights(tmp_path / "straight", run)
