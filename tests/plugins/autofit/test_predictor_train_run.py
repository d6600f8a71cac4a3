"""``mmcore.Predictor.load`` on a run of ``mmcore train`` (no autofit.json): rows are ``{slot: raw}``,
predictions and probabilities by class name, evaluation against ``target``, the same answers as
``mmcore predict``'s forward pass -- one row at a time without any data set or loader."""

from __future__ import annotations

import pytest
import yaml

import mmcore
from mmcore.cli import load_run, main
from mmcore.engine.evaluation import predict_output
from mmcore_plugins.autofit.infer import ColumnError


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train_run")
    lines = ["note,age,label,split"]
    for i in range(30):
        label = "cat" if i % 2 else "dog"
        lines.append(f"{'meow purr' if label == 'cat' else 'woof bark'},{20 + i % 7},{label},{['train', 'train', 'val', 'test', 'train'][i % 5]}")
    (folder / "m.csv").write_text("\n".join(lines) + "\n")
    config = {"data": {"name": "manifest", "path": str(folder / "m.csv"), "target": "label", "split_column": "split",
                       "columns": {"note": "note", "profile": {"numeric": ["age"]}}},
              "model": {"encoders": {"note": {"name": "text_transformer", "dim": 16, "heads": 2, "layers": 1, "max_length": 16},
                                     "profile": {"name": "tabular_mlp", "num_features": 1, "columns": ["age"], "dim": 8}},
                        "fusion": {"name": "concat", "dim": 16}, "head": {"name": "classification"}},
              "trainer": {"epochs": 2, "batch_size": 8, "lr": 0.01, "progress": False, "plots": False, "tensorboard": False,
                          "run_dir": str(folder / "run")}}
    (folder / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(folder / "c.yaml")]) == 0
    return folder / "run"


def test_a_train_run_loads_and_predicts_slot_rows(train_run):
    predictor = mmcore.Predictor.load(train_run)
    assert "mmcore train run" in repr(predictor) and predictor.classes == ["cat", "dog"]
    rows = [{"note": "meow purr", "profile": {"age": 22}}, {"note": "woof bark"}, {"profile": [25.0]}]
    predictions = predictor.predict(rows)
    model, _ = load_run(train_run, mmcore.get_plugin_manager())
    expected = predict_output(model, [{k: v for k, v in r.items()} for r in rows])
    assert list(predictions) == model.head.format_predictions(expected)
    probabilities = predictor.predict_proba(rows)
    assert list(probabilities.columns) == ["cat", "dog"]
    assert abs(probabilities.to_numpy() - expected.extras["probabilities"].numpy()).max() < 1e-6
    scores = predictor.evaluate([{**r, "target": label} for r, label in zip(rows, ["cat", "dog", "dog"], strict=True)])
    assert scores["rows"] == 3 and 0.0 <= scores["accuracy"] <= 1.0


def test_a_train_runs_rows_are_checked_by_slot(train_run):
    predictor = mmcore.Predictor.load(train_run)
    with pytest.raises(ColumnError, match=r"row 1: \['image'\] are not slots of this model"):
        predictor.predict([{"image": "x.png"}])
    with pytest.raises(ColumnError, match="row 2: needs at least one of the slots"):
        predictor.predict([{"note": "meow"}, {"note": None}])
    with pytest.raises(ColumnError, match=r"evaluate: rows \[1\] have no 'target' value"):
        predictor.evaluate([{"note": "meow"}])
