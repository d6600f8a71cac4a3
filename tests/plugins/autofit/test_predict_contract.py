"""A trained model's columns are a contract (issue 20.1, 20.2, 20.9), the same in ``Predictor.*`` and on the
command line: a column the model reads is in the table or declared missing (``missing_columns=`` /
``--missing``), else an error naming it and the closest column the table has; users name only their own
columns (fit's ``"weight missing"`` indicator is derived again); a missing, unreadable or placeholder file
cell is a missing modality as fit counted it -- reported, and refused with ``strict``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from autofit_helpers import write_csv, write_jsonl, write_png

import mmcore
from mmcore.cli import main
from mmcore_plugins.autofit.infer import ColumnError
from mmcore_plugins.autofit.predictor import MissingInputsWarning


def _rows(n: int, seed: int, gone: tuple[int, ...] = (), placeholder: tuple[int, ...] = (),
          broken: tuple[int, ...] = ()) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, h = rng.standard_normal(2)
        group = ["north", "south"][i % 2]
        photo = "img/gone.png" if i in gone else "N/A" if i in placeholder else "img/broken.png" if i in broken \
            else f"img/{i % 4}.png"
        out.append({"a": round(float(a), 3), "weight": "" if i % 7 == 0 else round(float(h), 3), "group": group,
                    "photo": photo, "y": "high" if a + 0.5 * h + (0.8 if group == "north" else -0.8) > 0 else "low"})
    return out


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("contract")
    for k in range(4):
        write_png(folder / "img" / f"{k}.png", k)
    (folder / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    write_csv(folder / "train.csv", _rows(60, 0))  # empty weight cells: fit derives 'weight missing'
    predictor = mmcore.fit(str(folder / "train.csv"), target="y", time_limit="10m", max_epochs=2, preset="fast",
                           run_dir=folder / "run", verbose=False)
    assert "weight missing" in json.dumps(predictor.plan.to_json())
    write_csv(folder / "test.csv", _rows(20, 1))
    return predictor, folder


def _renamed(folder: Path, kind: str, rows: list[dict]):
    rows = [{("height" if k == "weight" else k): v for k, v in r.items()} for r in rows]
    if kind == "csv":
        return str(write_csv(folder / "renamed.csv", rows))
    if kind == "jsonl":
        return str(write_jsonl(folder / "renamed.jsonl", rows))
    if kind == "frame":
        import pandas as pd

        return pd.DataFrame(rows)
    return rows


@pytest.mark.parametrize("kind", ["csv", "jsonl", "frame", "records"])
def test_a_renamed_column_is_an_error_in_every_method(fitted, kind):
    predictor, folder = fitted
    table = _renamed(folder, kind, _rows(20, 1))
    for method in (predictor.predict, predictor.predict_proba, predictor.evaluate, predictor.embed):
        with pytest.raises(ColumnError, match=r"no column 'weight' .*did you mean 'height'\?"):
            method(table)


def test_a_table_sharing_no_column_is_an_error(fitted):
    predictor, _ = fitted
    with pytest.raises(ColumnError, match="shares no column with the model's") as info:
        predictor.predict([{"x": 1, "z": "north"}])
    message = str(info.value)
    assert "\n" not in message and "has no columns " in message  # one line, every column named
    for column in ("a", "weight", "group", "photo"):
        assert f"{column!r} (trained on)" in message


def test_declared_missing_columns_are_empty_cells(fitted):
    predictor, folder = fitted
    rows = _rows(20, 1)
    declared = predictor.predict(_renamed(folder, "records", rows), missing_columns=["weight"])
    emptied = predictor.predict([{**r, "weight": ""} for r in rows])
    assert list(declared) == list(emptied) and len(declared) == 20
    assert predictor.evaluate(_renamed(folder, "csv", rows), missing_columns="weight")["rows"] == 20
    with pytest.raises(ColumnError, match="'wieght' is not a column the model reads"):
        predictor.predict(rows, missing_columns=["wieght"])
    with pytest.raises(ColumnError, match="no column 'y' \\(the target\\)"):
        predictor.evaluate([{k: v for k, v in r.items() if k != "y"} for r in rows])


def test_the_command_line_applies_the_same_rule(fitted, capsys):
    predictor, folder = fitted
    run, renamed = str(folder / "run"), _renamed(folder, "csv", _rows(20, 1))
    assert main(["predict", run, "--data", renamed]) == 2
    err = capsys.readouterr().err
    assert "no column 'weight'" in err and "did you mean 'height'?" in err and "--missing" in err
    assert main(["predict", run, "--data", renamed, "--missing", "weight", "--out", str(folder / "p.jsonl")]) == 0
    lines = [json.loads(line) for line in (folder / "p.jsonl").read_text().splitlines()]
    expected = predictor.predict(renamed, missing_columns=["weight"])
    assert [r["prediction"] for r in lines] == list(expected)
    assert main(["predict", run, "--data", renamed, "--missing", "wieght"]) == 2
    assert "'wieght' is not a column the model reads" in capsys.readouterr().err


def test_columns_fit_derived_are_never_asked_for(fitted, capsys):
    """A training table with empty number cells made fit add 'weight missing'; predict and embed on a
    table with the user's own columns (empty cells included) work and agree with the Predictor."""
    predictor, folder = fitted
    run, test = str(folder / "run"), str(folder / "test.csv")
    assert main(["predict", run, "--data", test, "--out", str(folder / "t.jsonl")]) == 0
    lines = [json.loads(line) for line in (folder / "t.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in lines] == list(predictor.predict(test))
    assert main(["embed", run, "--data", test, "--out", str(folder / "t.npz")]) == 0
    assert "weight missing" not in capsys.readouterr().err
    from mmcore_plugins.retrieval.embedding import read_embeddings

    vectors, ids, _ = read_embeddings(folder / "t.npz")
    assert ids == [str(n) for n in range(1, 21)] and vectors["fused"].shape[0] == 20
    assert main(["explain", run, "--data", test, "--json", "--plots", "0", "--out", str(folder / "explained")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 20
    # one record on the command line: the user's columns (or the numbers slot whole), a left-out one missing
    photo = str(folder / "img" / "1.png")
    expected = predictor.predict([{"a": 0.3, "weight": "", "group": "north", "photo": photo}])
    for items in (["a=0.3", "group=north", f"photo={photo}"], ["tabular={a: 0.3, group: north}", f"photo={photo}"]):
        assert main(["predict", run, *items]) == 0
        assert json.loads(capsys.readouterr().out)["prediction"] == expected[0]
    assert main(["predict", run, "a=0.3", "wieght=2"]) == 2
    assert "did you mean 'weight'?" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["gone", "placeholder", "broken"])
def test_a_bad_file_cell_is_a_missing_modality_everywhere_unless_strict(fitted, bad, capsys):
    """fit's rule for its own tables (a missing file, "N/A", a file that cannot be read: a missing
    modality, counted) holds in predict, evaluate, embed and the CLI; strict refuses, naming row and column."""
    predictor, folder = fitted
    rows = _rows(20, 1, **{bad: (3, 11)})
    table = str(write_csv(folder / f"{bad}.csv", rows))
    clean = predictor.predict(str(write_csv(folder / "clean.csv", [{**r, "photo": ""} if i in (3, 11) else r
                                                                    for i, r in enumerate(rows)])))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictions = predictor.predict(table)
        metrics = predictor.evaluate(table)
        assert predictor.embed(table).shape[0] == 20
    assert list(predictions) == list(clean) and metrics["rows"] == 20
    if bad != "placeholder":  # "N/A" is an empty cell, as in fit: nothing to report
        messages = [str(w.message) for w in caught if issubclass(w.category, MissingInputsWarning)]
        assert len(messages) == 3 and all("row 4" in m and "'photo'" in m and "row 12" in m for m in messages)
        with pytest.raises((ColumnError, ValueError), match=r"row 4.*'photo'|'photo'.*row 4"):
            predictor.predict(table, strict=True)
        with pytest.raises((ColumnError, ValueError), match=r"row 4.*'photo'|'photo'.*row 4"):
            predictor.evaluate(table, strict=True)
    out = folder / f"{bad}.jsonl"
    assert main(["predict", str(folder / "run"), "--data", table, "--out", str(out), "--overwrite"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prediction"] for r in lines] == list(clean)
    if bad != "placeholder":
        assert "'photo'" in lines[3]["missing"] and "missing" not in lines[0]
        assert main(["predict", str(folder / "run"), "--data", table, "--out", str(out), "--overwrite", "--strict"]) == 0
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert "error" in lines[3] and "row 4" in lines[3]["error"] and "photo" in lines[3]["error"]
        assert "error" in lines[11] and "prediction" in lines[0]
    capsys.readouterr()
