"""trainer.ema_decay: the moving average of the weights (mmcore.engine.averaging) -- its arithmetic,
what validation / best / last / test hold, exact resume, and the checks on a loaded state."""

import copy
import json
import types

import pytest
import torch
from safetensors.torch import load_file

import mmcore
from mmcore.engine.averaging import WeightEMA, warmed_decay
from mmcore.engine.checkpoint import load_training_state
from mmcore.engine.trainer import Trainer
from mmcore.errors import ConfigError


def test_the_average_follows_the_formula_with_its_warm_up():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    model[0].bias.requires_grad_(False)  # frozen: not averaged, not copied
    ema = WeightEMA(model, 0.9)
    assert ema.names == ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var"]
    expected = model[0].weight.detach().clone()
    for step in range(30):
        with torch.no_grad():
            model[0].weight.add_(torch.randn_like(model[0].weight))
        d = warmed_decay(0.9, step)
        expected = d * expected + (1 - d) * model[0].weight.detach()
        ema.update()
    torch.testing.assert_close(ema.shadow[0], expected)
    assert warmed_decay(0.9, 0) == pytest.approx(0.1) and warmed_decay(0.9, 1000) == 0.9


def test_applied_swaps_the_average_in_and_restores_the_live_weights_even_on_error():
    model = torch.nn.Linear(4, 3)
    ema = WeightEMA(model, 0.5)
    live = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update()
    moved = model.weight.detach().clone()
    with pytest.raises(RuntimeError, match="boom"), ema.applied():
        torch.testing.assert_close(model.weight.detach(), ema.shadow[0])
        assert not torch.equal(model.weight, moved)
        raise RuntimeError("boom")
    torch.testing.assert_close(model.weight.detach(), moved)
    assert not torch.equal(ema.shadow[0], live) and not torch.equal(ema.shadow[0], moved)


@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1, float("nan"), True])
def test_a_decay_outside_zero_one_is_refused(decay, wine_config):
    with pytest.raises(ValueError, match="ema decay"):
        WeightEMA(torch.nn.Linear(2, 2), decay)
    if decay is not True:
        wine_config["trainer"]["ema_decay"] = decay
        with pytest.raises(ConfigError, match="ema_decay"):
            Trainer(wine_config)


def test_validation_best_and_test_use_the_average_and_last_keeps_the_live_weights(wine_config, tmp_path):
    wine_config["trainer"].update(epochs=3, ema_decay=0.8)
    seen = []

    @mmcore.hookimpl
    def mmcore_epoch_end(trainer, epoch):
        # after the checkpoint: the live weights are back in the model, the average in the shadow
        seen.append({n: t.clone() for n, t in zip(trainer.ema.names, trainer.ema.shadow, strict=True)})

    with mmcore.register_plugin(types.SimpleNamespace(mmcore_epoch_end=mmcore_epoch_end), name="observer"):
        trainer = Trainer(wine_config)
        report = trainer.fit()
    run = tmp_path / "run"
    best, last = load_file(str(run / "best" / "model.safetensors")), load_file(str(run / "last" / "model.safetensors"))
    averaged = seen[report["best_epoch"] - 1]
    for name, value in averaged.items():
        torch.testing.assert_close(best[name], value)  # best/ is the average of the best epoch
    assert any(not torch.equal(last[n], seen[-1][n]) for n in seen[-1]), "last/ holds the optimiser's weights"
    state = load_training_state(run / "last")
    for name, value in seen[-1].items():
        torch.testing.assert_close(state["ema"]["tensors"][name], value)
    assert state["ema"]["updates"] == report["steps"]
    # the test pass scored the average: the model held best/'s weights for it (and still does)
    live = trainer.model.state_dict()
    for name, value in averaged.items():
        torch.testing.assert_close(live[name], value)


def test_a_run_with_an_average_resumes_exactly(wine_config, tmp_path):
    wine_config["trainer"].update(epochs=4, ema_decay=0.9, modality_dropout=0.2)
    straight = copy.deepcopy(wine_config)
    straight["trainer"]["run_dir"] = str(tmp_path / "straight")
    Trainer(straight).fit()

    class StopAfter2:
        @mmcore.hookimpl
        def mmcore_epoch_end(self, epoch):
            if epoch == 2:
                raise KeyboardInterrupt

    resumed = copy.deepcopy(wine_config)
    resumed["trainer"]["run_dir"] = str(tmp_path / "resumed")
    with mmcore.register_plugin(StopAfter2(), name="killer"), pytest.raises(KeyboardInterrupt):
        Trainer(resumed).fit()
    report = Trainer(resumed, resume=tmp_path / "resumed").fit()
    a = json.loads((tmp_path / "straight" / "report.json").read_text())
    assert [round(r["val/loss"], 6) for r in a["history"]] == [round(r["val/loss"], 6) for r in report["history"]]
    for which in ("last", "best"):
        wa = load_file(str(tmp_path / "straight" / which / "model.safetensors"))
        wb = load_file(str(tmp_path / "resumed" / which / "model.safetensors"))
        for key in wa:
            torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6)
    ea, eb = (load_training_state(tmp_path / r / "last")["ema"] for r in ("straight", "resumed"))
    assert ea["updates"] == eb["updates"]
    for key in ea["tensors"]:
        torch.testing.assert_close(ea["tensors"][key], eb["tensors"][key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("damage", ["shape", "nan", "names", "updates"])
def test_a_damaged_average_in_the_training_state_is_refused_before_anything_loads(wine_config, tmp_path, damage):
    wine_config["trainer"].update(epochs=2, ema_decay=0.9)

    class StopAfter1:
        @mmcore.hookimpl
        def mmcore_epoch_end(self, epoch):
            if epoch == 1:
                raise KeyboardInterrupt

    with mmcore.register_plugin(StopAfter1(), name="killer"), pytest.raises(KeyboardInterrupt):
        Trainer(wine_config).fit()
    path = tmp_path / "run" / "last" / "state.pt"
    state = torch.load(path, weights_only=True)
    tensors = state["ema"]["tensors"]
    first = next(iter(tensors))
    if damage == "shape":
        tensors[first] = torch.zeros(1)
    elif damage == "nan":
        tensors[first] = torch.full_like(tensors[first], float("nan"))
    elif damage == "names":
        tensors["not.a.parameter"] = tensors.pop(first)
    else:
        state["ema"]["updates"] = -3
    torch.save(state, path)
    from mmcore.engine.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="ema"):
        Trainer(wine_config, resume=tmp_path / "run").fit()


def test_without_an_average_nothing_changes(wine_config):
    trainer = Trainer(wine_config)
    trainer.fit()
    assert trainer.ema is None and "ema" not in load_training_state(trainer.run_dir / "last")
