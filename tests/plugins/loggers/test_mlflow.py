"""The ``mlflow`` logger (plugins/loggers/mlflow.py), against a local file store in tmp_path: never a server."""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest
import yaml

from mmcore.cli import main
from mmcore.engine.trainer import Trainer

pytest.importorskip("mlflow")

WINE = {
    "data": {"name": "sklearn_tabular", "dataset": "wine", "missing_rate": 0.2, "seed": 0},
    "model": {
        "encoders": {"first": {"name": "tabular_mlp", "num_features": 6, "dim": 8},
                     "second": {"name": "tabular_mlp", "num_features": 7, "dim": 8}},
        "fusion": {"name": "concat", "dim": 8},
        "head": {"name": "classification", "num_classes": 3},
    },
    "trainer": {"epochs": 2, "batch_size": 32, "lr": 0.01, "progress": False},
}


@pytest.fixture
def config(tmp_path, monkeypatch):
    # Registered first, so whatever the logger sets in os.environ is undone after the test.
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_DISABLE_TELEMETRY"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    out = copy.deepcopy(WINE)
    out["trainer"]["run_dir"] = str(tmp_path / "run")
    out["trainer"]["loggers"] = ["csv", {"name": "mlflow", "tracking_uri": str(tmp_path / "mlruns"), "experiment": "wine"}]
    return out


def _client(tmp_path):
    from mlflow import MlflowClient

    return MlflowClient((tmp_path / "mlruns").as_uri())


def test_a_run_logs_its_config_metrics_report_and_best_checkpoint(config, tmp_path):
    report = Trainer(config).fit()
    client = _client(tmp_path)
    experiment = client.get_experiment_by_name("wine")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.tags["mmcore.run_dir"] == str(tmp_path / "run")
    assert run.data.params["model.fusion.dim"] == "8" and run.data.params["trainer.epochs"] == "2"
    history = client.get_metric_history(run.info.run_id, "val/accuracy")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx([row["val/accuracy"] for row in report["history"]])
    assert run.data.metrics["test/accuracy"] == pytest.approx(report["test"]["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "report.json", "best"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "best")} == {"best/model.json", "best/model.safetensors"}
    logged = json.loads(open(client.download_artifacts(run.info.run_id, "report.json", str(tmp_path))).read())
    assert logged["status"] == "completed" and logged["test"] == pytest.approx(report["test"])


def test_a_child_run_nests_under_its_parent_and_a_failed_run_is_marked_failed(config, tmp_path, monkeypatch):
    from mmcore.engine import NonFiniteLossError

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = _client(tmp_path)
    parent = client.create_run(client.create_experiment("wine"), run_name="study").info.run_id
    config["trainer"]["loggers"][1].update(parent_run_id=parent, run_name="trial-000", log_checkpoint=False)
    config["trainer"]["lr"] = 1e30  # diverges: the run stops on a non-finite loss
    with pytest.raises(NonFiniteLossError):
        Trainer(config).fit()
    [child] = [r for r in client.search_runs([client.get_experiment_by_name("wine").experiment_id])
               if r.info.run_id != parent]
    assert child.data.tags["mlflow.parentRunId"] == parent and child.info.run_name == "trial-000"
    assert child.info.status == "FAILED"
    assert "best" not in {a.path for a in client.list_artifacts(child.info.run_id)}


def test_without_mlflow_installed_the_run_is_refused_before_any_work(config, tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'mmcore[mlflow]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "best").exists()


def test_telemetry_is_off_and_a_plain_path_is_a_file_store(config, tmp_path):
    from mmcore_plugins.loggers.mlflow import client, resolve_tracking_uri

    assert resolve_tracking_uri(None) is None
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    uri = resolve_tracking_uri(str(tmp_path / "store"))
    assert uri == (tmp_path / "store").as_uri()
    client(uri)
    import os

    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true" and os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"
