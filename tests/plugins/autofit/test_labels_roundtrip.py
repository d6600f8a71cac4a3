"""fit -> predict gives every label back exactly as the user wrote it (issue 24: `+1` came back as a
config error, `1e3`/`True` were renamed), whichever table format carried it.

The property test runs the label path of ``fit`` without training: the table inferred and prepared
(``data.jsonl``), the config built, the data set and the head built from it the way the trainer does,
and each row's target index decoded as ``Predictor.predict`` decodes a prediction. The end-to-end
tests then train for real: ``mmcore fit`` on the issue's CSV, and a table of mixed spellings through
``Predictor`` and ``mmcore predict``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from autofit_helpers import write_csv, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmcore
from mmcore.labels import is_missing, label_key, label_name

# Label spellings users write: signs, exponents, booleans, whitespace, unicode, numbers and names mixed.
LABELS = st.one_of(
    st.integers(-999, 999),
    st.integers(0, 999).map(lambda n: f"+{n}"),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(1, 9), st.integers(-3, 3)),
    st.floats(-100, 100, allow_nan=False, width=32),
    st.booleans(),
    st.sampled_from(["True", "FALSE", " dog", "dog ", "New York", "Ünïcode", "猫", "-0", "007", "1.50", "nan?"]),
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=10),
)


def _distinct(labels: list) -> list:
    """One spelling per class (the rule's classes), each a valid label."""
    out, keys = [], set()
    for label in labels:
        try:
            key = label_key(label)
        except ValueError:
            continue
        if not is_missing(label) and key not in keys:
            keys.add(key)
            out.append(label)
    return out


def _label_path(rows: list[dict], folder: Path, *, as_csv: bool) -> tuple[list, list[str]]:
    """What fit and Predictor do with the target, training left out: (decoded labels, head class names)."""
    from mmcore.engine.datasets import load_datasets
    from mmcore.plugin_manager import get_plugin_manager
    from mmcore_plugins.autofit.choose import build_config
    from mmcore_plugins.autofit.fitting import _write_jsonl, read_rows
    from mmcore_plugins.autofit.infer import infer_columns
    from mmcore_plugins.autofit.prepare import Preparer, decode_prediction, make_plan

    source = write_csv(folder / "t.csv", rows) if as_csv else write_jsonl(folder / "t.jsonl", rows)
    table, base = read_rows(source)
    infos = infer_columns(table, target="y", base=base, overrides={"y": "classification"})
    plan = make_plan(infos, table)
    preparer = Preparer(plan, base, check_files=False)
    prepared = [preparer.table_row(r, i, "train") for i, r in enumerate(table)]
    _write_jsonl(folder / "data.jsonl", prepared)
    config, _ = build_config(plan, infos, n_train=len(prepared), data_path=str(folder / "data.jsonl"),
                             run_dir=str(folder / "run"), preset="fast", available={})
    config["data"].update(val_fraction=0.0, test_fraction=0.0)
    manager = get_plugin_manager()
    train = load_datasets(config, manager, splits=("train",))["train"]
    head_spec = config["model"]["head"]
    factory = manager.registry.get("head", head_spec["name"]).factory
    options = factory.options_from_data({k: v for k, v in head_spec.items() if k != "name"}, train.metadata)
    from mmcore.options import factory_parameters

    reserved = {"input_dims": {s: 4 for s in config["model"]["encoders"]}} if "input_dims" in factory_parameters(factory)[0] else {}
    head = factory(input_dim=4, **reserved, **options)
    indices = head.collate_targets([s["target"] for s in train.samples]).tolist()
    return [decode_prediction(plan, i) for i in indices], [head.classes[i] for i in indices]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(LABELS, min_size=2, max_size=6), st.booleans())
def test_every_spelling_comes_back_exactly_as_written(tmp_path_factory, labels, as_csv):
    labels = _distinct([str(label) if as_csv else label for label in labels])  # a CSV holds text
    if len(labels) < 2:
        return
    rows = [{"x": float(k), "y": label} for k, label in enumerate(labels) for _ in range(3)]
    decoded, names = _label_path(rows, tmp_path_factory.mktemp("labels"), as_csv=as_csv)
    written = [row["y"] for row in rows]
    assert decoded == written  # the same type and spelling: what Predictor.predict returns
    assert [type(v) for v in decoded] == [type(v) for v in written]
    assert names == [label_name(v) for v in written]  # what the head (mmcore predict) prints


def test_fit_on_a_csv_of_plus_and_minus_one(tmp_path, capsys):
    """The reproduction of issue 24: labels +1/-1 in a CSV stopped `mmcore fit` with `model.head.classes:
    lists ['-1', '+1'], but the training split's classes are ['-1', '1']`."""
    from mmcore.cli import main

    rows = [{"x": float(i % 7), "z": float(i % 3), "y": "+1" if i % 2 else "-1"} for i in range(40)]
    table = write_csv(tmp_path / "signs.csv", rows)
    code = main(["fit", str(table), "--target", "y", "--time-limit", "10m", "--max-epochs", "2", "--preset", "fast",
                 "--run-dir", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads((tmp_path / "run" / "autofit.json").read_text())["plan"]["classes"] == ["-1", "+1"]
    predictor = mmcore.Predictor.load(tmp_path / "run")
    assert predictor.classes == ["-1", "+1"]
    assert set(predictor.predict(table)) <= {"-1", "+1"}
    assert main(["predict", str(tmp_path / "run"), "tabular={x: 1, z: 2}"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"] in ("-1", "+1")


@pytest.mark.slow
def test_mixed_spellings_through_a_trained_predictor(tmp_path):
    """A JSON Lines table whose labels mix ints, signed and exponent strings, booleans, padded and
    unicode names: Predictor.classes lists them as written (typed), predictions are among them, and the
    CLI's class names are their spellings."""
    labels = [-1, "+1", "1e3", True, " dog", "猫"]
    rows = [{"x": float(k), "w": float((k * 7 + i) % 5), "y": label} for i in range(12) for k, label in enumerate(labels)]
    table = write_jsonl(tmp_path / "t.jsonl", rows)
    predictor = mmcore.fit(table, target="y", time_limit="10m", max_epochs=2, preset="fast", run_dir=tmp_path / "run", verbose=False,
                           columns={"y": "classification"})
    assert predictor.classes == [-1, "+1", "1e3", True, " dog", "猫"]
    predictions = predictor.predict(table)
    assert all(any(p == v and type(p) is type(v) for v in labels) for p in predictions)
    assert list(predictor.predict_proba(table).columns) == labels
    head = yaml_head(tmp_path / "run")
    assert head["classes"] == ["-1", "+1", "1e3", "True", " dog", "猫"]


def yaml_head(run: Path) -> dict:
    from mmcore.yamlio import load_yaml_file

    return load_yaml_file(run / "config.yaml")["model"]["head"]
