"""fit's time limit and epoch lines: a plugin object of its own for the one run it starts, driving the
trainer only through the declared surface (request_stop), never through attributes set on it."""

from __future__ import annotations

import copy
import json
import types
from pathlib import Path

import pytest

import mmcore
from mmcore.engine.config import load_config
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


class StepClock:
    """Fake time: each call to ``tick`` (a training step, a validation) advances it; reading it does not."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Ticking:
    """Advances a StepClock by ``step`` seconds per optimiser step and ``val`` seconds per validation."""

    def __init__(self, clock: StepClock, step: float, val: float) -> None:
        self.clock, self.step, self.val = clock, step, val

    @mmcore.hookimpl(tryfirst=True)
    def mmcore_train_step_end(self, trainer, step):
        self.clock.now += self.step

    @mmcore.hookimpl(tryfirst=True)
    def mmcore_epoch_end(self, trainer, epoch):
        self.clock.now += self.val


def _run(tmp_path: Path, progress: FitProgress, clock: StepClock, *, step: float, val: float, epochs: int = 5,
         threads: int | str = "auto"):
    config = copy.deepcopy(CONFIG)
    # threads: what fit passes (its measured choice); "auto" would follow this machine's load
    config["trainer"].update(run_dir=str(tmp_path / "run"), epochs=epochs, threads=threads)
    trainer = Trainer(config)
    with mmcore.register_plugin(Ticking(clock, step, val), name="ticking"), \
            mmcore.register_plugin(progress, name="fit-progress"):
        report = trainer.fit()
    return trainer, report


def test_the_time_limit_ends_an_epoch_within_it_and_the_best_checkpoint_is_tested(tmp_path: Path):
    """Wine: 4 steps of 1 s per epoch (125 training rows, batch 32) + 2 s of validation = 6 s an epoch.
    A deadline at 15 s: epoch 1 ends at 6, epoch 2 at 12; in epoch 3 the first step ends at 13 and
    another step and a validation would end at 16 > 15: the epoch ends after that step."""
    clock = StepClock()
    lines: list[str] = []
    progress = FitProgress(deadline=15.0, log=lines.append, clock=clock, val_seconds=2.0)
    trainer, report = _run(tmp_path, progress, clock, step=1.0, val=2.0)
    assert trainer.steps_per_epoch == 4
    assert report["status"] == "stopped" and report["epochs_run"] == 3 and report["steps"] == 9
    assert progress.stopped_after == 3 and progress.stopped_within_epoch
    assert report["stop_reason"].startswith("time limit: another step (1.00 s) and a validation (2.0 s) would end 1.0 s after it")
    assert report["test"], "the best checkpoint is still tested"
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["status"] == "stopped" and saved["stop_reason"] == report["stop_reason"]
    assert [e["steps"] for e in progress.epochs] == [4, 4, 1]
    assert [e["val_s"] for e in progress.epochs] == [2.0, 2.0, 2.0] and progress.epochs[0]["train_s"] == 4.0
    assert [line.split()[1] for line in lines if line.startswith("epoch")] == ["1/5", "2/5", "3/5"]
    # registered for that run only: a later training is not watched
    assert "fit-progress" not in {impl.plugin_name for impl in mmcore.get_plugin_manager().hook.mmcore_epoch_end.get_hookimpls()}


def test_at_an_epoch_end_training_stops_when_too_little_of_another_epoch_fits(tmp_path: Path):
    """Epochs of 4 s + 2 s validation; a deadline at 12.5 s: after epoch 2 (12 s) 0.5 s are left, less
    than 20% of an epoch's training and a validation: stopped there, not within epoch 3."""
    clock = StepClock()
    progress = FitProgress(deadline=12.5, clock=clock, val_seconds=2.0)
    _, report = _run(tmp_path, progress, clock, step=1.0, val=2.0)
    assert report["epochs_run"] == 2 and report["steps"] == 8 and progress.stopped_after == 2
    assert not progress.stopped_within_epoch and report["stop_reason"].startswith("time limit: 0.5 s left")


