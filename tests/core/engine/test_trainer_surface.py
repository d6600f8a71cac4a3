"""The trainer's surface for plugins (hookspecs.py, "The trainer a hook sees"): request_stop, extra
loss terms (mmcore_train_loss) and gradient changes before the optimiser step
(mmcore_before_optimizer_step), and a plugin's change between training and the test pass (mmcore_before_test)."""

import copy
import json
import math
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mmcore
from mmcore.engine import NonFiniteLossError
from mmcore.engine.trainer import Trainer
from mmcore.errors import PluginHookError


def _weights(run_dir, which="last"):
    return load_file(str(run_dir / which / "model.safetensors"))


def _deterministic(config):
    """No dropout anywhere, so two runs with the same seed take exactly the same steps."""
    config = copy.deepcopy(config)
    for encoder in config["model"]["encoders"].values():
        encoder["dropout"] = 0.0
    config["model"]["fusion"]["dropout"] = 0.0
    return config


class _StopAt:
    def __init__(self, epoch, reason="enough"):
        self.epoch, self.reason = epoch, reason

    @mmcore.hookimpl
    def mmcore_epoch_end(self, trainer, epoch):
        if epoch == self.epoch:
            trainer.request_stop(self.reason)


@pytest.mark.parametrize("early_stopping", [None, 50])
def test_request_stop_ends_the_run_after_that_epoch_and_the_report_says_why(wine_config, early_stopping):
    wine_config["trainer"].update(epochs=5, early_stopping=early_stopping)
    with mmcore.register_plugin(_StopAt(2, "time limit reached"), name="stopper"):
        report = Trainer(wine_config).fit()
    assert report["status"] == "stopped" and report["stop_reason"] == "time limit reached"
    assert report["epochs_run"] == 2 and len(report["history"]) == 2
    assert report["test"], "the best checkpoint is still tested"
    saved = json.loads((Path(report["run_dir"]) / "report.json").read_text())
    assert saved["status"] == "stopped" and saved["stop_reason"] == "time limit reached"


def test_the_first_reason_is_kept_and_a_reason_is_required(wine_config):
    wine_config["trainer"]["epochs"] = 3
    with mmcore.register_plugin(_StopAt(1, "first"), name="a"), mmcore.register_plugin(_StopAt(1, "second"), name="b"):
        report = Trainer(wine_config).fit()
    assert report["stop_reason"] in {"first", "second"} and report["epochs_run"] == 1
    trainer = Trainer(wine_config | {"trainer": {**wine_config["trainer"], "run_dir": report["run_dir"] + "-2"}})
    for bad in (None, "", "  ", 3):
        with pytest.raises(TypeError, match="reason"):
            trainer.request_stop(bad)


def test_a_completed_run_has_no_stop_reason(wine_config):
    wine_config["trainer"]["epochs"] = 1
    report = Trainer(wine_config).fit()
    assert report["status"] == "completed" and report["stop_reason"] is None


class _Term:
    """Adds ``value`` (a constant, or a function of the output) as a loss term."""

    def __init__(self, make):
        self.make, self.seen = make, []

    @mmcore.hookimpl
    def mmcore_train_loss(self, trainer, batch, output):
        self.seen.append((set(batch), set(output.features), output.fused.pooled.shape, output.loss.requires_grad))
        return self.make(batch, output)


def test_a_constant_loss_term_is_reported_and_changes_no_weight(wine_config, tmp_path):
    config = _deterministic(wine_config)
    config["trainer"]["epochs"] = 2
    plain = copy.deepcopy(config)
    plain["trainer"]["run_dir"] = str(tmp_path / "plain")
    base = Trainer(plain).fit()
    term = _Term(lambda batch, out: {"bonus": torch.tensor(3.0)})
    with mmcore.register_plugin(term, name="constant"):
        report = Trainer(config).fit()
    row, base_row = report["history"][-1], base["history"][-1]
    assert row["train/bonus"] == pytest.approx(3.0)
    assert row["train/loss"] == pytest.approx(base_row["train/loss"], abs=1e-7), "train/loss stays the head's loss"
    for name, tensor in _weights(tmp_path / "plain").items():
        torch.testing.assert_close(_weights(tmp_path / "run")[name], tensor, rtol=0, atol=0)
    keys, slots, pooled_shape, graph = term.seen[0]
    assert {"inputs", "targets"} <= keys and slots == {"first", "second"} and pooled_shape[-1] == 16 and graph


def test_a_loss_term_with_a_gradient_trains_through_the_features(wine_config, tmp_path):
    config = _deterministic(wine_config)
    config["trainer"]["epochs"] = 1
    plain = copy.deepcopy(config)
    plain["trainer"]["run_dir"] = str(tmp_path / "plain")
    Trainer(plain).fit()
    # An L2 penalty on the first encoder's pooled vectors: only the weights upstream of it move differently.
    term = _Term(lambda batch, out: 10.0 * out.features["first"].pooled.pow(2).mean())
    with mmcore.register_plugin(term, name="l2_first"):
        report = Trainer(config).fit()
    assert report["history"][-1]["train/l2_first"] > 0
    changed = {k for k, v in _weights(tmp_path / "run").items() if not torch.equal(v, _weights(tmp_path / "plain")[k])}
    assert any(k.startswith("encoders.first.") for k in changed)


def test_a_non_finite_loss_term_stops_the_run(wine_config):
    with mmcore.register_plugin(_Term(lambda b, o: o.loss * float("nan")), name="nan_term"):
        with pytest.raises(NonFiniteLossError, match="nan_term"):
            Trainer(wine_config).fit()


