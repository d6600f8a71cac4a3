"""Metric values as numbers (one function for training and evaluation) and metric directions
taken from the metric objects (torchmetrics' ``higher_is_better``), never from their names."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torchmetrics import MeanAbsolutePercentageError, Metric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.text import WordErrorRate

import mmcore
from mmcore.engine.evaluation import evaluate
from mmcore.engine.metrics import as_float, lower_is_better, metric_directions
from mmcore.engine.trainer import Trainer
from mmcore.errors import ConfigError
from mmcore_plugins.heads.classification import ClassificationHead


class ErrorRate(Metric):
    """1 - accuracy of class-index predictions: smaller is better (declared, as torchmetrics does)."""

    higher_is_better = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("wrong", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        self.wrong += (predictions != targets).sum()
        self.total += targets.numel()

    def compute(self) -> torch.Tensor:
        return self.wrong / self.total


class TwoNumbers(ErrorRate):
    """A metric returning a dict of numbers: reported as their mean."""

    higher_is_better = True

    def compute(self) -> dict[str, torch.Tensor]:
        rate = self.wrong / self.total
        return {"error": rate, "accuracy": 1 - rate, "quarter": torch.tensor([0.25, 0.25])}


class Undeclared(ErrorRate):
    higher_is_better = None


class WerHead(ClassificationHead):
    """Classification with an error rate called ``wer`` and a dict-valued metric."""

    def metrics(self):
        return {"wer": ErrorRate(), "accuracy": MulticlassAccuracy(num_classes=self.num_classes, average="micro"),
                "mixed": TwoNumbers(), "undeclared": Undeclared()}


@pytest.fixture
def wer_head():
    mmcore.register_head("wer_classification")(WerHead)
    yield "wer_classification"
    WerHead.__mmcore_plugin__.unregister()


# ------------------------------------------------------------------------------ as_float
@pytest.mark.parametrize(("value", "expected"), [
    (torch.tensor(0.5), 0.5), (torch.tensor([0.2, 0.4]), pytest.approx(0.3)), (3, 3.0), (0.25, 0.25),
    ({"a": torch.tensor(1.0), "b": torch.tensor([0.0, 1.0])}, 0.75), (torch.tensor(2, dtype=torch.int64), 2.0),
])
def test_metric_values_become_one_number(value, expected):
    assert as_float(value) == expected


def test_a_metric_value_that_is_not_a_number_is_named():
    with pytest.raises(TypeError, match="a metric returned str 'n/a'"):
        as_float("n/a")


# ------------------------------------------------------------------------------ directions
def test_the_direction_comes_from_the_metric_not_its_name():
    metrics = {"wer": WordErrorRate(), "mape": MeanAbsolutePercentageError(), "accuracy": MulticlassAccuracy(num_classes=3),
               "score_error": TwoNumbers()}
    assert lower_is_better("wer", metrics=metrics)
    assert lower_is_better("mape", metrics=metrics)
    assert not lower_is_better("accuracy", metrics=metrics)
    assert not lower_is_better("score_error", metrics=metrics)  # "error" in the name, but it declares higher
    assert lower_is_better("loss", metrics=metrics)
    assert metric_directions(metrics) == {"loss": False, "wer": False, "mape": False, "accuracy": True, "score_error": True}


def test_an_explicit_mode_wins_and_an_undeclared_metric_asks_for_one():
    metrics = {"undeclared": Undeclared(), "wer": WordErrorRate()}
    assert lower_is_better("wer", "max", metrics=metrics) is False
    assert lower_is_better("undeclared", "min", metrics=metrics) is True
    with pytest.raises(ConfigError, match=r"trainer.monitor_mode: metric 'undeclared' declares no direction.*'min' or 'max'"):
        lower_is_better("undeclared", metrics=metrics)
    with pytest.raises(ConfigError, match="trainer.monitor_mode: must be 'auto', 'max' or 'min', got 'up'"):
        lower_is_better("wer", "up", metrics=metrics)


def _history(run):
    with (run / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_a_wer_monitor_is_minimised_and_a_dict_metric_is_trained_and_evaluated(wine_config, wer_head, tmp_path):
    wine_config["model"]["head"] = {"name": wer_head, "num_classes": 3}
    wine_config["trainer"].update(epochs=4, lr=0.003, monitor="wer")
    trainer = Trainer(wine_config)
    report = trainer.fit()
    values = [row["val/wer"] for row in report["history"]]
    assert len(set(values)) > 1
    best = min(values)
    assert report["best_value"] == pytest.approx(best)
    assert values[report["best_epoch"] - 1] == best and values.index(best) == report["best_epoch"] - 1
    # the dict-valued metric: the mean of its numbers, in training and in evaluation alike
    for row in report["history"]:
        assert row["train/mixed"] == pytest.approx((row["train/wer"] + (1 - row["train/wer"]) + 0.25) / 3)
        assert row["val/mixed"] == pytest.approx((row["val/wer"] + (1 - row["val/wer"]) + 0.25) / 3)
    assert "train/mixed" in _history(tmp_path / "run")[0]
    results = evaluate(trainer.model, trainer.datasets["test"])
    assert results["mixed"] == pytest.approx((1 + 0.25) / 3)
    assert json.loads((tmp_path / "run" / "report.json").read_text())["test"]["mixed"] == pytest.approx(results["mixed"])


def test_a_monitor_without_a_direction_is_refused_before_training(wine_config, wer_head, tmp_path):
    wine_config["model"]["head"] = {"name": wer_head, "num_classes": 3}
    wine_config["trainer"].update(monitor="undeclared")
    with pytest.raises(ConfigError, match="metric 'undeclared' declares no direction"):
        Trainer(wine_config).fit()
    assert not (tmp_path / "run" / "metrics.csv").exists()
    wine_config["trainer"].update(monitor_mode="min", epochs=1)
    assert Trainer(wine_config).fit()["monitor"] == "undeclared"


def test_robustness_scores_a_lower_is_better_metric_so_that_larger_means_more_robust(wine_config, wer_head):
    from mmcore.engine.robustness import robustness_report

    wine_config["model"]["head"] = {"name": wer_head, "num_classes": 3}
    wine_config["trainer"].update(epochs=2, monitor="wer")
    trainer = Trainer(wine_config)
    trainer.fit()
    registry = mmcore.get_registry()
    report = robustness_report(trainer.model, trainer.datasets["test"], registry, metric="wer",
                               perturbations=["feature_noise"], levels={"feature_noise": [2.0]})
    (row, *_) = [r for r in report["perturbed"] if r["slot"] == "first"]
    assert row["relative"] == pytest.approx(report["clean"] / row["wer"])  # clean / perturbed: lower is better
    assert row["effective"] == pytest.approx(report["removed"]["first"] - row["wer"])
    with pytest.raises(ConfigError, match="declares no direction"):
        robustness_report(trainer.model, trainer.datasets["test"], registry, metric="undeclared", perturbations=[])