def test_a_generous_deadline_never_stops(tmp_path: Path):
    clock = StepClock()
    progress = FitProgress(deadline=1000.0, clock=clock, val_seconds=2.0)
    _, report = _run(tmp_path, progress, clock, step=1.0, val=2.0, epochs=3)
    assert report["status"] == "completed" and progress.stopped_after is None and len(progress.epochs) == 3


def test_a_machine_that_got_busy_drops_to_one_thread(tmp_path: Path):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        clock = StepClock()
        progress = FitProgress(deadline=None, clock=clock, planned_step=0.2)  # steps take 1 s: 5x the probe's
        _run(tmp_path, progress, clock, step=1.0, val=0.5, epochs=2, threads=2)
        assert progress.threads_dropped_after == 2 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_without_a_deadline_it_only_logs_and_the_autofit_plugin_hooks_no_other_training():
    progress = FitProgress(deadline=None, log=None, clock=StepClock())

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
    # the one lifecycle hook autofit keeps for every run is resume.py's (a fit run finished by --resume; a
    # no-op for any other run: tests/plugins/autofit/test_fit_resume.py trains one beside it)
    from mmcore_plugins.autofit import resume

    owned = {(hook, impl.function) for hook in lifecycle for impl in getattr(manager.hook, hook).get_hookimpls()
             if impl.plugin_name == "autofit"}
    assert owned == {("mmcore_train_end", resume.mmcore_train_end)}


def test_the_reserve_for_test_and_saving_stretches_with_the_steps_slowdown(tmp_path: Path):
    """Steps take 1 s where the probe measured 0.5 s: the 2 s kept after training for the test and
    saving become 4 s (those slow down too). End at 20 s: the deadline is 16, not 18 -- in epoch 3
    (from 12 s) the second step ends at 14 and another step and a validation would end at 17 > 16."""
    clock = StepClock()
    progress = FitProgress(deadline=20.0, reserve=2.0, clock=clock, val_seconds=2.0, planned_step=0.5)
    _, report = _run(tmp_path, progress, clock, step=1.0, val=2.0)
    assert report["steps"] == 10 and progress.stopped_after == 3 and progress.stopped_within_epoch
    steady = FitProgress(deadline=20.0, reserve=2.0, clock=StepClock(), val_seconds=2.0, planned_step=1.0)
    clock = steady.clock
    _, report = _run(tmp_path / "steady", steady, clock, step=1.0, val=2.0)
    assert report["steps"] == 12, "no slowdown: the reserve stays 2 s and epoch 3 runs to its end at 16 + 2 s val"


class Slowing(Ticking):
    """A Ticking clock whose steps take ``steps[epoch]`` seconds in each epoch."""

    def __init__(self, clock: StepClock, steps: dict[int, float], val: float) -> None:
        super().__init__(clock, 0.0, val)
        self.steps = steps

    @mmcore.hookimpl(tryfirst=True)
    def mmcore_train_step_end(self, trainer, step):
        self.clock.now += self.steps[trainer.epoch]


@pytest.mark.parametrize(("deadline", "max_epochs", "grown_to"), [
    (30.0, 10, 4),     # 24 s left after epoch 1: 3 more epochs of 6 s at 1.15x (6.9 s); later ends hold no more
    (30.0, 3, 3),      # the preset's cap
    (30.0, 2, None),   # the cap is the plan
    (19.5, 10, None),  # 13.5 s left: two epochs at 1.0x (12 s), not at 1.15x (13.8 s): no growth
])
def test_epochs_faster_than_planned_grow_the_run_within_the_limit_and_config_yaml_says_so(tmp_path: Path, deadline,
                                                                                           max_epochs, grown_to):
    """Planned 2 epochs of 6 s (4 steps of 1 s + 2 s validation)."""
    clock = StepClock()
    lines: list[str] = []
    progress = FitProgress(deadline=deadline, clock=clock, val_seconds=2.0, planned_step=1.0, max_epochs=max_epochs,
                           log=lines.append)
    _, report = _run(tmp_path, progress, clock, step=1.0, val=2.0, epochs=2)
    written = load_config(tmp_path / "run" / "config.yaml")["trainer"]
    assert report["status"] == "completed" and progress.stopped_after is None
    if grown_to is None:
        assert progress.grown == [] and report["epochs_run"] == 2 and written["schedule_extensions"] == []
        return
    assert progress.grown == [{"after_epoch": 1, "from": 2, "to": grown_to, "epoch_s": 6.0, "left_s": deadline - 6.0}]
    assert report["epochs_run"] == grown_to and clock.now == 6.0 * grown_to <= deadline
    assert written["epochs"] == grown_to and written["schedule_extensions"] == [[1, 2, grown_to]]
    assert any(f"{grown_to} epochs instead of 2" in line for line in lines)
    assert [line.split()[1] for line in lines if line.startswith("epoch ")][-1] == f"{grown_to}/{grown_to}"


