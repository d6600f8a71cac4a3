"""What a newcomer meets on a small ``fit`` run and the commands after it (issue: the newcomer trial):

1. ``mmcore eval RUN`` / ``explain`` / ``embed`` of a split the run has no rows of (or of a name that is no
   split) is one line naming the splits that would work and ``--data``, exit 2, before the model is built;
2. ``Predictor`` answers one record with one value and many records -- a list, a DataFrame, a pyarrow
   Table, a CSV / JSONL / Parquet file -- with the same collection every time;
3. fit's ``config.yaml`` does not carry fit's own display choice: ``mmcore train`` of it shows progress;
4. a row whose every input cell is empty (its numbers would be imputed) is left out of every table fit
   reads and listed by row number;
5. ``mmcore eval RUN --split NAME`` warns of categories not seen in training as ``--data TABLE`` does, and
   so do ``explain`` and ``embed`` of a split or a table.

One fit (module scope: 30 training rows, a --val table of 6, one epoch); every table is a small real file."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import numpy as np
import pytest
import yaml
from autofit_helpers import write_csv, write_jsonl

import mmcore
from mmcore.cli import main

#: data rows (numbered from 1, as fit numbers them) whose every input cell is empty
EMPTY_TRAIN, EMPTY_VAL = (5, 12), (3,)


def _row(i: int, rng, group: str) -> dict:
    a = float(rng.standard_normal())
    return {"a": round(a, 3), "b": round(float(rng.standard_normal()), 3), "group": group, "y": "hi" if a > 0 else "lo"}


@pytest.fixture(scope="module")
def fit_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract")
    rng = np.random.default_rng(0)
    train = [_row(i, rng, ["north", "south"][i % 2]) for i in range(30)]
    val = [_row(i, rng, "east" if i in (0, 4) else "north") for i in range(6)]  # 'east': never in training
    for table, empty in ((train, EMPTY_TRAIN), (val, EMPTY_VAL)):
        for number in empty:
            table[number - 1].update(a="", b="", group="")  # the target is there; no input is
    write_csv(folder / "train.csv", train)
    write_csv(folder / "val.csv", val)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        predictor = mmcore.fit(str(folder / "train.csv"), target="y", val=str(folder / "val.csv"), time_limit="10m",
                               max_epochs=1, preset="fast", run_dir=folder / "run", verbose=True)
    return predictor, folder, out.getvalue(), err.getvalue()


def _one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# ---------------------------------------------------------------- 4. rows without any input
def test_rows_without_any_input_are_listed_and_not_trained_on(fit_run):
    predictor, folder, out, _ = fit_run
    assert "rows 5, 12: no input at all" in out and "train.csv" in out
    assert "--val" in out and "row 3: no input at all" in out
    plan = json.loads((folder / "run" / "autofit.json").read_text(encoding="utf-8"))
    listed = {where: entry["rows"] for where, entry in plan["rows_without_input"].items()}
    assert sorted(listed.values()) == [list(EMPTY_VAL), list(EMPTY_TRAIN)]
    assert plan["rows"] == {"train": 28, "val": 5, "test": 0}
    rows = [json.loads(line) for line in (folder / "run" / "data.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 33  # (the prepared table: an empty number holds the median, its indicator 1.0)
    assert not any(r["group"] is None and r["a missing"] == 1.0 and r["b missing"] == 1.0 for r in rows)


# ---------------------------------------------------------------- 3. the saved plan and progress
def test_the_saved_config_leaves_progress_to_the_training_that_reads_it(fit_run, tmp_path, capsys):
    _, folder, out, err = fit_run
    saved = yaml.safe_load((folder / "run" / "config.yaml").read_text(encoding="utf-8"))
    assert saved["trainer"].get("progress", True) is True
    # fit's own run drew fit's display only: one line per epoch, no trainer bar
    assert sum(line.startswith("epoch 1/1") for line in out.splitlines()) == 1 and "%|" not in err
    assert main(["train", str(folder / "run" / "config.yaml"), f"trainer.run_dir={tmp_path / 'again'}",
                 "trainer.plots=false", "trainer.tensorboard=false"]) == 0
    captured = capsys.readouterr()
    # without a terminal: the epoch's line on stdout, tqdm's bar (carriage returns) on stderr
    assert any(line.startswith("epoch 1/1  ") and "train/loss" in line for line in captured.out.splitlines())
    assert "epoch 1/1:" in captured.err and "1/1 [" in captured.err


# ---------------------------------------------------------------- 1. a split that is not there
@pytest.fixture
def nothing_built(monkeypatch):
    """Building the model (or reading the run's data, with ``data=True``) fails the test."""
    import mmcore.cli
    import mmcore.engine.checkpoint
    import mmcore.engine.datasets

    def refuse(*args, **kwargs):
        raise AssertionError("the model was built (or the data read) before the split was checked")

    for module, name in ((mmcore.cli, "load_run"), (mmcore.engine.checkpoint, "load_run"),
                         (mmcore.engine.checkpoint, "load_model")):
        monkeypatch.setattr(module, name, refuse)
    return lambda: monkeypatch.setattr(mmcore.engine.datasets, "load_datasets", refuse)


@pytest.mark.parametrize("command, works", [
    (["eval"], "--data TABLE"),
    (["eval", "--split", "test"], "--data TABLE"),
    (["explain", "--split", "test", "--json"], "--data FILE"),
    (["embed", "--out", "unused.npz"], "--data MANIFEST"),
])
def test_an_empty_split_is_one_line_before_the_model_is_built(fit_run, nothing_built, command, works, capsys):
    _, folder, _, _ = fit_run
    nothing_built()  # nor is the data read: the run's record of its rows tells
    assert main([command[0], str(folder / "run"), *command[1:]]) == 2
    err = _one_line(capsys, "test split has no rows", "--split train (28 rows)", "--split val (5 rows)", works)
    assert err.startswith(f"mmcore {command[0]}: ")


@pytest.mark.parametrize("command", [["eval"], ["explain", "--json"], ["eval", "--data", "val.csv"]])
def test_a_name_that_is_no_split_is_one_line_before_the_model_is_built(fit_run, nothing_built, command, capsys):
    _, folder, _, _ = fit_run
    nothing_built()
    extra = [str(folder / c) if c.endswith(".csv") else c for c in command[1:]]
    assert main([command[0], str(folder / "run"), "--split", "holdout", *extra]) == 2
    err = _one_line(capsys, "--split: expected train, val or test, got 'holdout'", "--data")
    assert "--split val (5 rows)" in err or "--data" in command


def test_with_data_options_the_data_is_read_but_the_model_not_built(fit_run, nothing_built, capsys):
    """``--data key=value`` may change the splits: the run's record no longer tells, its data is read --
    still before the model is built."""
    _, folder, _, _ = fit_run
    assert main(["eval", str(folder / "run"), "--data", "validate=exists"]) == 2
    _one_line(capsys, "test split has no rows with --data validate=exists", "--split", "--data TABLE")


# ---------------------------------------------------------------- 5. unseen categories on a split
def test_eval_of_a_split_warns_of_unseen_categories_as_eval_of_a_table_does(fit_run, capsys):
    _, folder, _, _ = fit_run
    assert main(["eval", str(folder / "run"), "--split", "val"]) == 0
    split = capsys.readouterr()
    assert json.loads(split.out)["samples"] == 5
    assert main(["eval", str(folder / "run"), "--data", str(folder / "val.csv")]) == 0
    table = capsys.readouterr()
    warning = "mmcore eval: warning: column 'group': 2 records had values not seen in training (e.g. 'east')"
    assert [line for line in split.err.splitlines() if "not seen" in line] == \
        [line for line in table.err.splitlines() if "not seen" in line]
    assert warning in split.err
    assert main(["eval", str(folder / "run"), "--split", "train"]) == 0
    assert "not seen" not in capsys.readouterr().err


def test_explain_and_embed_warn_of_unseen_categories_in_the_words_of_eval(fit_run, capsys, tmp_path):
    import csv

    _, folder, _, _ = fit_run
    # val.csv less its row with no input (which explain and embed refuse as a bad row)
    with open(folder / "val.csv", newline="", encoding="utf-8") as fh:
        write_csv(tmp_path / "val.csv", [row for row in csv.DictReader(fh) if any(row[c] for c in ("a", "b", "group"))])
    for command in ("explain", "embed"):
        for i, given in enumerate((["--split", "val"], ["--data", str(tmp_path / "val.csv")])):
            out = tmp_path / (f"{command}-{i}" + (".parquet" if command == "embed" else ""))
            assert main([command, str(folder / "run"), *given, "--out", str(out)]) == 0
            err = capsys.readouterr().err
            assert f"mmcore {command}: warning: column 'group': 2 records had values not seen in training (e.g. 'east')" \
                in err, (command, given, err)
    assert main(["embed", str(folder / "run"), "--split", "train", "--out", str(tmp_path / "train.parquet")]) == 0
    assert "not seen" not in capsys.readouterr().err


# ---------------------------------------------------------------- 2. what Predictor returns
def test_one_record_gives_one_answer_many_records_the_same_collection(fit_run, tmp_path):
    import pandas as pd
    import pyarrow as pa

    predictor, _, _, _ = fit_run
    records = [{"a": 0.8, "b": 0.1, "group": "north"}, {"a": -1.2, "b": 0.4, "group": "south"},
               {"a": 0.1, "b": None, "group": "north"}]
    frame = pd.DataFrame(records, index=[7, 3, 9])
    many = {"records": records, "DataFrame": frame, "pyarrow Table": pa.Table.from_pylist(records),
            "CSV": str(write_csv(tmp_path / "new.csv", records)), "JSONL": str(write_jsonl(tmp_path / "new.jsonl", records))}
    frame.to_parquet(tmp_path / "new.parquet")
    many["Parquet"] = str(tmp_path / "new.parquet")
    expected = predictor.predict(records)
    for kind, data in many.items():
        index = [7, 3, 9] if kind == "DataFrame" else [0, 1, 2]
        predictions = predictor.predict(data)
        assert isinstance(predictions, pd.Series) and predictions.name == "y", kind
        assert list(predictions.index) == index and list(predictions) == list(expected), kind
        probabilities = predictor.predict_proba(data)
        assert isinstance(probabilities, pd.DataFrame) and list(probabilities.columns) == predictor.classes, kind
        assert list(probabilities.index) == index, kind
        vectors = predictor.embed(data)
        assert isinstance(vectors, np.ndarray) and vectors.shape[0] == 3, kind
        explained = predictor.explain(data)
        assert isinstance(explained, pd.DataFrame) and list(explained.index) == index, kind
    # one record: its one answer, equal to its row among many
    one = records[0]
    assert predictor.predict(one) == expected[0] and isinstance(predictor.predict(one), str)
    proba = predictor.predict_proba(one)
    assert isinstance(proba, dict) and list(proba) == predictor.classes
    assert np.allclose(list(proba.values()), predictor.predict_proba(records).iloc[0].to_numpy(), atol=1e-6)
    assert predictor.embed(one).shape == predictor.embed(records)[0].shape
    assert np.allclose(predictor.embed(one), predictor.embed(records)[0], atol=1e-5)
    assert predictor.explain(one)["prediction"] == expected[0]
    assert predictor.evaluate({**one, "y": expected[0]})["accuracy"] == 1.0
    with pytest.warns(UserWarning, match="no input at all"):
        assert predictor.predict({"a": None, "b": "", "group": ""}) is None  # one record without input: no prediction
    with pytest.warns(UserWarning, match="no input at all"):  # among many: None too (never pandas' NaN)
        assert list(predictor.predict([one, {"a": None, "b": "", "group": ""}])) == [expected[0], None]
    for bad in (3, [1, 2], "a, b"):
        with pytest.raises((TypeError, FileNotFoundError, ValueError)):
            predictor.predict(bad)
    with pytest.raises(TypeError, match="one record .* a list of them, a pandas DataFrame"):
        predictor.predict(3)


def test_without_pandas_many_records_give_lists(fit_run, monkeypatch):
    predictor, _, _, _ = fit_run
    records = [{"a": 0.8, "b": 0.1, "group": "north"}, {"a": -1.2, "b": 0.4, "group": "south"}]
    expected = list(predictor.predict(records))
    monkeypatch.setitem(sys.modules, "pandas", None)  # `import pandas` raises ImportError
    assert predictor.predict(records) == expected
    probabilities = predictor.predict_proba(records)
    assert isinstance(probabilities, list) and list(probabilities[0]) == predictor.classes
