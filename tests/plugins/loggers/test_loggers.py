"""The run's outputs are logger plugins (``trainer.loggers``): the built-in csv, tensorboard,
progress and plots write today's files, and a third party adds its own with one small plugin."""

from __future__ import annotations

import copy
import csv
import json
import types

import pytest

import mmcore
from mmcore.engine.trainer import Trainer
from mmcore.errors import ConfigError, PluginHookError

#: scikit-learn's wine data split into two modalities: trains in about a second.
WINE = {
    "data": {"name": "sklearn_tabular", "dataset": "wine", "missing_rate": 0.2, "seed": 0},
    "model": {
        "encoders": {"first": {"name": "tabular_mlp", "num_features": 6, "dim": 8},
                     "second": {"name": "tabular_mlp", "num_features": 7, "dim": 8}},
        "fusion": {"name": "concat", "dim": 8},
        "head": {"name": "classification", "num_classes": 3},
    },
    "trainer": {"epochs": 2, "batch_size": 32, "lr": 0.01},
}


@pytest.fixture
def config(tmp_path):
    out = copy.deepcopy(WINE)
    out["trainer"]["run_dir"] = str(tmp_path / "run")
    return out


class RecordingLogger:
    """What a W&B or MLflow logger would be: an object with lifecycle hook methods."""

    def __init__(self, project: str = "default") -> None:
        self.project = project
        self.events: list = []
        RecordingLogger.instances.append(self)

    @mmcore.hookimpl
    def mmcore_train_start(self, trainer, config):
        self.events.append(("start", config["trainer"]["epochs"]))

    @mmcore.hookimpl
    def mmcore_epoch_end(self, epoch, metrics):
        self.events.append(("epoch", epoch, dict(metrics)))

    @mmcore.hookimpl
    def mmcore_train_end(self, report):
        self.events.append(("end", report["status"]))


@pytest.fixture
def recording():
    RecordingLogger.instances = []
    plugin = types.SimpleNamespace(mmcore_register=mmcore.hookimpl(lambda registry: registry.add_logger("recording", RecordingLogger)))
    with mmcore.register_plugin(plugin, name="mmcore-recording"):
        yield RecordingLogger