def test_a_run_that_is_slowing_never_grows(tmp_path: Path):
    """Planned 4 epochs, the deadline at 33 s; steps of 1, 1.3, 1.7, 2.2 s in epochs 1-4 (+ 2 s of
    validation each). After epoch 1 (6 s) the 27 s left hold the 3 planned epochs at 1.15x its pace and
    no more; every later epoch is slower than the one before: never grown, ended within the deadline."""
    clock = StepClock()
    progress = FitProgress(deadline=33.0, clock=clock, val_seconds=2.0, planned_step=1.0, max_epochs=10)
    config = copy.deepcopy(CONFIG)
    config["trainer"].update(run_dir=str(tmp_path / "run"), epochs=4, threads=1)
    with mmcore.register_plugin(Slowing(clock, {1: 1.0, 2: 1.3, 3: 1.7, 4: 2.2}, 2.0), name="slowing"), \
            mmcore.register_plugin(progress, name="fit-progress"):
        report = Trainer(config).fit()
    assert progress.grown == [] and report["epochs_run"] == 4 and clock.now == pytest.approx(32.8)
    written = load_config(tmp_path / "run" / "config.yaml")["trainer"]
    assert written["epochs"] == 4 and written["schedule_extensions"] == []


class FakeRun:
    """What FitProgress reads of a trainer, for driving its hooks without training."""

    def __init__(self, epochs: int) -> None:
        self.options = types.SimpleNamespace(epochs=epochs)
        self.steps_per_epoch, self.epoch, self.best_epoch, self.stop_reason = 4, 0, 0, None
        self.extended: list[int] = []

    def extend(self, epochs: int) -> None:
        self.extended.append(epochs)
        self.options.epochs = epochs

    def request_stop(self, reason: str, finish_epoch: bool = True) -> None:
        self.stop_reason = reason


def _drive(progress: FitProgress, run: FakeRun, epochs: list[tuple[float, float, bool]]) -> None:
    """Each epoch: (seconds a step, seconds of validation, whether validation improved)."""
    progress.mmcore_train_start(trainer=run)
    for epoch, (step, val, improved) in enumerate(epochs, 1):
        run.epoch = epoch
        for k in range(run.steps_per_epoch):
            progress.clock.now += step
            progress.mmcore_train_step_end(trainer=run, step=(epoch - 1) * run.steps_per_epoch + k + 1)
        progress.clock.now += val
        if improved:
            run.best_epoch = epoch
        progress.mmcore_epoch_end(trainer=run, epoch=epoch, metrics={})


@pytest.mark.parametrize(("second", "grows"), [
    ((1.0, 0.5, True), 7),      # 4.5 s an epoch now: the 27.5 s left hold 5 more at 1.15x -> 7 epochs, not 5
    ((1.2, 0.5, True), None),   # 5.3 s: the 26.7 s left would hold 4 more, but the steps are 1.2x slower: busy
    ((1.0, 0.5, False), None),  # validation did not improve
])
def test_growth_needs_steps_not_slower_and_validation_improving(second, grows):
    """Epoch 1: 4 steps of 1 s + 4 s of validation (8 s, planned 5 epochs, the deadline at 40 s: 32 s
    left hold 3 more at 1.15x -- no growth); epoch 2 is faster by its validation."""
    progress = FitProgress(deadline=40.0, clock=StepClock(), val_seconds=4.0, planned_step=1.0, max_epochs=10)
    run = FakeRun(epochs=5)
    _drive(progress, run, [(1.0, 4.0, True), second])
    assert run.extended == ([grows] if grows else [])
