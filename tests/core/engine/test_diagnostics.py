"""Imbalance diagnostics in every run: gradient-norm shares per epoch, linear probes per encoder, and
the metric with each modality removed / alone (checked against evaluating really-missing inputs)."""

import copy

import pytest
import torch

import mmcore
from mmcore.engine.diagnostics import linear_probe, modality_report
from mmcore.engine.evaluation import evaluate
from mmcore.engine.trainer import Trainer
from mmcore.engine.views import SubsetOfModalities


def test_linear_probe_reads_what_the_features_carry():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    informative = torch.nn.functional.one_hot(y, 4).double() * 3 + 0.3 * torch.randn(200, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(200, 6, generator=g, dtype=torch.float64)
    assert linear_probe(torch.cat([informative, noise], 1), y) == (pytest.approx(1.0, abs=0.02), "accuracy")
    value, kind = linear_probe(noise, y)
    assert kind == "accuracy" and value < 0.45, "noise: about chance (0.25)"
    r2, kind = linear_probe(noise, noise[:, 0] * 2 + 1)
    assert kind == "r2" and r2 > 0.99
    assert linear_probe(noise[:6], y[:6]) == (None, None), "fewer than 2 rows per fold"
    assert linear_probe(noise, torch.zeros(200, dtype=torch.long)) == (None, None), "one class"


def test_removed_and_alone_equal_evaluating_really_missing_inputs(wine_config):
    from mmcore.engine.datasets import load_datasets
    from mmcore.plugin_manager import get_plugin_manager

    torch.manual_seed(0)
    model = mmcore.build_model(wine_config["model"])
    data = load_datasets(wine_config, get_plugin_manager())
    model.fit_processors(data["train"].samples)
    report = modality_report(model, data["val"], batch_size=8)
    assert report["metric"] == "accuracy" and report["rows"] == len(data["val"])
    assert report["full"] == pytest.approx(evaluate(model, data["val"])["accuracy"])
    for slot, other in (("first", "second"), ("second", "first")):
        assert report["removed"][slot] == pytest.approx(evaluate(model, SubsetOfModalities(data["val"], [other]))["accuracy"])
        assert report["alone"][slot] == pytest.approx(evaluate(model, SubsetOfModalities(data["val"], [slot]))["accuracy"])
        assert report["probe_rows"][slot] == sum(s["inputs"][slot] is not None for s in data["val"].samples)
    assert report["probe_metric"] == "accuracy" and all(0 <= v <= 1 for v in report["probe"].values())


class _ZeroSecond:
    @mmcore.hookimpl
    def mmcore_before_optimizer_step(self, trainer):
        for p in trainer.model.encoders["second"].parameters():
            if p.grad is not None:
                p.grad.zero_()


def test_a_run_reports_gradient_shares_probes_and_subsets(wine_config):
    wine_config["trainer"].update(epochs=2, plots=True)
    with mmcore.register_plugin(_ZeroSecond(), name="zero_second"):
        report = Trainer(wine_config).fit()
    diagnostics = report["diagnostics"]
    # The shares are of the gradients as applied: a plugin zeroed the second encoder's.
    assert diagnostics["grad_share"] == {"first": [1.0, 1.0], "second": [0.0, 0.0]}
    assert [row["grad_share/first"] for row in report["history"]] == [1.0, 1.0]
    assert diagnostics["split"] == "val" and diagnostics["weights"] == "best" and diagnostics["seconds"] >= 0
    assert set(diagnostics["probe"]) == set(diagnostics["removed"]) == set(diagnostics["alone"]) == {"first", "second"}
    assert any(p.endswith("diagnostics.png") for p in report["plots"])
    assert not any(p.endswith(("first.png", "second.png")) for p in report["plots"]), "grad_share/* is not a training curve"


def test_diagnostics_can_be_switched_off(wine_config):
    config = copy.deepcopy(wine_config)
    config["trainer"].update(epochs=1, diagnostics=False)
    report = Trainer(config).fit()
    assert "diagnostics" not in report and not any(k.startswith("grad_share/") for k in report["history"][0])


@pytest.mark.parametrize("epochs", [1, 2])
def test_the_report_reads_the_last_validation_pass_rather_than_encoding_the_split_again(wine_config, monkeypatch, epochs):
    import mmcore.engine.diagnostics as diagnostics_module

    passes = []
    fresh_report = diagnostics_module.modality_report
    monkeypatch.setattr(diagnostics_module, "modality_report", lambda *a, **k: passes.append(1) or fresh_report(*a, **k))
    wine_config["trainer"].update(epochs=epochs)
    trainer = Trainer(wine_config)
    report = trainer.fit()
    got = report["diagnostics"]
    # The model now holds the weights the report describes (the best epoch's: the test split was evaluated)
    assert got["weights"] == "best" and report["test"]
    assert passes == ([] if trainer.best_epoch == epochs else [1]), "a second pass only when the last epoch was not the best"
    again = fresh_report(trainer.model, trainer.datasets["val"], batch_size=trainer.options.batch_size)
    assert got["rows"] == again["rows"] == len(trainer.datasets["val"])
    for key in ("full", "removed", "alone", "probe", "probe_rows"):
        assert got[key] == pytest.approx(again[key], abs=1e-9), key