@pytest.mark.parametrize("value", [torch.ones(3), "0.5", torch.tensor(1)])
def test_a_loss_term_that_is_not_a_float_scalar_names_the_plugin(wine_config, value):
    with mmcore.register_plugin(_Term(lambda b, o: value), name="bad_term"):
        with pytest.raises(PluginHookError, match="bad_term.*mmcore_train_loss|mmcore_train_loss.*bad_term"):
            Trainer(wine_config).fit()


class _ZeroGradients:
    def __init__(self, prefix):
        self.prefix, self.steps = prefix, []

    @mmcore.hookimpl
    def mmcore_before_optimizer_step(self, trainer, step):
        self.steps.append(step)
        for name, parameter in trainer.model.named_parameters():
            if name.startswith(self.prefix) and parameter.grad is not None:
                parameter.grad.zero_()


def test_gradients_changed_before_the_step_are_the_ones_applied(wine_config, tmp_path):
    config = _deterministic(wine_config)
    config["trainer"].update(epochs=2, weight_decay=0.0, grad_clip=1.0)
    first = Trainer(copy.deepcopy(config) | {"trainer": {**config["trainer"], "run_dir": str(tmp_path / "init"), "epochs": 1}})
    first.setup()
    initial = {k: v.clone() for k, v in first.model.state_dict().items()}
    first.rundir.release()
    hook = _ZeroGradients("encoders.second.")
    with mmcore.register_plugin(hook, name="freeze_second"):
        report = Trainer(config).fit()
    after = _weights(tmp_path / "run")
    assert hook.steps == list(range(1, report["steps"] + 1))
    for name, value in after.items():
        if name.startswith("encoders.second.") and value.is_floating_point():
            torch.testing.assert_close(value, initial[name], rtol=0, atol=0, msg=name)
    moved = [k for k, v in after.items() if k.startswith("encoders.first.") and not torch.equal(v, initial[k])]
    assert moved, "the other encoder still trained"


class _StopAtStep:
    def __init__(self, step):
        self.at = step

    @mmcore.hookimpl
    def mmcore_train_step_end(self, trainer, step):
        if step == self.at:
            trainer.request_stop("time limit: the next epoch would not fit", finish_epoch=False)


def test_request_stop_within_an_epoch_ends_it_after_that_step_validated_and_tested(wine_config):
    wine_config["trainer"].update(epochs=4, batch_size=16)
    with mmcore.register_plugin(_StopAtStep(3), name="stopper"):
        trainer = Trainer(wine_config)
        report = trainer.fit()
    assert report["status"] == "stopped" and report["steps"] == 3 and report["epochs_run"] == 1
    assert report["samples"]["train"] == 3 * 16 < trainer.steps_per_epoch * 16
    assert len(report["history"]) == 1 and "val/loss" in report["history"][0] and report["test"]
    assert report["best_epoch"] == 1  # the shortened epoch was validated and checkpointed
    assert (Path(report["run_dir"]) / "best" / "model.safetensors").is_file()


class _Rows:
    """Records each training micro-batch's row indices and targets as a loss hook sees them."""

    def __init__(self):
        self.batches = []

    @mmcore.hookimpl
    def mmcore_train_loss(self, trainer, batch, output):
        self.batches.append((trainer.epoch, batch["index"].tolist(), batch["targets"].tolist(), batch["index"].device))


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_training_batch_carries_the_rows_indices_in_the_training_split(wine_config, dropout):
    wine_config["trainer"].update(epochs=2, modality_dropout=dropout)
    rows = _Rows()
    with mmcore.register_plugin(rows, name="rows"):
        trainer = Trainer(wine_config)
        trainer.fit()
    train = trainer.datasets["train"]
    for epoch in (1, 2):
        seen = [i for e, indices, _, _ in rows.batches if e == epoch for i in indices]
        assert sorted(seen) == list(range(len(train))), "every row once per epoch"
    order = [indices for e, indices, _, _ in rows.batches]
    assert order[0] != order[len(order) // 2], "shuffled: the epochs' orders differ"
    for _, indices, targets, device in rows.batches:
        expected = trainer.model.head.collate_targets([train[i]["target"] for i in indices]).tolist()
        assert targets == expected and device == trainer.device


def test_before_test_sees_the_best_weights_and_the_one_test_pass_scores_what_it_changed(wine_config):
    """A plugin zeroes the head between training and the test pass: every class gets the same logit,
    so the test loss is ln(3) -- the test scored the changed model, once."""
    seen = {}

    def before_test(trainer):
        best = trainer.best_weights
        seen["best"] = all(torch.equal(v, best[k]) for k, v in trainer.model.state_dict().items() if k in best)
        seen["epochs"] = len(trainer.history)
        with torch.no_grad():
            for p in trainer.model.head.parameters():
                p.zero_()

    wine_config["trainer"].update(epochs=2, diagnostics=False)
    plugin = types.SimpleNamespace(mmcore_before_test=mmcore.hookimpl(before_test))
    with mmcore.register_plugin(plugin, name="before-test"):
        report = Trainer(wine_config).fit()
    assert seen == {"best": True, "epochs": 2}
    assert report["status"] == "completed" and report["test"]["loss"] == pytest.approx(math.log(3), abs=1e-6)


def test_a_failing_before_test_hook_fails_the_run_untested_and_report_json_says_so(wine_config):
    def before_test(trainer):
        raise RuntimeError("no")

    wine_config["trainer"].update(epochs=1, diagnostics=False)
    plugin = types.SimpleNamespace(mmcore_before_test=mmcore.hookimpl(before_test))
    with mmcore.register_plugin(plugin, name="before-test"), pytest.raises(PluginHookError, match="mmcore_before_test"):
        Trainer(wine_config).fit()
    saved = json.loads((Path(wine_config["trainer"]["run_dir"]) / "report.json").read_text())
    assert saved["status"] == "failed" and "mmcore_before_test" in saved["error"] and saved["test"] == {}
