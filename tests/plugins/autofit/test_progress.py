"""fit's time limit and epoch lines: a plugin object of its own for the one run it starts, driving the
trainer only through the declared surface (request_stop), never through attributes set on it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import mmcore
from mmcore.engine.trainer import Trainer
from mmcore_plugins.autofit.progress import FitProgress

CONFIG = {
    "data": {"name": "sklearn_tabular", "dataset": "wine", "seed": 0},
    "model": {"encoders": {"first": {"name": "tabular_mlp", "num_features": 6, "dim": 8},
                           "second": {"name": "tabular_mlp", "num_features": 7, "dim": 8}},
              "fusion": {"name": "concat", "dim": 8}, "head": {"name": "classification", "num_classes": 3}},
    "trainer": {"epochs": 5, "batch_size": 32, "lr": 0.01, "progress": False, "plots": False, "tensorboard": False,
                "early_stopping": None},
}


class Clock:
    """10 s per epoch: 0 at the start of training, then 10, 20, ... at each epoch's end."""

    def __init__(self) -> None:
        self.now = -10.0

    def __call__(self) -> float:
        self.now += 10.0
        return self.now


def test_the_time_limit_stops_the_run_through_request_stop_with_early_stopping_off(tmp_path: Path):
    config = copy.deepcopy(CONFIG)
    config["trainer"]["run_dir"] = str(tmp_path / "run")
    lines: list[str] = []
    progress = FitProgress(deadline=25.0, log=lines.append, clock=Clock())  # a 3rd epoch would end at 30 > 25
    trainer = Trainer(config)
    with mmcore.register_plugin(progress, name="fit-progress"):
        report = trainer.fit()
    assert report["status"] == "stopped" and report["epochs_run"] == 2 and progress.stopped_after == 2
    assert report["stop_reason"].startswith("time limit: another epoch (the last took 10.0 s) would end 5.0 s after it")
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["status"] == "stopped" and saved["stop_reason"] == report["stop_reason"]
    assert report["test"], "the best checkpoint is still tested"
    assert [line.split()[1] for line in lines[:2]] == ["1/5", "2/5"] and lines[2].startswith("time limit:")
    # registered for that run only: a later training is not watched
    assert "fit-progress" not in {impl.plugin_name for impl in mmcore.get_plugin_manager().hook.mmcore_epoch_end.get_hookimpls()}


def test_the_deadline_stops_when_another_epoch_would_overrun_and_not_otherwise():
    """The last epoch took 100 s: a deadline 50 s away stops training after this epoch, 1000 s away does not."""

    class Run:
        class options:  # noqa: N801 - the trainer's options, as a hook reads them
            epochs = 20

        def __init__(self):
            self.reasons = []

        def request_stop(self, reason):
            self.reasons.append(reason)

    for deadline_in, stops in ((50.0, True), (1000.0, False)):
        progress = FitProgress(deadline=100.0 + deadline_in, clock=iter([0.0, 100.0]).__next__)
        run = Run()
        progress.mmcore_train_start(trainer=run)
        progress.mmcore_epoch_end(trainer=run, epoch=3, metrics={})
        assert (progress.stopped_after == 3) is stops and bool(run.reasons) is stops


def test_without_a_deadline_it_only_logs_and_the_autofit_plugin_hooks_no_other_training():
    progress = FitProgress(deadline=None, log=None, clock=Clock())

    class Options:
        epochs = 3

    class Run:
        options = Options()

        def request_stop(self, reason):  # pragma: no cover - must not be called
            raise AssertionError(reason)

    progress.mmcore_train_start(trainer=Run())
    progress.mmcore_epoch_end(trainer=Run(), epoch=1, metrics={"train/loss": 1.0})
    assert progress.stopped_after is None
    manager = mmcore.create_plugin_manager(env={})
    lifecycle = ("mmcore_train_start", "mmcore_epoch_end", "mmcore_train_step_end", "mmcore_train_end")
    owners = {impl.plugin_name for hook in lifecycle for impl in getattr(manager.hook, hook).get_hookimpls()}
    assert "autofit" not in owners
