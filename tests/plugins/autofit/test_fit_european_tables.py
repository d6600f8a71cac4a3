"""``mmcore fit`` on a European CSV (issue items 1-3, 5): a ``;``-separated, Latin-1 table with decimal
commas trains through ``--encoding`` with the delimiter and decimal commas found and said; what was used is
recorded in ``autofit.json`` and the Predictor and ``mmcore predict`` read a new table of that kind the same
way; a class too rare for the validation split gets its warning line. One tiny run (one epoch)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmcore.cli import main


def _european(path: Path, n: int, seed: int, rare: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["id;Gewicht;Größe;Stadt;y"]
    for i in range(n):
        a, b = rng.standard_normal(2)
        y = "hoch" if a + 0.3 * b > 0 else "tief"
        lines.append(f"R{seed}-{i};{a:.3f};{b:.2f};{['Zürich', 'Köln'][i % 2]};{y}".replace(".", ","))
    lines += [f"Rx{i};0,5;1,0;Zürich;selten" for i in range(rare)]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return path


pytestmark = pytest.mark.slow  # a training run (one epoch of a 42-row table)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("euro")
    table = _european(folder / "train.csv", 40, 0, rare=2)
    return folder, table


def test_fit_reads_a_latin1_semicolon_decimal_comma_table_and_predict_reads_the_next_one_alike(run, capsys):
    import mmcore

    folder, table = run
    assert main(["fit", str(table), "--target", "y", "--run-dir", str(folder / "refused")]) == 2
    err = capsys.readouterr().err
    assert "is not valid utf-8-sig" in err and "--encoding cp1252" in err and len(err.strip().splitlines()) == 1
    assert main(["fit", str(table), "--target", "y", "--encoding", "latin-1", "--preset", "fast", "--max-epochs", "1",
                 "--time-limit", "10m", "--run-dir", str(folder / "run")]) == 0
    out = capsys.readouterr().out
    table_lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert " numeric " in table_lines["Gewicht"] and "decimal commas read as numbers" in table_lines["Gewicht"]
    assert " numeric " in table_lines["Größe"], "an umlaut column name read through --encoding"
    assert "table: ';'-separated (found from its first lines" in out
    assert "warning: class 'selten' has 2 rows (2 in train), none in val" in out
    autofit = json.loads((folder / "run" / "autofit.json").read_text(encoding="utf-8"))
    assert len(autofit["split_warnings"]) == 1 and "'selten'" in autofit["split_warnings"][0]
    recorded = autofit["table"]
    assert recorded["sep"] == ";" and recorded["decimal_columns"] == ["Gewicht", "Größe"]
    assert recorded["options"] == {"encoding": "latin-1", "sep": None, "decimal": ","}

    new = _european(folder / "new.csv", 8, 1)
    predictor = mmcore.Predictor.load(folder / "run")
    predictions = predictor.predict(str(new))  # the recorded encoding, sniffed ';' and decimal commas
    assert len(predictions) == 8 and set(predictions) <= {"hoch", "tief", "selten"}
    with pytest.raises(ValueError, match=r"expected a number, got '-?\d+,\d+'.*--decimal ,"):
        predictor.predict(str(new), decimal=".")  # the caller's choice is taken
    out_file = folder / "preds.jsonl"
    assert main(["predict", str(folder / "run"), "--data", str(new), "--encoding", "latin-1", "--out", str(out_file)]) == 0
    assert [json.loads(line)["prediction"] for line in out_file.read_text(encoding="utf-8").splitlines()] == list(predictions)
    capsys.readouterr()
    assert main(["eval", str(folder / "run"), "--data", str(new), "--encoding", "latin-1", "--sep", ";", "--decimal", ","]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert main(["eval", str(folder / "run"), "--data", str(new), "--encoding", "latin-1", "--decimal", "."]) == 2
    assert "--decimal ," in capsys.readouterr().err, "the user's --decimal is taken over the recorded one, and the error says so"


def test_fit_takes_the_users_sep_and_decimal(run, capsys):
    folder, table = run
    code = main(["fit", str(table), "--target", "y", "--encoding", "latin-1", "--sep", ",", "--run-dir",
                 str(folder / "comma")])
    assert code == 2, "read with ',' the ';' table's decimal commas split its rows"
    assert "the delimiter is not ',' (give it: --sep)" in capsys.readouterr().err
    code = main(["fit", str(table), "--target", "y", "--encoding", "latin-1", "--decimal", ".", "--column",
                 "Gewicht=numeric", "--run-dir", str(folder / "point")])
    assert code == 2 and "--decimal ," in capsys.readouterr().err