def _rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_the_default_loggers_write_todays_files(config, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    report = Trainer(config).fit()
    run = tmp_path / "run"
    rows = _rows(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert list(rows[0])[:4] == ["epoch", "step", "lr", "train/loss"] and "val/accuracy" in rows[0]
    assert float(rows[1]["val/accuracy"]) == pytest.approx(report["history"][1]["val/accuracy"])
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["accuracy.png", "diagnostics.png", "loss.png", "macro_f1.png"]
    assert report["plots"] == [str(run / "plots" / n) for n in ("accuracy.png", "loss.png", "macro_f1.png", "diagnostics.png")]
    assert json.loads((run / "report.json").read_text())["plots"] == report["plots"]
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tensorboard").iterdir())
    out = capsys.readouterr().out
    assert "epoch 1/2  lr " in out and "epoch 2/2  lr " in out and "val/accuracy" in out


def test_the_switches_still_turn_loggers_off(config, tmp_path, capsys):
    config["trainer"].update(progress=False, plots=False, tensorboard=False)
    report = Trainer(config).fit()
    run = tmp_path / "run"
    assert (run / "metrics.csv").is_file() and report["plots"] == []
    assert not (run / "plots").exists() and not (run / "tensorboard").exists()
    assert "epoch 1/2" not in capsys.readouterr().out


def test_a_third_party_logger_sees_every_epochs_metrics(config, tmp_path, recording):
    config["trainer"]["loggers"] = ["csv", {"name": "recording", "project": "demo"}]
    report = Trainer(config).fit()
    (logger,) = recording.instances
    assert logger.project == "demo"
    assert logger.events[0] == ("start", 2) and logger.events[-1] == ("end", "completed")
    epochs = [e for e in logger.events if e[0] == "epoch"]
    assert [e[1] for e in epochs] == [1, 2]
    assert [e[2] for e in epochs] == report["history"]
    assert (tmp_path / "run" / "metrics.csv").is_file()
    assert not (tmp_path / "run" / "plots").exists(), "only the listed loggers run"
    manager = mmcore.get_plugin_manager()
    assert manager.get_plugin("logger recording") is None and manager.get_plugin("logger csv") is None


def test_loggers_run_in_the_listed_order_before_other_plugins(config, recording):
    order = []

    class Named:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        @mmcore.hookimpl
        def mmcore_epoch_end(self, epoch):
            order.append((self.tag, epoch))

    plugin = types.SimpleNamespace(
        mmcore_register=mmcore.hookimpl(lambda registry: registry.add_logger("named", Named)),
        mmcore_epoch_end=mmcore.hookimpl(lambda epoch: order.append(("plugin", epoch))),
    )
    config["trainer"].update(epochs=1, loggers=[{"name": "named", "tag": "a"}, "recording"])
    with mmcore.register_plugin(plugin, name="mmcore-named"):
        Trainer(config).fit()
    assert order == [("a", 1), ("plugin", 1)]
    assert recording.instances[0].events[1][0] == "epoch"


def test_a_failing_logger_stops_the_run_cleanly_and_is_named(config, tmp_path):
    class Boom:
        @mmcore.hookimpl
        def mmcore_epoch_end(self, epoch):
            raise RuntimeError("upload refused")

    plugin = types.SimpleNamespace(mmcore_register=mmcore.hookimpl(lambda registry: registry.add_logger("boom", Boom)))
    config["trainer"]["loggers"] = ["csv", "boom"]
    with mmcore.register_plugin(plugin, name="mmcore-boom"), pytest.raises(PluginHookError, match="logger boom"):
        Trainer(config).fit()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["status"] == "failed" and "upload refused" in report["error"]
    assert len(_rows(tmp_path / "run" / "metrics.csv")) == 1, "the csv logger ran before the failing one"
    assert mmcore.get_plugin_manager().get_plugin("logger boom") is None


@pytest.mark.parametrize(("loggers", "message"), [
    (["csv", "wandb"], r"trainer.loggers.1: unknown logger 'wandb'"),
    ([{"name": "csv", "path": "x"}], r"trainer.loggers.0.path: unknown option of logger 'csv'"),
    ([{"project": "x"}], r"trainer.loggers.0: expected a logger name or \{name: NAME"),
    (["csv", "csv"], r"trainer.loggers.1: logger 'csv' is listed twice"),
    ("csv", r"trainer.loggers: trainer option expects"),
])
def test_bad_logger_entries_are_refused_before_any_work(config, tmp_path, loggers, message):
    config["trainer"]["loggers"] = loggers
    with pytest.raises(ConfigError, match=message):
        Trainer(config)
    assert not (tmp_path / "run").exists()


def test_a_logger_method_that_would_never_be_called_is_refused(config, tmp_path):
    class Forgot:
        def mmcore_epoch_end(self, epoch):  # no @mmcore.hookimpl
            pass

    plugin = types.SimpleNamespace(mmcore_register=mmcore.hookimpl(lambda registry: registry.add_logger("forgot", Forgot)))
    config["trainer"]["loggers"] = ["forgot"]
    with mmcore.register_plugin(plugin, name="mmcore-forgot"), pytest.raises(ConfigError, match="not decorated with @mmcore.hookimpl"):
        Trainer(config).fit()


def test_a_resumed_run_may_change_its_loggers(config, tmp_path, recording):
    class StopAfterOne:
        @mmcore.hookimpl
        def mmcore_epoch_end(self, epoch):
            raise RuntimeError("interrupted")

    plugin = types.SimpleNamespace(mmcore_register=mmcore.hookimpl(lambda registry: registry.add_logger("stop", StopAfterOne)))
    config["trainer"].update(progress=False, plots=False, tensorboard=False, loggers=["csv", "stop"])
    with mmcore.register_plugin(plugin, name="mmcore-stop"), pytest.raises(PluginHookError):
        Trainer(config).fit()
    config["trainer"]["loggers"] = ["csv", "recording"]  # "stop" is not even registered any more
    report = Trainer(config, resume=tmp_path / "run").fit()
    assert report["status"] == "completed" and report["epochs_run"] == 2
    assert [e[1] for e in recording.instances[0].events if e[0] == "epoch"] == [2]
    assert [int(r["epoch"]) for r in _rows(tmp_path / "run" / "metrics.csv")] == [1, 2]
