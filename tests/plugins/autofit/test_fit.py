"""End to end on tiny tables: fit -> Predictor (predict, predict_proba, evaluate, embed, save/load),
the written config reproducing the run, each target kind, mmcore.fit through the entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from autofit_helpers import tabular_rows, write_csv, write_jsonl, write_png

import mmcore


def _fit(tmp_path: Path, task: str = "classification", time_limit: str = "10m", **kwargs):
    kwargs.setdefault("max_epochs", 2)  # the epoch count must not depend on the machine's speed
    rows = tabular_rows(60, seed=0, task=task)
    test_rows = tabular_rows(20, seed=1, task=task)
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    test = write_jsonl(tmp_path / "test.jsonl", test_rows)
    predictor = mmcore.fit(train, target="y", test=test, time_limit=time_limit, preset="fast", run_dir=tmp_path / "run",
                           verbose=False, **kwargs)
    return predictor, test, test_rows


def test_fit_a_table_and_use_the_predictor(tmp_path: Path):
    predictor, test, test_rows = _fit(tmp_path)
    assert isinstance(predictor, mmcore.Predictor)
    run = tmp_path / "run"
    autofit = json.loads((run / "autofit.json").read_text())
    kinds = {c["name"]: c["kind"] for c in autofit["columns"]}
    assert kinds == {"id": "ignore", "a": "numeric", "b": "numeric", "group": "categorical", "y": "classification"}
    assert autofit["plan"]["indicators"] == {"b": "b missing"}  # b is empty on every 10th row
    predictions = predictor.predict(test)
    assert len(predictions) == 20 and set(predictions) <= {"high", "low"}
    probabilities = predictor.predict_proba(test)
    assert list(probabilities.columns) == ["high", "low"]
    np.testing.assert_allclose(probabilities.to_numpy().sum(1), 1.0, rtol=1e-5)
    assert list(probabilities.idxmax(axis=1)) == list(predictions)
    metrics = predictor.evaluate(test)
    assert metrics["rows"] == 20
    truth = [r["y"] for r in test_rows]
    assert metrics["accuracy"] == pytest.approx(np.mean([p == t for p, t in zip(predictions, truth, strict=True)]))
    assert metrics["accuracy"] == pytest.approx(predictor.summary()["test"]["accuracy"])
    embeddings = predictor.embed(test)
    assert embeddings.shape[0] == 20 and embeddings.dtype == np.float32
    # rows as dicts, a missing number among them: the training median fills it -- an empty cell, or a
    # column declared missing (a column simply absent is an error naming it: issue 20.1)
    assert list(predictor.predict([{"a": 0.1, "b": None, "group": "north"}])) == \
        list(predictor.predict([{"a": 0.1, "group": "north"}], missing_columns=["b"]))
    saved = predictor.save(tmp_path / "saved")
    again = mmcore.Predictor.load(saved)
    assert again.predict(test).equals(predictions)
    np.testing.assert_allclose(again.embed(test), embeddings, rtol=1e-5, atol=1e-6)
    with pytest.raises(FileExistsError):
        predictor.save(saved)


def test_written_config_reproduces_the_run(tmp_path: Path, manager):
    """`mmcore train RUN/config.yaml` (here with another run_dir) gives the same metrics."""
    from mmcore.engine.config import load_config
    from mmcore.engine.trainer import Trainer

    # A limit the tiny table cannot reach: a run stopped by the time limit would not be the config's
    # full schedule (fit_summary.json says so when that happens).
    predictor, _, _ = _fit(tmp_path, time_limit="5m")
    run = tmp_path / "run"
    assert predictor.summary()["stopped_by_time_limit_after_epoch"] is None
    first = json.loads((run / "report.json").read_text())
    config = load_config(run / "config.yaml", [f"trainer.run_dir={tmp_path / 'again'}"])
    assert config["trainer"]["epochs"] == first["epochs_run"] or first["status"] == "early_stopping"
    report = Trainer(config, manager=manager).fit()
    assert report["best_epoch"] == first["best_epoch"]
    for key, value in first["test"].items():
        assert report["test"][key] == pytest.approx(value, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("task", ["regression", "multilabel"])
def test_other_target_kinds(tmp_path: Path, task: str):
    predictor, test, test_rows = _fit(tmp_path, task=task)
    assert predictor.plan.task == task
    predictions = predictor.predict(test)
    metrics = predictor.evaluate(test)
    if task == "regression":
        assert all(isinstance(p, float) for p in predictions)
        assert {"mse", "mae", "r2"} <= set(metrics)
        with pytest.raises(ValueError, match="regression"):
            predictor.predict_proba(test)
    else:
        assert all(isinstance(p, list) and set(p) <= {"pos_a", "pos_b", "north"} for p in predictions)
        assert list(predictor.predict_proba(test).columns) == ["north", "pos_a", "pos_b"]
        assert "accuracy" in metrics


def test_val_split_is_carved_when_none_is_given_and_overrides_apply(tmp_path: Path):
    rows = tabular_rows(60, seed=0)
    for i, row in enumerate(rows):
        row["group"] = str(i % 2)  # numbers...
    table = write_csv(tmp_path / "t.csv", rows)
    predictor = mmcore.fit(table, target="y", columns={"group": "categorical"}, time_limit="10m", max_epochs=2, preset="fast",
                           run_dir=tmp_path / "run", verbose=False)
    autofit = json.loads((tmp_path / "run" / "autofit.json").read_text())
    assert autofit["rows"] == {"train": 51, "val": 9, "test": 0} and autofit["val_source"].startswith("carved")
    assert {c["name"]: c["kind"] for c in autofit["columns"]}["group"] == "categorical"
    assert predictor.config["model"]["encoders"]["tabular"]["categorical"] == ["group"]


def test_image_table_end_to_end(tmp_path: Path, capsys):
    """Images + a number through the command line; the summary names the cached slots."""
    from mmcore.cli import main

    rows = []
    for i in range(24):
        write_png(tmp_path / "img" / f"{i}.png", i)
        rows.append({"photo": f"img/{i}.png", "n": i % 5, "y": "odd" if i % 2 else "even"})
    table = write_csv(tmp_path / "t.csv", rows)
    code = main(["fit", str(table), "--target", "y", "--time-limit", "10m", "--max-epochs", "2", "--preset", "fast",
                 "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0
    assert "photo" in out and "image_cnn" in out and "reproduce: mmcore train" in out
    assert f"predict:   mmcore predict {tmp_path / 'run'} --data TABLE" in out and "deploy:    mmcore export" in out
    export = Path("exports") / "run-onnx-int8"  # serve serves the export just made, not the eager run
    assert f"--int8 --out {export}   then   mmcore serve {export}" in out
    # the ensemble's head (joint_weight 0) does not use the fusion: the hint to edit the config says so
    assert "another fusion counts only with model.head.joint_weight above 0" in out
    summary = json.loads((tmp_path / "run" / "fit_summary.json").read_text())
    assert summary["cached_slots"] == {"tabular": "processed inputs"}


def test_the_summary_reports_every_phase_planned_and_actual_the_load_and_the_threads(tmp_path: Path):
    _fit(tmp_path)
    summary = json.loads((tmp_path / "run" / "fit_summary.json").read_text())
    phases = summary["time"]["phases"]
    assert [p["phase"] for p in phases] == ["read + infer", "prepare", "probe", "setup + features", "training", "test", "saving"]
    planned = {p["phase"]: p["planned_s"] for p in phases}
    assert all(planned[name] is not None and planned[name] >= 0 for name in ("setup + features", "training", "test", "saving"))
    assert all(p["actual_s"] >= 0 for p in phases) and summary["time"]["limit_s"] == 600.0
    assert set(summary["time"]["load_average_1min"]) == {"start", "training", "end"}
    assert summary["threads"]["intra_op"] >= 1 and summary["threads"]["why"]
    assert summary["epochs_planned"] == 2 and summary["candidates"] == [] and summary["feature_cache_bytes"] == 0
    autofit = json.loads((tmp_path / "run" / "autofit.json").read_text())
    assert autofit["schedule"]["epochs"] == 2 and autofit["costs"]["warm_step"] > 0
