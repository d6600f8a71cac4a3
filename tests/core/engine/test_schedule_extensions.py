"""A run whose horizon grows while it trains (Trainer.extend): the schedule re-targeted from the rate
reached, recorded in config.yaml (trainer.epochs, trainer.schedule_extensions), reproduced step for
step by ``mmcore train RUN/config.yaml`` and resumed with the same horizon."""

from __future__ import annotations

import copy
import math
import types

import pytest
import torch
from safetensors.torch import load_file

import mmcore
from mmcore.engine.config import load_config, validate_config
from mmcore.engine.optim import warmup_cosine
from mmcore.engine.trainer import Trainer
from mmcore.errors import ConfigError
from mmcore.plugin_manager import get_plugin_manager


def test_a_grown_horizon_keeps_every_earlier_step_and_goes_on_from_the_rate_reached():
    planned = warmup_cosine(20, 0.2, 0.1)  # 4 warmup steps, cosine to 0.1 at step 20
    grown = warmup_cosine(20, 0.2, 0.1, [(10, 40)])
    assert [grown(s) for s in range(11)] == [planned(s) for s in range(11)], "the steps before (and at) the change keep their rate"
    at = planned(10)
    assert grown(25) == pytest.approx(0.1 + (at - 0.1) * 0.5 * (1 + math.cos(math.pi * 15 / 30)))
    assert grown(40) == pytest.approx(0.1) and grown(60) == pytest.approx(0.1)
    values = [grown(s) for s in range(4, 41)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False)), "no jump back up"
    assert grown(20) > planned(20), "the longer horizon decays more slowly"
    twice = warmup_cosine(20, 0.2, 0.1, [(10, 40), (30, 50)])
    assert [twice(s) for s in range(31)] == [grown(s) for s in range(31)] and twice(50) == pytest.approx(0.1)


def test_a_change_during_the_warmup_keeps_it_and_one_at_the_horizon_stays_at_the_floor():
    grown = warmup_cosine(10, 0.3, 0.0, [(2, 20)])  # 3 warmup steps
    assert [grown(s) for s in range(4)] == [1 / 3, 2 / 3, 1.0, 1.0]
    assert grown(11) == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 17)))
    late = warmup_cosine(10, 0.0, 0.05, [(10, 15)])
    assert [late(s) for s in range(10, 16)] == pytest.approx([0.05] * 6)


@pytest.mark.parametrize(("extensions", "epochs", "message"), [
    ([[1, 2]], 4, r"trainer.schedule_extensions\[0\]: must be \[after_epoch, from_epochs, to_epochs\]"),
    ([[3, 2, 4]], 4, r"trainer.schedule_extensions\[0\]: must have 0 <= after_epoch <= from_epochs < to_epochs"),
    ([[1, 4, 4]], 4, r"after_epoch <= from_epochs < to_epochs"),
    ([[1, 2, 4], [1, 4, 5]], 5, r"trainer.schedule_extensions\[1\]: must follow \[1, 2, 4\]: a later epoch"),
    ([[1, 2, 4], [2, 3, 5]], 5, r"growing from 4 epochs"),
    ([[1, 2, 4]], 6, r"trainer.schedule_extensions: the last horizon \(4 epochs\) must be trainer.epochs \(6\): the run "
                     r"grew to it; for a new plan of 6 epochs also set trainer.schedule_extensions=\[\]"),
    ([["1", 2, 4]], 4, r"trainer.schedule_extensions: trainer option expects"),
])
def test_bad_extensions_are_config_errors_naming_the_entry(wine_config, extensions, epochs, message):
    wine_config["trainer"].update(epochs=epochs, schedule_extensions=extensions)
    with pytest.raises(ConfigError, match=message):
        validate_config(wine_config, get_plugin_manager().registry)


def _deterministic(config, run_dir, epochs=2):
    config = copy.deepcopy(config)
    for encoder in config["model"]["encoders"].values():
        encoder["dropout"] = 0.0
    config["model"]["fusion"]["dropout"] = 0.0
    # cheap: 4 steps an epoch, no end-of-run diagnostics
    config["trainer"].update(epochs=epochs, run_dir=str(run_dir), threads=1, warmup_fraction=0.2, batch_size=32,
                             diagnostics=False)
    return config


class _Grow:
    """Extends the run at the end of ``epoch`` to ``to`` epochs; records the rate of every step."""

    def __init__(self, epoch: int | None = None, to: int | None = None, kill_after: int | None = None):
        self.epoch, self.to, self.kill_after, self.rates = epoch, to, kill_after, []

    @mmcore.hookimpl
    def mmcore_train_step_end(self, trainer, step, metrics):
        self.rates.append((step, metrics["lr"]))  # the rate the next step uses

    @mmcore.hookimpl
    def mmcore_epoch_end(self, trainer, epoch):
        if epoch == self.epoch:
            trainer.extend(self.to)
        if epoch == self.kill_after:
            raise KeyboardInterrupt  # as a killed process would


