"""Structured pruning (plugins/compress): a trained model cut into the model of a smaller config,
the most important channels kept, fine-tuned into an ordinary run."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml

from mmcore.cli import main
from mmcore.engine.checkpoint import load_model
from mmcore.engine.evaluation import to_device
from mmcore.errors import ConfigError
from mmcore.model import build_model
from mmcore_plugins.compress.prune import _select, groups_of, prune, smaller_spec

SPEC = {
    "encoders": {
        "image": {"name": "image_cnn", "dim": 16, "image_size": 8, "width": 16},
        "audio": {"name": "audio_cnn", "dim": 16, "n_mels": 16, "width": 16, "sample_rate": 8000},
        "text": {"name": "text_transformer", "dim": 16, "heads": 2, "layers": 2, "max_length": 16, "ff_dim": 32},
        "table": {"name": "tabular_mlp", "num_features": 4, "dim": 8, "hidden": [16, 8]},
    },
    "fusion": {"name": "concat", "dim": 16},
    "head": {"name": "classification", "num_classes": 3, "hidden": 16},
}


def _model(manager, spec=SPEC):
    torch.manual_seed(0)
    model = build_model(copy.deepcopy(spec), manager.registry)
    generator = torch.Generator().manual_seed(0)
    samples = [{"inputs": {slot: proc.example(generator) for slot, proc in model.processors.items()}, "target": i % 3}
               for i, proc in enumerate([None] * 6)]
    model.fit_processors(samples)
    return model.eval(), [model.collate(samples)]


def test_the_smaller_spec_shrinks_each_declared_option_to_its_multiple(manager):
    model, _ = _model(manager)
    spec, changes = smaller_spec(model, manager.registry, 0.5)
    assert {c.path: (c.before, c.after) for c in changes} == {
        "model.encoders.image.width": (16, 8), "model.encoders.audio.width": (16, 8),
        "model.encoders.text.ff_dim": (32, 16), "model.encoders.table.hidden": ([16, 8], [8, 4]),
        "model.head.hidden": (16, 8)}
    assert spec["encoders"]["image"]["dim"] == 16, "output widths are what the next component reads: kept"
    assert model.spec["encoders"]["image"]["width"] == 16, "the model's own spec is untouched"
    for amount in (0.0, 1.0, -0.5):
        with pytest.raises(ConfigError, match="--amount"):
            smaller_spec(model, manager.registry, amount)
    narrow, _ = _model(manager, {**SPEC, "encoders": {"table": {"name": "tabular_mlp", "num_features": 4, "dim": 8, "hidden": [4]}},
                                 "fusion": None, "head": {"name": "classification", "num_classes": 3}})
    with pytest.raises(ConfigError, match="nothing to prune"):
        smaller_spec(narrow, manager.registry, 0.5)


@pytest.mark.parametrize("importance", ["magnitude", "taylor"])
def test_every_built_in_prunable_component_gives_the_smaller_configs_model(manager, importance):
    model, batches = _model(manager)
    result = prune(model, manager.registry, batches, amount=0.5, importance=importance)
    fresh = build_model(result.spec, manager.registry)
    assert {k: v.shape for k, v in result.model.state_dict().items()} == {k: v.shape for k, v in fresh.state_dict().items()}
    assert result.groups == len(groups_of(model)) == 4 + 3 + 2 + 2 + 1
    assert sum(p.numel() for p in result.model.parameters()) < sum(p.numel() for p in model.parameters())
    inputs, _ = to_device(batches[0], "cpu")
    with torch.no_grad():
        assert torch.isfinite(result.model.eval()(inputs).logits).all()
    for slot, processor in model.processors.items():
        assert result.model.processors[slot].state_dict() == processor.state_dict()


def test_units_that_carry_nothing_are_the_ones_removed_and_the_function_is_unchanged(manager):
    """Hidden units whose incoming weights and bias are zero output GELU(0) = 0: removing exactly them
    (and the next layer's columns that read them) must leave every output as it was."""
    spec = {"encoders": {"table": {"name": "tabular_mlp", "num_features": 4, "dim": 8, "hidden": [16]},
                         "text": {"name": "text_transformer", "dim": 16, "heads": 2, "layers": 1, "max_length": 16, "ff_dim": 32}},
            "fusion": {"name": "concat", "dim": 8}, "head": {"name": "classification", "num_classes": 3, "hidden": 16}}
    model, batches = _model(manager, spec)
    dead = {"encoders.table.net.0": [1, 3, 4, 6, 9, 10, 12, 15], "encoders.text.encoder.layers.0.linear1": list(range(0, 32, 2)),
            "head.net.0": list(range(8, 16))}
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, rows in dead.items():
            modules[name].weight[rows] = 0.0
            modules[name].bias[rows] = 0.0
    result = prune(model, manager.registry, amount=0.5)
    inputs, _ = to_device(batches[0], "cpu")
    with torch.no_grad():
        torch.testing.assert_close(result.model(inputs).logits, model(inputs).logits, rtol=1e-5, atol=1e-6)
    kept = result.model.encoders["table"].net[0].weight
    alive = [i for i in range(16) if i not in dead["encoders.table.net.0"]]
    torch.testing.assert_close(kept, modules["encoders.table.net.0"].weight[alive], rtol=0, atol=0)


def test_a_channel_owning_a_block_of_inputs_keeps_its_whole_block():
    weight = torch.arange(2 * 12, dtype=torch.float32).view(2, 12)  # 3 channels x 4 inputs each
    torch.testing.assert_close(_select(weight, 1, 4, torch.tensor([0, 2])), weight[:, [0, 1, 2, 3, 8, 9, 10, 11]])
    torch.testing.assert_close(_select(weight, 0, 1, torch.tensor([1])), weight[1:])


# ------------------------------------------------------------------ the command
WINE = {
    "data": {"name": "sklearn_tabular", "dataset": "wine", "missing_rate": 0.2, "seed": 0},
    "model": {
        "encoders": {"first": {"name": "tabular_mlp", "num_features": 6, "dim": 8, "hidden": [32]},
                     "second": {"name": "tabular_mlp", "num_features": 7, "dim": 8, "hidden": [32]}},
        "fusion": {"name": "concat", "dim": 8},
        "head": {"name": "classification", "num_classes": 3},
    },
    # a run whose horizon grew from 2 to 3 epochs after epoch 1 (as a fit run's may): the fine-tuning is a plan of its own
    "trainer": {"epochs": 3, "batch_size": 32, "lr": 0.01, "progress": False, "plots": False, "tensorboard": False,
                "schedule_extensions": [[1, 2, 3]]},
}


@pytest.fixture
def trained(tmp_path, capsys):
    config = copy.deepcopy(WINE)
    config["trainer"]["run_dir"] = str(tmp_path / "run")
    path = tmp_path / "wine.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 0
    capsys.readouterr()
    return tmp_path / "run"


def test_prune_writes_an_ordinary_fine_tuned_run(trained, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(["prune", str(trained), "--out", str(out), "--amount", "0.5", "--epochs", "2", "--distill",
                 "trainer.batch_size=16"]) == 0
    printed = capsys.readouterr().out
    assert "model.encoders.first.hidden [32] -> [16]" in printed
    model, meta = load_model(out / "best")
    assert model.spec["encoders"]["first"]["hidden"] == [16]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["trainer"]["init"] == str(tmp_path / "pruned-init") and config["trainer"]["epochs"] == 2
    assert config["trainer"]["schedule_extensions"] == []
    assert config["trainer"]["batch_size"] == 16 and config["trainer"]["distill"]["teacher"] == str(trained)
    assert config["trainer"]["lr"] == pytest.approx(0.005)
    _, init_meta = load_model(tmp_path / "pruned-init")
    assert init_meta["pruning"]["pruned_from"] == str(trained) and init_meta["pruning"]["parameters"]["after"] < \
        init_meta["pruning"]["parameters"]["before"]
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "completed" and report["parameters"] == init_meta["pruning"]["parameters"]["after"]
    assert main(["eval", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(report["test"]["accuracy"])


def test_prune_refuses_before_any_work(trained, tmp_path, capsys):
    (tmp_path / "taken-init").mkdir()
    assert main(["prune", str(trained), "--out", str(tmp_path / "taken")]) == 2
    assert "taken-init exists already" in capsys.readouterr().err
    assert main(["prune", str(trained), "--out", str(tmp_path / "x"), "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err
    assert main(["prune", str(trained), "--out", str(tmp_path / "x"), "--amount", "1.5"]) == 2
    assert "--amount" in capsys.readouterr().err
    assert main(["prune", str(tmp_path / "nothing")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "x-init").exists()
