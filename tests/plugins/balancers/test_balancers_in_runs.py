"""Every registered balancer trains a real run (``trainer.balancer``), reports its per-epoch numbers,
changes the training, and is refused up front when misconfigured."""

import copy

import pytest
import torch
from safetensors.torch import load_file

from mmcore.engine.trainer import Trainer
from mmcore.errors import ConfigError, PluginHookError
from mmcore.plugin_manager import get_registry

#: scikit-learn's wine (178 rows) in two modalities, a fifth of the modalities missing; deterministic.
WINE = {
    "data": {"name": "sklearn_tabular", "dataset": "wine", "missing_rate": 0.2, "seed": 0},
    "model": {
        "encoders": {
            "first": {"name": "tabular_mlp", "num_features": 6, "dim": 16, "dropout": 0.0},
            "second": {"name": "tabular_mlp", "num_features": 7, "dim": 16, "dropout": 0.0},
        },
        "fusion": {"name": "gated", "dim": 16},
        "head": {"name": "classification", "num_classes": 3},
    },
    "trainer": {"epochs": 2, "batch_size": 16, "lr": 0.01, "progress": False, "plots": False, "tensorboard": False},
}
BUILT_IN = ["agm", "gblend", "mla", "mmpareto", "ogm_ge"]


def _config(tmp_path, name, **trainer):
    config = copy.deepcopy(WINE)
    config["trainer"].update(run_dir=str(tmp_path / str(name)), balancer=name, **trainer)
    return config


def test_the_built_in_balancers_are_registered():
    assert set(BUILT_IN) <= set(get_registry().names("balancer"))


@pytest.fixture(scope="module")
def plain_weights(tmp_path_factory):
    run = tmp_path_factory.mktemp("plain") / "run"
    config = copy.deepcopy(WINE)
    config["trainer"]["run_dir"] = str(run)
    report = Trainer(config).fit()
    return report, load_file(str(run / "last" / "model.safetensors"))


@pytest.mark.parametrize("name", BUILT_IN)
def test_a_run_with_each_balancer_trains_reports_and_differs_from_plain(tmp_path, name, plain_weights):
    report = Trainer(_config(tmp_path, name)).fit()
    assert report["status"] == "completed" and report["test"]["accuracy"] > 0.5
    last = report["history"][-1]
    assert {"balancer/first", "balancer/second"} <= set(last), "the balancer's per-epoch numbers are in the metrics"
    assert {"grad_share/first", "grad_share/second"} <= set(last)
    weights = load_file(str(tmp_path / name / "last" / "model.safetensors"))
    changed = [k for k, v in weights.items() if not torch.equal(v, plain_weights[1][k])]
    assert any(k.startswith("encoders.") for k in changed), "the balancer changed how the encoders trained"


def test_options_and_names_are_checked_before_anything_is_built(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer\.balancer.*unknown balancer 'ogm'.*did you mean 'ogm_ge'"):
        Trainer(_config(tmp_path, "ogm"))
    config = _config(tmp_path, "x")
    config["trainer"]["balancer"] = {"name": "ogm_ge", "alpah": 0.3}
    with pytest.raises(ConfigError, match=r"trainer\.balancer\.alpah.*did you mean 'alpha'"):
        Trainer(config)
    config["trainer"]["balancer"] = {"name": "ogm_ge", "alpha": -1.0}
    with pytest.raises(ConfigError, match=r"trainer\.balancer: balancer 'ogm_ge' .*rejected its options.*alpha must be a positive"):
        Trainer(config)
    config["trainer"]["balancer"] = {"alpha": 0.3}
    with pytest.raises(ConfigError, match="trainer.balancer"):
        Trainer(config)


def test_a_balancer_on_a_model_with_one_modality_fails_the_run_clearly(tmp_path):
    config = _config(tmp_path, "mmpareto")
    config["model"]["encoders"].pop("second")
    config["model"].pop("fusion")
    config["data"]["modalities"] = {"first": ["alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium",
                                              "total_phenols"]}
    with pytest.raises(PluginHookError, match="balancer mmpareto.*one encoder slot|fused model"):
        Trainer(config).fit()


def test_a_regression_head_is_refused_by_the_score_based_balancers(tmp_path):
    from mmcore_plugins.balancers._common import class_targets

    class Out:
        logits = torch.zeros(4, 1)

    with pytest.raises(ValueError, match="ogm_ge.*classification head"):
        class_targets(Out(), torch.zeros(4), "ogm_ge")