def _run(config, plugin, **kwargs):
    with mmcore.register_plugin(plugin, name=f"grow#{id(plugin)}"):
        return Trainer(config, **kwargs).fit()


def test_a_grown_run_is_reproduced_step_for_step_by_its_config_and_resumed_with_its_horizon(wine_config, tmp_path):
    grown = _Grow(epoch=1, to=3)
    report = _run(_deterministic(wine_config, tmp_path / "grown"), grown)
    assert report["status"] == "completed" and report["epochs_run"] == 3
    steps = report["steps"] // 3
    written = load_config(tmp_path / "grown" / "config.yaml")
    assert written["trainer"]["epochs"] == 3 and written["trainer"]["schedule_extensions"] == [[1, 2, 3]]
    rates = [lr for _, lr in grown.rates]
    assert len(rates) == 3 * steps
    assert rates[steps - 1] > rates[steps] > rates[-1] >= 0, "the rate goes on down from where it was"

    # mmcore train RUN/config.yaml: the same rate at every step, the same weights
    again = _Grow()
    _run(load_config(tmp_path / "grown" / "config.yaml", [f"trainer.run_dir={tmp_path / 'again'}"]), again)
    assert again.rates == grown.rates

    # killed after growing, resumed from the run's own config.yaml: the same horizon, the same end
    killed = _deterministic(wine_config, tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        _run(killed, _Grow(epoch=1, to=3, kill_after=2))
    resumed = _Grow()
    report = _run(load_config(tmp_path / "killed" / "config.yaml"), resumed, resume=tmp_path / "killed")
    assert report["epochs_run"] == 3 and resumed.rates == grown.rates[2 * steps:]
    for which in ("last", "best"):
        a = load_file(str(tmp_path / "grown" / which / "model.safetensors"))
        for folder in ("again", "killed"):
            b = load_file(str(tmp_path / folder / which / "model.safetensors"))
            for key in a:
                torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # the config a run started with no longer describes a grown one: resuming with it is refused
    with pytest.raises(ConfigError, match="trainer.epochs: differs from the run being resumed"):
        Trainer(killed, resume=tmp_path / "killed")


def test_extend_takes_more_epochs_only_and_not_once_training_is_stopping(wine_config, tmp_path):
    seen = {}

    def epoch_end(trainer, epoch):
        for bad in (2, 1, 2.5, True):
            with pytest.raises(ValueError, match="more epochs than the 2 planned"):
                trainer.extend(bad)
        trainer.extend(3)
        trainer.extend(5)  # the same epoch: one entry
        seen["extensions"] = list(trainer.options.schedule_extensions)
        trainer.request_stop("enough")
        with pytest.raises(RuntimeError, match="training is stopping"):
            trainer.extend(6)

    plugin = types.SimpleNamespace(mmcore_epoch_end=mmcore.hookimpl(epoch_end))
    report = _run(_deterministic(wine_config, tmp_path / "run"), plugin)
    assert seen["extensions"] == [[1, 2, 5]]
    assert report["status"] == "stopped" and report["epochs_run"] == 1
    assert load_config(tmp_path / "run" / "config.yaml")["trainer"]["schedule_extensions"] == [[1, 2, 5]]


def test_other_epochs_in_a_grown_config_are_a_new_plan_with_a_note(wine_config, tmp_path, caplog):
    # a user edits (or overrides) the epochs of a grown run's config: they ask for a new plan of that many
    wine_config["trainer"].update(epochs=4, schedule_extensions=[[1, 2, 4]], run_dir=str(tmp_path / "run"))
    edited = {**wine_config, "trainer": {**wine_config["trainer"], "epochs": 6}}
    with caplog.at_level("WARNING", logger="mmcore.train"):
        trainer = Trainer(edited)
    assert trainer.options.epochs == 6 and trainer.options.schedule_extensions == []
    assert not trainer.config["trainer"].get("schedule_extensions")  # what config.yaml will say: the new plan
    assert "trainer.epochs is 6, not the 4" in caplog.text and "a new plan of 6 epochs" in caplog.text
    # the grown config as it is keeps its horizons, without a note
    caplog.clear()
    with caplog.at_level("WARNING", logger="mmcore.train"):
        kept = Trainer(wine_config)
    assert kept.options.schedule_extensions == [[1, 2, 4]] and "new plan" not in caplog.text
    # malformed extensions are still refused in one line, naming the entry
    bad = {**wine_config, "trainer": {**wine_config["trainer"], "schedule_extensions": [[3, 2, 4]]}}
    with pytest.raises(ConfigError, match=r"trainer.schedule_extensions\[0\]"):
        Trainer(bad)
