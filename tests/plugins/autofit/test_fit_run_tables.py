"""A ``fit`` run's tables on the command line (:mod:`mmcore_plugins.autofit.tables`), as a newcomer meets them:
a ``;``-separated cp1252 CSV with decimal commas, two id columns and categories with non-ASCII values ("Müller",
"café", "Zürich"). The next table of that kind is read as fit read the first by every command (the recorded
encoding, delimiter and decimal mark; an option the user gives wins); predict carries the id columns into
each line; a category never seen in training is predicted and counted in one warning line per column.

Shares the session's cp1252 fit run (tests/plugins/conftest.py: one epoch, ~8 s); each test is then cheap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mmcore
from mmcore.cli import main

pytestmark = pytest.mark.slow  # the shared fit run (one epoch of a 40-row table)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_command_reads_the_next_table_with_the_runs_encoding(cp1252_fit_run, cp1252_table, tmp_path, capsys):
    run = str(cp1252_fit_run)
    table = cp1252_table(tmp_path / "neu.csv", 6, 1)  # cp1252 bytes (ü, é, ë), ';' and decimal commas
    assert b"M\xfcller" in table.read_bytes()
    expected = list(mmcore.Predictor.load(run).predict(str(table)))
    assert main(["predict", run, "--data", str(table), "--out", str(tmp_path / "p.jsonl")]) == 0
    assert [r["prediction"] for r in _lines(tmp_path / "p.jsonl")] == expected
    capsys.readouterr()
    assert main(["eval", run, "--data", str(table)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 6
    assert main(["explain", run, "--data", str(table), "--json", "--plots", "0", "--out", str(tmp_path / "x")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 6
    assert main(["embed", run, "--data", str(table), "--out", str(tmp_path / "e.npz")]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("command", ["predict", "eval", "explain"])
def test_an_option_the_user_gives_wins_over_the_recorded_one(cp1252_fit_run, cp1252_table, tmp_path, capsys, command):
    table = cp1252_table(tmp_path / "neu.csv", 4, 2)
    # --encoding utf-8 given explicitly (though cp1252 was recorded): the user's choice is taken, and the error
    # names the file, the line and the encoding to give
    assert main([command, str(cp1252_fit_run), "--data", str(table), "--encoding", "utf-8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "neu.csv: line 2" in err and "not valid utf-8" in err and "--encoding cp1252" in err
    # --decimal . given: the decimal commas are no numbers, said with the hint (predict: in each row's line)
    code = main([command, str(cp1252_fit_run), "--data", str(table), "--decimal", "."])
    captured = capsys.readouterr()
    if command == "predict":
        lines = [json.loads(line) for line in captured.out.splitlines()]
        assert code == 0 and len(lines) == 4 and all("'Betrag'" in r["error"] and "--decimal ," in r["error"] for r in lines)
    else:
        err = captured.err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "'Betrag'" in err and "--decimal ," in err


def test_predict_carries_the_id_columns_into_each_line(cp1252_fit_run, cp1252_table, tmp_path, capsys):
    """fit ignored 'Kundennr' and 'row' as identifiers; each line carries them (the one named like predict's own
    'row' as 'row (id)'), a row with an error too, so predictions join back to the user's rows."""
    autofit = json.loads((cp1252_fit_run / "autofit.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in autofit["columns"] if c["kind"] == "ignore"] == ["Kundennr", "row"]
    table = cp1252_table(tmp_path / "neu.csv", 25, 3, start=500)
    text = table.read_bytes().decode("cp1252").splitlines()
    text[2] = "K0501;601;café;Köln;viel;tief"  # row 2: 'Betrag' is no number (an error line, with its ids)
    table.write_bytes(("\n".join(text) + "\n").encode("cp1252"))
    assert main(["predict", str(cp1252_fit_run), "--data", str(table), "--out", str(tmp_path / "p.jsonl")]) == 0
    lines = _lines(tmp_path / "p.jsonl")
    assert [(r["row"], r["Kundennr"], r["row (id)"]) for r in lines[:3]] == [(1, "K0500", "600"), (2, "K0501", "601"),
                                                                           (3, "K0502", "602")]
    assert list(lines[0])[:3] == ["row", "Kundennr", "row (id)"] and "prediction" in lines[0]
    assert "'Betrag'" in lines[1]["error"] and all("prediction" in r for r in lines[2:])
    capsys.readouterr()
    good = cp1252_table(tmp_path / "gut.csv", 2, 3, start=700)
    assert main(["explain", str(cp1252_fit_run), "--data", str(good), "--json", "--plots", "0", "--out", str(tmp_path / "x")]) == 0
    explained = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["record"], r["Kundennr"], r["row"]) for r in explained] == [(1, "K0700", "800"), (2, "K0701", "801")]


