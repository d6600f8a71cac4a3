"""The minimal engine: config validation, a real training run, its artefacts, reloading, hooks."""

import json
import types

import pytest
import torch

import mmcore
from mmcore.cli import main
from mmcore.engine.checkpoint import load_model
from mmcore.engine.config import apply_overrides, load_config
from mmcore.engine.trainer import Trainer

CONFIG = "configs/tabular.yaml"


def small_config(tmp_path, **trainer):
    config = load_config(CONFIG, [f"trainer.run_dir={tmp_path / 'run'}", "trainer.epochs=3", "trainer.progress=false"])
    config["trainer"].update(trainer)
    return config


def test_training_writes_artefacts_and_the_checkpoint_reloads(tmp_path):
    report = Trainer(small_config(tmp_path)).fit()
    run = tmp_path / "run"
    assert report["test"]["accuracy"] > 0.85
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("epoch,")
    assert json.loads((run / "report.json").read_text())["best_epoch"] == report["best_epoch"]
    model, meta = load_model(run / "best")
    dataset = mmcore.get_registry().get("dataset", "sklearn_tabular").factory(split="test", dataset="breast_cancer", missing_rate=0.15)
    batch = model.collate(dataset.samples)
    model.eval()
    with torch.no_grad():
        accuracy = (model(batch["inputs"]).predictions == batch["targets"]).float().mean().item()
    assert accuracy == pytest.approx(report["test"]["accuracy"], abs=1e-6)
    assert meta["processors"]["mean"]["std"] != [1.0] * 10, "fitted standardisation is saved with the model"


def test_lifecycle_hooks_are_called(tmp_path):
    calls = []
    plugin = types.SimpleNamespace(
        mmcore_train_start=mmcore.hookimpl(lambda config: calls.append("start")),
        mmcore_epoch_end=mmcore.hookimpl(lambda epoch, metrics: calls.append(("epoch", epoch, "val/accuracy" in metrics))),
        mmcore_train_end=mmcore.hookimpl(lambda report: calls.append("end")),
    )
    with mmcore.register_plugin(plugin, name="observer"):
        Trainer(small_config(tmp_path, epochs=2)).fit()
    assert calls == ["start", ("epoch", 1, True), ("epoch", 2, True), "end"]


def test_cli_reports_every_config_problem_with_paths_and_exit_code_2(capsys):
    code = main(["train", CONFIG, "model.fusion.dimm=3", "trainer.epochz=2", "data.dataset=iris", "trainer.lr=fast"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "model.fusion.dimm: unknown option of fusion 'concat'; did you mean 'dim'?" in err
    assert "trainer.epochz: unknown trainer option; did you mean 'epochs'?" in err
    assert "data.dataset: option of dataset 'sklearn_tabular' expects one of 'wine', 'breast_cancer', got str 'iris'" in err
    assert "trainer.lr: trainer option expects float, got str 'fast'" in err
    assert main(["train", "no/such/config.yaml"]) == 2


def test_overrides_parse_values_as_yaml():
    config = apply_overrides({"trainer": {"epochs": 1}}, ["trainer.epochs=5", "model.fusion.name=mean", "trainer.grad_clip=null"])
    assert config == {"trainer": {"epochs": 5, "grad_clip": None}, "model": {"fusion": {"name": "mean"}}}


def test_eval_and_predict_commands_use_the_best_checkpoint(tmp_path, capsys):
    report = Trainer(small_config(tmp_path)).fit()
    run = str(tmp_path / "run")
    assert main(["eval", run]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(report["test"]["accuracy"], abs=1e-6)
    assert main(["eval", run, "--split", "val", "--data", "missing_rate=0.5"]) == 0
    assert json.loads(capsys.readouterr().out)["split"] == "val"
    row = ",".join(["1.0"] * 10)
    assert main(["predict", run, f"mean=[{row}]", f"worst=[{row}]"]) == 0
    prediction = json.loads(capsys.readouterr().out)["prediction"]
    assert prediction in (0, 1)
    assert main(["predict", run, "mean=not-a-row"]) == 2
    assert "a tabular row must be a sequence of 10 numbers" in capsys.readouterr().err
    assert main(["predict", run, "nope=1"]) == 2
    assert "unknown modality slot(s) ['nope']" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2


def test_modality_dropout_removes_modalities_but_never_all_and_repeats_exactly():
    from mmcore.engine.trainer import ModalityDropout

    samples = [{"inputs": {"a": 1, "b": 2, "c": None}, "target": 0}] * 400
    dropout = ModalityDropout(lambda batch: batch, 0.4, seed=1)
    batch = dropout(samples)
    kept = [[s for s, raw in sample["inputs"].items() if raw is not None] for sample in batch]
    assert all(k for k in kept), "every sample keeps at least one modality"
    assert all(sample["inputs"]["c"] is None for sample in batch)
    rate = sum(2 - len(k) for k in kept) / (2 * len(kept))
    assert 0.3 < rate < 0.45
    assert ModalityDropout(lambda b: b, 0.4, seed=1)(samples) == batch
    with pytest.raises(ValueError, match=r"modality_dropout must be in \[0, 1\), got 1.5"):
        ModalityDropout(lambda b: b, 1.5, seed=0)
