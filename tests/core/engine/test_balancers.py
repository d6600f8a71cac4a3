"""The balancer plugin kind (mmcore/engine/balancers.py): registered like any component, named in
``trainer.balancer``, built fresh per run and registered on every process while it trains; and the
``micro_batch_weight`` a balancer's own gradients are scaled by."""

import types

import pytest

import mmcore
from mmcore.engine.trainer import Trainer
from mmcore.errors import ConfigError


class _Recorder:
    """A third-party balancer: records what it saw."""

    instances: list = []

    def __init__(self, scale: float = 1.0):
        self.scale, self.weights, self.steps = scale, [], []
        _Recorder.instances.append(self)

    @mmcore.hookimpl
    def mmcore_train_loss(self, trainer, batch, output):
        self.weights.append((trainer.micro_batch_weight, len(batch["targets"])))

    @mmcore.hookimpl
    def mmcore_before_optimizer_step(self, trainer, step):
        self.steps.append(step)
        for p in trainer.model.parameters():
            if p.grad is not None:
                p.grad.mul_(self.scale)


def _plugin(factory):
    return types.SimpleNamespace(mmcore_register=mmcore.hookimpl(lambda registry: registry.add_balancer("recorder", factory)))


def test_a_third_party_balancer_runs_for_its_run_only_and_sees_each_micro_batch_weight(wine_config):
    _Recorder.instances = []
    wine_config["trainer"].update(epochs=1, batch_size=32, grad_accumulation=2, balancer={"name": "recorder", "scale": 0.5})
    with mmcore.register_plugin(_plugin(_Recorder), name="recorder-plugin"):
        report = Trainer(wine_config).fit()
        assert report["status"] == "completed"
        balancer = _Recorder.instances[-1]
        assert balancer.scale == 0.5
        # 115 training rows: micro-batches of 32, 32 | 32, 19, two per optimiser step; each micro-batch's
        # weight is its share of its step's samples.
        assert balancer.steps == [1, 2] and report["samples"]["train"] == 115
        assert balancer.weights == [(0.5, 32), (0.5, 32), (pytest.approx(32 / 51), 32), (pytest.approx(19 / 51), 19)]
        # Not registered outside its run: another run without it does not call it.
        wine_config["trainer"].pop("balancer")
        wine_config["trainer"]["run_dir"] += "-2"
        Trainer(wine_config).fit()
        assert balancer.steps == [1, 2] and len(_Recorder.instances) == 1


def test_balancer_hooks_are_checked_like_loggers(wine_config):
    class NotDecorated:
        def mmcore_before_optimizer_step(self, trainer):
            pass

    class WrongHook:
        @mmcore.hookimpl
        def mmcore_add_commands(self, subparsers):
            pass

    wine_config["trainer"]["balancer"] = "recorder"
    with mmcore.register_plugin(_plugin(NotDecorated), name="p1"):
        with pytest.raises(ConfigError, match="not decorated with @mmcore.hookimpl"):
            Trainer(wine_config)
    with mmcore.register_plugin(_plugin(WrongHook), name="p2"):
        with pytest.raises(ConfigError, match="mmcore_add_commands.*not a training hook"):
            Trainer(wine_config)


def test_the_kind_is_listed():
    assert "balancer" in mmcore.KINDS
    from mmcore.plugin_manager import get_registry

    info = get_registry().get("balancer", "ogm_ge")
    assert info.kind == "balancer" and "OGM-GE" in info.doc