def test_unseen_categories_are_predicted_and_counted_per_column(cp1252_fit_run, cp1252_table, tmp_path, capsys):
    table = cp1252_table(tmp_path / "neu.csv", 5, 4, Kunde="Acme")  # every row a new 'Kunde'; 'Stadt' as trained
    assert main(["predict", str(cp1252_fit_run), "--data", str(table)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 5 and all("prediction" in json.loads(x) for x in captured.out.splitlines())
    assert captured.err.strip() == ("mmcore predict: warning: column 'Kunde': 5 records had values not seen in training "
                                    "(e.g. 'Acme'); they were treated as unknown")
    assert main(["eval", str(cp1252_fit_run), "--data", str(table)]) == 0
    assert "mmcore eval: warning: column 'Kunde': 5 records had values not seen in training" in capsys.readouterr().err
    seen = cp1252_table(tmp_path / "alt.csv", 5, 5)  # only trained categories: nothing to say
    assert main(["predict", str(cp1252_fit_run), "--data", str(seen)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["predict", str(cp1252_fit_run), "Kunde=Acme", "Stadt=Berlin", "Betrag=0.5"]) == 0
    err = capsys.readouterr().err
    assert "column 'Kunde': 1 record had a value not seen in training ('Acme')" in err and "'Berlin'" in err


def test_the_predictor_warns_about_unseen_categories_too(cp1252_fit_run, cp1252_table, tmp_path):
    from mmcore_plugins.autofit.predictor import UnseenCategoriesWarning

    predictor = mmcore.Predictor.load(cp1252_fit_run)
    table = cp1252_table(tmp_path / "neu.csv", 4, 6, Stadt="Berlin")
    for method in (predictor.predict, predictor.evaluate):
        with pytest.warns(UnseenCategoriesWarning, match=r"column 'Stadt': 4 records had values not seen in training "
                                                         r"\(e\.g\. 'Berlin'\); they were treated as unknown"):
            method(str(table))


def test_a_utf8_table_is_read_as_utf8_though_the_run_recorded_cp1252(cp1252_fit_run, cp1252_table, tmp_path, capsys):
    """The next export saved as UTF-8 (with or without a BOM) is not read as cp1252 mojibake ('MÃ¼ller', then an
    unseen category): the same predictions as its cp1252 twin, nothing unseen; an explicit --encoding still wins."""
    twin = cp1252_table(tmp_path / "cp.csv", 6, 7)
    text = twin.read_bytes().decode("cp1252")
    expected = list(mmcore.Predictor.load(cp1252_fit_run).predict(str(twin)))
    for name, data in (("utf8.csv", text.encode("utf-8")), ("bom.csv", b"\xef\xbb\xbf" + text.encode("utf-8"))):
        (tmp_path / name).write_bytes(data)
        assert list(mmcore.Predictor.load(cp1252_fit_run).predict(str(tmp_path / name))) == expected
        assert main(["predict", str(cp1252_fit_run), "--data", str(tmp_path / name)]) == 0
        captured = capsys.readouterr()
        assert [json.loads(line)["prediction"] for line in captured.out.splitlines()] == expected
        assert "warning" not in captured.err
    assert main(["predict", str(cp1252_fit_run), "--data", str(tmp_path / "utf8.csv"), "--encoding", "cp1252"]) == 0
    assert "column 'Kunde'" in capsys.readouterr().err, "told cp1252, the UTF-8 bytes are mojibake: unseen values"


def test_a_bad_cell_in_a_decimal_comma_column_of_a_small_table_is_that_rows_error(cp1252_fit_run, cp1252_table, tmp_path,
                                                                                 capsys):
    """fit read 'Betrag' with decimal commas: a new 3-row table whose one 'Betrag' cell is no number reads that
    column so all the same (its other cells are numbers), so the bad cell is its row's error -- not every row's
    "expected a number, got '0,5'" because two commas in three cells fell under the detection's share."""
    table = cp1252_table(tmp_path / "klein.csv", 3, 8)
    text = table.read_bytes().decode("cp1252").splitlines()
    cells = text[2].split(";")
    cells[4] = "viel"
    text[2] = ";".join(cells)
    table.write_bytes(("\n".join(text) + "\n").encode("cp1252"))
    assert main(["predict", str(cp1252_fit_run), "--data", str(table)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "prediction" in lines[0] and "prediction" in lines[2]
    assert "column 'Betrag': expected a number, got 'viel'" in lines[1]["error"]


def test_decimal_commas_of_a_dataframe_or_records_read_as_the_runs_table(cp1252_fit_run, cp1252_table, tmp_path):
    """fit read 'Betrag' with decimal commas: a DataFrame's or records' string cells ("0,314") are read so too --
    by default (the run's recorded mark) and under decimal=',' -- as a file's are; decimal='.' refuses them."""
    pd = pytest.importorskip("pandas")
    table = cp1252_table(tmp_path / "neu.csv", 5, 4)
    frame = pd.read_csv(table, sep=";", encoding="cp1252", dtype=str)  # 'Betrag' cells as written: '0,314'
    assert frame["Betrag"].str.contains(",").any()
    predictor = mmcore.Predictor.load(cp1252_fit_run)
    expected = list(predictor.predict(str(table)))
    assert list(predictor.predict(frame, decimal=",")) == expected
    assert list(predictor.predict(frame)) == expected
    assert list(predictor.predict(frame.to_dict("records"), decimal=",")) == expected
    with pytest.raises(ValueError, match="decimal comma"):
        predictor.predict(frame, decimal=".")


def test_a_row_with_no_input_at_all_gets_no_prediction_on_every_surface(cp1252_fit_run, tmp_path, capsys):
    """docs/data.md: "A row with no input at all gets no prediction (None / NaN)" -- decided from the user's cells,
    although the table slot's prepared row (a missing number: its training median) looks present."""
    table = tmp_path / "leer.csv"
    table.write_bytes("Kundennr;row;Kunde;Stadt;Betrag;y\nK1;1;;;;\nK2;2;Müller;Köln;0,5;\n".encode("cp1252"))
    predictor = mmcore.Predictor.load(cp1252_fit_run)
    with pytest.warns(UserWarning, match="no input at all"):
        file_answer = list(predictor.predict(str(table)))
    assert file_answer[0] is None and file_answer[1] is not None  # (never NaN: pandas would read None so)
    with pytest.warns(UserWarning, match="no input at all"):
        assert list(predictor.predict([{"Kunde": None, "Stadt": "", "Betrag": "N/A"}])) == [None]
    with pytest.warns(UserWarning, match="no input at all"):
        assert predictor.predict({"Kunde": None, "Stadt": "", "Betrag": "N/A"}) is None
    with pytest.raises(ValueError, match="no input"):
        predictor.predict([{"Kunde": None, "Stadt": None, "Betrag": None}], strict=True)
    capsys.readouterr()
    assert main(["predict", str(cp1252_fit_run), "--data", str(table)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["prediction"] is None and "no input in this row" in lines[0]["missing"] and "probabilities" not in lines[0]
    assert lines[1]["prediction"] == file_answer[1] and "missing" not in lines[1]


def test_a_run_trained_from_the_fit_runs_config_reads_tables_and_carries_ids_as_the_fit_run(cp1252_fit_run, cp1252_table,
                                                                                              tmp_path, capsys):
    """`mmcore train RUN/config.yaml trainer.run_dir=...` (as fit's output suggests): the new run keeps how fit read
    its table (cp1252, ';', decimal commas) and which columns are ids -- predict and explain treat it as the fit run."""
    again = tmp_path / "fit-again"
    assert main(["train", str(cp1252_fit_run / "config.yaml"), f"trainer.run_dir={again}", "trainer.epochs=1",
                 "trainer.plots=false", "trainer.tensorboard=false", "trainer.progress=false"]) == 0
    recorded = json.loads((cp1252_fit_run / "autofit.json").read_text(encoding="utf-8"))
    copied = json.loads((again / "autofit.json").read_text(encoding="utf-8"))
    assert copied["table"] == recorded["table"] and copied["columns"] == recorded["columns"]
    table = cp1252_table(tmp_path / "neu.csv", 3, 6, start=900)  # cp1252 bytes, ';', decimal commas; no options given
    capsys.readouterr()
    assert main(["predict", str(again), "--data", str(table), "--out", str(tmp_path / "p.jsonl")]) == 0
    lines = _lines(tmp_path / "p.jsonl")
    assert [(r["row"], r["Kundennr"], r["row (id)"]) for r in lines] == [(1, "K0900", "1000"), (2, "K0901", "1001"),
                                                                         (3, "K0902", "1002")]
    assert all("prediction" in r for r in lines)
    assert main(["explain", str(again), "--data", str(table), "--json", "--plots", "0", "--out", str(tmp_path / "x")]) == 0
    assert [r["Kundennr"] for r in (json.loads(x) for x in capsys.readouterr().out.splitlines())] == ["K0900", "K0901", "K0902"]
