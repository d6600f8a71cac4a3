"""Every command that takes a table or a record for a ``fit`` run reads it as the Predictor does (issue 20,
items 1, 2 and 9): users name only their own columns (fit's ``"weight missing"`` indicator and a text-file
column's contents are derived again), a column the model reads is present or declared ``--missing`` (else
one line naming it and the closest match, exit 2), and a missing / placeholder / unreadable file is a
missing cell, counted (``--strict``: an error naming row and column).

One small fit run (module scope) whose training table had empty number cells and a text-file column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from autofit_helpers import write_csv

import mmcore
from mmcore.cli import main

WORDS = {"high": ["sunny", "bright", "warm"], "low": ["rainy", "dark", "cold"]}


def _rows(folder: Path, n: int, seed: int, gone: tuple[int, ...] = (), placeholder: tuple[int, ...] = ()) -> list[dict]:
    rng = np.random.default_rng(seed)
    (folder / "notes").mkdir(exist_ok=True)
    out = []
    for i in range(n):
        a, h = rng.standard_normal(2)
        y = "high" if a + 0.5 * h > 0 else "low"
        note = folder / "notes" / f"{seed}_{i}.txt"
        note.write_text(" ".join(rng.choice(WORDS[y], size=3)) + f" day {i}", encoding="utf-8")
        cell = "notes/missing.txt" if i in gone else "N/A" if i in placeholder else f"notes/{note.name}"
        out.append({"a": round(float(a), 3), "weight": "" if i % 5 == 0 else round(float(h), 3),
                    "group": ["north", "south"][i % 2], "note": cell, "y": y})
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fitrun")
    write_csv(folder / "train.csv", _rows(folder, 40, 0))
    predictor = mmcore.fit(str(folder / "train.csv"), target="y", time_limit="10m", max_epochs=1, preset="fast",
                           run_dir=folder / "run", verbose=False)
    plan = json.dumps(predictor.plan.to_json())
    assert "weight missing" in plan and predictor.plan.text_files == ["note"]
    write_csv(folder / "test.csv", _rows(folder, 12, 1))
    return predictor, folder


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_eval_on_a_table_reads_it_as_the_predictor_does(run, capsys):
    predictor, folder = run
    test = str(folder / "test.csv")
    assert main(["eval", str(folder / "run"), "--data", test]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = predictor.evaluate(test)
    assert result["rows"] == expected["rows"] == 12 and result["rows_left_out"] == 0
    assert result["accuracy"] == pytest.approx(expected["accuracy"]) and result["missing_cells"] == 0
    # a data option naming a table on a fit run is that table, read the same way
    assert main(["eval", str(folder / "run"), "--data", f"test_path={test}"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(expected["accuracy"])


def test_eval_counts_missing_files_and_strict_refuses_them(run, capsys):
    predictor, folder = run
    table = str(write_csv(folder / "holes.csv", _rows(folder, 12, 2, gone=(3,), placeholder=(5,))))
    assert main(["eval", str(folder / "run"), "--data", table]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["rows"] == 12 and result["missing_cells"] == 1  # 'N/A' is an empty cell, as in fit
    assert "row 4" in captured.err and "'note'" in captured.err
    assert result["accuracy"] == pytest.approx(predictor.evaluate(table)["accuracy"])
    assert main(["eval", str(folder / "run"), "--data", table, "--strict"]) == 2
    _one_line_error(capsys, "row 4", "'note'", "missing.txt")


@pytest.mark.parametrize("command", ["predict", "eval", "embed", "explain"])
def test_a_renamed_column_is_one_line_naming_it_in_every_command(run, command, capsys):
    predictor, folder = run
    rows = [{("height" if k == "weight" else k): v for k, v in r.items()} for r in _rows(folder, 6, 3)]
    renamed = str(write_csv(folder / "renamed.csv", rows))
    out = {"embed": ["--out", str(folder / "embed.out.npz")],
           "explain": ["--json", "--plots", "0", "--out", str(folder / "explain.out")]}.get(command, [])
    assert main([command, str(folder / "run"), "--data", renamed, *out]) == 2
    _one_line_error(capsys, "no column 'weight'", "did you mean 'height'?", "--missing")
    assert main([command, str(folder / "run"), "--data", renamed, "--missing", "weight", *out]) == 0
    capsys.readouterr()


def test_several_absent_columns_are_still_one_line(run, capsys):
    _, folder = run
    table = str(write_csv(folder / "bare.csv", [{"x": 1, "y": "high"}]))
    assert main(["predict", str(folder / "run"), "--data", table]) == 2
    _one_line_error(capsys, "'a'", "'weight'", "'group'", "'note'", "shares no column")


def test_predict_embed_explain_on_the_users_own_columns(run, capsys):
    predictor, folder = run
    test, run_dir = str(folder / "test.csv"), str(folder / "run")
    assert main(["predict", run_dir, "--data", test, "--out", str(folder / "p.jsonl")]) == 0
    lines = [json.loads(line) for line in (folder / "p.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in lines] == list(predictor.predict(test))
    assert main(["embed", run_dir, "--data", test, "--out", str(folder / "e.npz"), "--index", str(folder / "g.faiss")]) == 0
    capsys.readouterr()
    assert main(["explain", run_dir, "--data", test, "--json", "--plots", "0", "--out", str(folder / "x")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 12
    # one record on the command line: a text-file cell is read, as fit read it; a left-out column is missing
    note = folder / "notes" / "1_0.txt"
    expected = predictor.predict([{"a": 0.3, "weight": "", "group": "north", "note": str(note)}])[0]
    assert main(["predict", run_dir, "a=0.3", "group=north", f"note={note}"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"] == expected
    assert main(["explain", run_dir, "a=0.3", "group=north", f"note={note}", "--json", "--plots", "0",
                 "--out", str(folder / "x1")]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["prediction"] == expected


def test_search_reads_a_text_file_query_as_fit_read_the_column(run, capsys):
    _, folder = run
    note = folder / "notes" / "1_0.txt"
    index, run_dir = str(folder / "s.faiss"), str(folder / "run")
    assert main(["embed", run_dir, "--data", str(folder / "test.csv"), "--out", str(folder / "s.npz"), "--index", index]) == 0
    capsys.readouterr()
    found = []
    for query in (f"note={note}", note.read_text(encoding="utf-8")):
        assert main(["search", run_dir, "--index", index, "--query", query, "--json", "-k", "3"]) == 0
        found.append(json.loads(capsys.readouterr().out)["neighbours"])
    assert found[0] == found[1] and len(found[0]) == 3


def test_serve_takes_the_users_own_columns_of_a_fit_run(run):
    """`mmcore serve RUN` of a fit run: the page, the metadata and requests name the user's columns (never
    'weight missing'); a number left out is a missing cell, as Predictor reads it; the text slot takes the
    text a text-file cell held."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmcore_plugins.deploy.backends import open_backend
    from mmcore_plugins.deploy.serve import create_app

    predictor, folder = run
    note = folder / "notes" / "1_3.txt"
    text = note.read_text(encoding="utf-8")
    expected = predictor.predict([{"a": 0.3, "weight": "", "group": "north", "note": str(note)},
                                  {"a": -1.2, "weight": 0.5, "group": "south", "note": ""}])
    with TestClient(create_app(open_backend(folder / "run"))) as client:
        slots = {s["name"]: s for s in client.get("/metadata").json()["slots"]}
        assert slots["tabular"]["numeric"] == ["a", "weight"] and slots["tabular"]["categorical"] == ["group"]
        answer = client.post("/predict", json={"records": [{"tabular": {"a": 0.3, "group": "north"}, "note": text},
                                                           {"tabular": {"a": -1.2, "weight": 0.5, "group": "south"}}]})
        assert answer.status_code == 200, answer.text
        assert [r["prediction"] for r in answer.json()["predictions"]] == list(expected)
        form = client.post("/predict", data={"tabular.a": "0.3", "tabular.group": "north", "note": text})
        assert form.status_code == 200, form.text
        assert form.json()["predictions"][0]["prediction"] == expected[0]
        bad = client.post("/predict", json={"records": [{"tabular": {"a": 0.3, "weight missing": 1.0}}]})
        assert bad.status_code == 422 and "weight missing" in bad.text
