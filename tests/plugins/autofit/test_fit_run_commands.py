"""Every command that takes a table or a record for a ``fit`` run reads it as the Predictor does (issue 20,
items 1, 2 and 9): users name only their own columns (fit's ``"weight missing"`` indicator and a text-file
column's contents are derived again), a column the model reads is present or declared ``--missing`` (else
one line naming it and the closest match, exit 2), and a missing / placeholder / unreadable file is a
missing cell, counted (``--strict``: an error naming row and column).

One small fit run (module scope) whose training table had empty number cells and a text-file column; two
columns are named as users name them, with spaces, capitals and punctuation ("Customer Review", a text-file
column fit reads through the slot ``customer_review``; "Unit Price (€)", a number with empty cells): every
surface takes and shows them exactly so."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pytest
from autofit_helpers import write_csv

import mmcore
from mmcore.cli import main
from mmcore_plugins.autofit.infer import ColumnError

WORDS = {"high": ["sunny", "bright", "warm"], "low": ["rainy", "dark", "cold"]}
REVIEW, PRICE = "Customer Review", "Unit Price (€)"


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
                    "group": ["north", "south"][i % 2], REVIEW: cell, PRICE: "" if i % 4 == 1 else round(2 + i % 3, 2),
                    "y": y, "rid": f"R{seed}-{i:04d}"})  # an id column: fit ignores it
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fitrun")
    write_csv(folder / "train.csv", _rows(folder, 40, 0))
    predictor = mmcore.fit(str(folder / "train.csv"), target="y", time_limit="10m", max_epochs=1, preset="fast",
                           run_dir=folder / "run", verbose=False)
    plan = json.dumps(predictor.plan.to_json(), ensure_ascii=False)
    assert "weight missing" in plan and f"{PRICE} missing" in plan and predictor.plan.text_files == [REVIEW]
    assert predictor.plan.slots["customer_review"] == {"kind": "text", "column": REVIEW}
    assert "rid" not in predictor.plan.input_columns, "the id column is ignored"
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
    # the run has no test split (fit kept none): no metrics over zero rows, one line saying what would evaluate
    assert main(["eval", str(folder / "run")]) == 2
    _one_line_error(capsys, "test split has no rows", "--data")
    # without the target column: no advice to declare it missing (it cannot be), what evaluating needs instead
    no_target = str(write_csv(folder / "no_target.csv", [{k: v for k, v in r.items() if k != "y"} for r in _rows(folder, 4, 5)]))
    assert main(["eval", str(folder / "run"), "--data", no_target]) == 2
    err = _one_line_error(capsys, "'y' (the target)", "evaluating needs the true values")
    assert "to predict without it" not in err


def test_eval_counts_missing_files_and_strict_refuses_them(run, capsys):
    predictor, folder = run
    table = str(write_csv(folder / "holes.csv", _rows(folder, 12, 2, gone=(3,), placeholder=(5,))))
    assert main(["eval", str(folder / "run"), "--data", table]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["rows"] == 12 and result["missing_cells"] == 1  # 'N/A' is an empty cell, as in fit
    assert "row 4" in captured.err and f"'{REVIEW}'" in captured.err
    assert result["accuracy"] == pytest.approx(predictor.evaluate(table)["accuracy"])
    assert main(["eval", str(folder / "run"), "--data", table, "--strict"]) == 2
    _one_line_error(capsys, "row 4", f"'{REVIEW}'", "missing.txt")


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
    _one_line_error(capsys, "'a'", "'weight'", "'group'", f"'{REVIEW}'", f"'{PRICE}'", "shares no column")


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
    expected = predictor.predict([{"a": 0.3, "weight": "", "group": "north", REVIEW: str(note), PRICE: 2.5}])[0]
    assert main(["predict", run_dir, "a=0.3", "group=north", f"{REVIEW}={note}", f"{PRICE}=2.5"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["prediction"] == expected
    assert printed["inputs"][REVIEW] == note.read_text(encoding="utf-8") and printed["inputs"][PRICE] == 2.5
    # 'weight' was not given: listed as missing, and the training median the model read in its place is said
    # as such -- not shown among the inputs as if typed
    assert printed["missing"] == ["weight"] and "weight" not in printed["inputs"]
    assert printed["filled"] == {"weight": predictor.plan.fill["weight"]}
    assert set(printed["inputs"]) == {"a", "group", REVIEW, PRICE}
    assert not any(name in json.dumps(printed) for name in ("customer_review", "weight missing", f"{PRICE} missing"))
    # the slot's name is still taken as an alias of its column
    assert main(["predict", run_dir, "a=0.3", "group=north", f"customer_review={note}", f"{PRICE}=2.5"]) == 0
    assert json.loads(capsys.readouterr().out)["prediction"] == expected
    assert main(["explain", run_dir, "a=0.3", "group=north", f"{REVIEW}={note}", f"{PRICE}=2.5", "--json", "--plots", "0",
                 "--out", str(folder / "x1")]) == 0
    explained = json.loads(capsys.readouterr().out.splitlines()[0])
    assert explained["prediction"] == expected and set(explained["shapley"]) == {REVIEW, "tabular"}
    assert explained["present"] == [REVIEW, "tabular"]


def test_a_record_names_the_users_columns_on_the_command_line(run, capsys):
    """`predict` / `explain` / `search` record items: a misspelt column is the did-you-mean error naming the
    user's column exactly (spaces, capitals); a column and its slot alias given different values is refused."""
    predictor, folder = run
    run_dir = str(folder / "run")
    with pytest.raises(ColumnError, match=r"no column 'Customer Review' \(trained on; did you mean 'customer review'\?\)"):
        predictor.predict([{"a": 0.3, "weight": 1, "group": "north", "customer review": "", PRICE: 2}])
    for item, meant in (("customer review=nice", REVIEW), ("Unit Price=2", PRICE), ("CustomerReview=x", REVIEW)):
        assert main(["predict", run_dir, item]) == 2
        _one_line_error(capsys, f"did you mean {meant!r}?")
    assert main(["predict", run_dir, f"{REVIEW}=nice", "customer_review=awful"]) == 2
    _one_line_error(capsys, f"'{REVIEW}'", "'customer_review'", "different values")
    assert main(["predict", run_dir, f"{PRICE}=2", "tabular={'Unit Price (€)': 3}"]) == 2
    _one_line_error(capsys, f"'{PRICE}'", "different values")
    note = folder / "notes" / "1_0.txt"  # (the column's cells are text files)
    assert main(["predict", run_dir, f"{REVIEW}={note}", f"customer_review={note}", "a=1"]) == 0  # the same value: once
    alone = json.loads(capsys.readouterr().out)
    # a whole training row: the target and the id column are ignored (said on stderr), as Predictor and serve ignore them
    assert main(["predict", run_dir, f"{REVIEW}={note}", "a=1", "y=0", "rid=17"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == alone and "ignored 'y', 'rid'" in err
    index = str(folder / "q.faiss")
    assert main(["embed", run_dir, "--data", str(folder / "test.csv"), "--out", str(folder / "q.npz"), "--index", index,
                 "--vector", REVIEW]) == 0  # the user's column names its slot's vector
    assert "vectors of 'customer_review'" in capsys.readouterr().out
    assert main(["search", run_dir, "--index", index, "--query", "customer review=sunny day", "--json"]) == 2
    _one_line_error(capsys, f"did you mean {REVIEW!r}?")
    assert main(["search", run_dir, "--index", index, "--query", f"{REVIEW}={note}", "--json", "-k", "2"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["column"] == REVIEW and len(found["neighbours"]) == 2


def test_search_reads_a_text_file_query_as_fit_read_the_column(run, capsys):
    _, folder = run
    note = folder / "notes" / "1_0.txt"
    index, run_dir = str(folder / "s.faiss"), str(folder / "run")
    assert main(["embed", run_dir, "--data", str(folder / "test.csv"), "--out", str(folder / "s.npz"), "--index", index]) == 0
    capsys.readouterr()
    found = []
    for query in (f"{REVIEW}={note}", note.read_text(encoding="utf-8")):
        assert main(["search", run_dir, "--index", index, "--query", query, "--json", "-k", "3"]) == 0
        found.append(json.loads(capsys.readouterr().out)["neighbours"])
    assert found[0] == found[1] and len(found[0]) == 3


def test_serve_takes_the_users_own_columns_of_a_fit_run(run):
    """`mmcore serve RUN` of a fit run: the page, the metadata, the OpenAPI docs and requests name the user's
    columns exactly as the training table wrote them ("Customer Review", "Unit Price (€)"; never
    'weight missing' or the slot ``customer_review``); JSON records and form fields are the user's row and
    predict Predictor's probabilities on the same records; the slots' names stay accepted as aliases; a
    column given both ways with different values is a 422 naming both; a misspelt one, the closest column."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmcore_plugins.deploy.backends import open_backend
    from mmcore_plugins.deploy.serve import create_app

    predictor, folder = run
    note = folder / "notes" / "1_3.txt"
    text = note.read_text(encoding="utf-8")
    rows = [{"a": 0.3, "weight": "", "group": "north", REVIEW: str(note), PRICE: 2.5},
            {"a": -1.2, "weight": 0.5, "group": "south", REVIEW: "", PRICE: ""}]
    expected, proba = list(predictor.predict(rows)), np.asarray(predictor.predict_proba(rows), dtype=np.float64)
    classes = list(predictor.classes)

    def probabilities(answer):
        assert answer.status_code == 200, answer.text
        return np.array([[r["probabilities"][c] for c in classes] for r in answer.json()["predictions"]])

    with TestClient(create_app(open_backend(folder / "run"))) as client:
        metadata = client.get("/metadata").json()
        assert metadata["columns"] == [REVIEW, "a", "weight", PRICE, "group"]
        slots = {s["name"]: s for s in metadata["slots"]}
        assert slots["customer_review"]["column"] == REVIEW
        assert slots["tabular"]["numeric"] == ["a", "weight", PRICE] and slots["tabular"]["categorical"] == ["group"]
        page = client.get("/").text
        for column in (REVIEW, PRICE, "a", "group"):
            assert f'name="{html.escape(column)}"' in page, column
        assert f"<legend>{REVIEW} " in page and 'name="customer_review"' not in page and "tabular.a" not in page
        docs = json.dumps(client.get("/openapi.json").json(), ensure_ascii=False)
        assert REVIEW in docs and PRICE in docs and "weight missing" not in docs
        user = client.post("/predict", json={"records": [{"a": 0.3, "group": "north", REVIEW: text, PRICE: 2.5},
                                                         {"a": -1.2, "weight": 0.5, "group": "south"}]})
        assert np.allclose(probabilities(user), proba, atol=1e-5, rtol=0)
        assert [r["prediction"] for r in user.json()["predictions"]] == expected
        assert user.json()["predictions"][0]["modalities"] == [REVIEW, "tabular"]
        alias = client.post("/predict", json={"records": [{"tabular": {"a": 0.3, "group": "north", PRICE: 2.5},
                                                           "customer_review": text},
                                                          {"tabular": {"a": -1.2, "weight": 0.5, "group": "south"}}]})
        assert np.allclose(probabilities(alias), proba, atol=1e-5, rtol=0)
        form = client.post("/predict", data={"a": "0.3", "group": "north", REVIEW: text, PRICE: "2.5"})
        assert np.allclose(probabilities(form), proba[:1], atol=1e-5, rtol=0)
        form = client.post("/predict", data={"tabular.a": "0.3", "tabular.group": "north", "customer_review": text,
                                             f"tabular.{PRICE}": "2.5"})
        assert np.allclose(probabilities(form), proba[:1], atol=1e-5, rtol=0)
        for body, named in (({REVIEW: "nice", "customer_review": "awful"}, (f"'{REVIEW}'", "'customer_review'")),
                            ({PRICE: 2.0, "tabular": {PRICE: 3.0}}, (f"'{PRICE}'", f"'tabular.{PRICE}'"))):
            both = client.post("/predict", json={"records": [body]})
            assert both.status_code == 422 and "different values" in both.json()["error"], both.text
            assert all(n in both.json()["error"] for n in named), both.text
        both = client.post("/predict", data={REVIEW: "nice", "customer_review": "awful"})
        assert both.status_code == 422 and REVIEW in both.json()["error"] and "customer_review" in both.json()["error"]
        same = client.post("/predict", json={"records": [{REVIEW: text, "customer_review": text, "a": 0.3}]})
        assert same.status_code == 200, same.text
        for post in (lambda: client.post("/predict", json={"records": [{"customer review": text}]}),
                     lambda: client.post("/predict", data={"Unit price (€)": "2"})):
            wrong = post()
            assert wrong.status_code == 422 and "did you mean" in wrong.json()["error"], wrong.text
            assert f"{REVIEW!r}" in wrong.json()["error"] or f"{PRICE!r}" in wrong.json()["error"]
            assert "customer_review" not in wrong.json()["error"] and "missing'" not in wrong.json()["error"]
        bad = client.post("/predict", json={"records": [{"a": 0.3, PRICE: "cheap"}]})
        assert bad.status_code == 422 and bad.json()["field"] == f"records[0].{PRICE}", bad.text
        bad = client.post("/predict", json={"records": [{"tabular": {"a": 0.3, "weight missing": 1.0}}]})
        assert bad.status_code == 422 and "weight missing" in bad.text
        assert metadata["ignored_columns"] == ["rid", "y"]


def test_serve_takes_a_whole_training_row_and_reads_cells_as_the_table_reader(run):
    """A row of the training CSV posted whole -- its id column and target too, every cell a string as the CSV
    held it -- is predicted as Predictor predicts that row (the columns the model does not read are ignored,
    as Predictor ignores a table's), in JSON and as a form; a number cell is read by the table reader's rule
    ("0.75", " 3 ", "1e-1" are numbers; "", null, "N/A", "inf" are missing cells); a cell that is no number
    is a 422 naming records[i].<column>, what was expected and what came; a key that is no column of the
    training table stays a 422 with the closest column."""
    pytest.importorskip("fastapi")
    import csv

    from fastapi.testclient import TestClient

    from mmcore_plugins.deploy.backends import open_backend
    from mmcore_plugins.deploy.serve import create_app

    predictor, folder = run
    with (folder / "train.csv").open(newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))[:4]
    assert {"rid", "y"} <= set(table[0]) and any(r["weight"] == "" for r in table)
    proba = np.asarray(predictor.predict_proba([{**r, REVIEW: str(folder / r[REVIEW])} for r in table]), dtype=np.float64)
    rows = [{**r, REVIEW: (folder / r[REVIEW]).read_text(encoding="utf-8")} for r in table]  # serve takes the text
    classes = list(predictor.classes)

    def post(**request):
        answer = client.post("/predict", **request)
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"]

    with TestClient(create_app(open_backend(folder / "run"))) as client:
        whole = post(json={"records": rows})
        assert np.allclose([[r["probabilities"][c] for c in classes] for r in whole], proba, atol=1e-5, rtol=0)
        assert [w["rid"] for w in whole] == [r["rid"] for r in rows], "the id column echoed, as predict writes it"
        assert post(json={"records": [{k: v for k, v in r.items() if k not in ("rid", "y")} for r in rows]}) == [
            {k: v for k, v in w.items() if k != "rid"} for w in whole]
        assert post(data=rows[0]) == whole[:1]  # a form of the whole row
        base = {"a": 0.75, "weight": 0.1, PRICE: 3, "group": "north"}
        plain = post(json={"records": [base]})
        assert post(json={"records": [{**base, "a": "0.75", "weight": "1e-1", PRICE: " 3 "}]}) == plain
        assert post(data={**base, "a": " 0.75 ", "weight": "1e-1"}) == plain
        gone = post(json={"records": [{"a": 0.75, PRICE: 3, "group": "north"}]})
        for empty in ("", None, "N/A", "inf", "  "):
            assert post(json={"records": [{**base, "weight": empty}]}) == gone, empty
        for bad, shown in (("abc", "'abc'"), (True, "True"), ("1,5", "'1,5'")):
            refused = client.post("/predict", json={"records": [base, {**base, "weight": bad}]})
            assert refused.status_code == 422 and refused.json()["field"] == "records[1].weight", refused.text
            assert "expected a number" in refused.json()["error"] and shown in refused.json()["error"], refused.text
        refused = client.post("/predict", data={**base, PRICE: "cheap"})
        assert refused.status_code == 422 and refused.json()["field"] == PRICE and "'cheap'" in refused.text
        for request in ({"json": {"records": [{**rows[0], "wieght": 1.0}]}}, {"data": {**rows[0], "ridd": "R1"}}):
            wrong = client.post("/predict", **request)
            assert wrong.status_code == 422 and "not a column of this model" in wrong.json()["error"], wrong.text
        assert "did you mean 'weight'?" in client.post("/predict", json={"records": [{"wieght": 1.0}]}).json()["error"]
        derived = client.post("/predict", json={"records": [{**rows[0], "weight missing": 1.0}]})  # fit's, not the user's
        assert derived.status_code == 422 and derived.json()["field"] == "records[0].weight missing", derived.text
        only = client.post("/predict", json={"records": [{"rid": "R9", "y": "high"}]})  # nothing the model reads
        assert only.status_code == 200 and only.json()["predictions"][0]["prediction"] is None, only.text  # no input: none
        assert "no input in this record" in only.json()["predictions"][0]["missing"], only.text


def test_explain_reads_a_missing_file_as_predict_does_and_limit_bounds_what_is_read(run, capsys):
    """A missing file in row 4 is a missing modality of that row, as predict reads it (noted in its record;
    ``--strict``: the row's error); ``--limit 2`` never reads row 3's bad cell nor row 4's file."""
    predictor, folder = run
    rows = _rows(folder, 5, 4, gone=(3,))
    rows[2]["a"] = "lots"  # a cell that is an error wherever it is read
    table = str(write_csv(folder / "explain_holes.csv", rows))
    run_dir, out = str(folder / "run"), ["--json", "--plots", "0"]
    assert main(["explain", run_dir, "--data", table, "--limit", "2", *out, "--out", str(folder / "xh1")]) == 0
    assert [json.loads(line)["record"] for line in capsys.readouterr().out.splitlines()] == [1, 2]
    del rows[2]  # (row 4 is now row 3)
    table = str(write_csv(folder / "explain_holes.csv", rows))
    assert main(["predict", run_dir, "--data", table]) == 0
    predicted = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["explain", run_dir, "--data", table, *out, "--out", str(folder / "xh2")]) == 0
    explained = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prediction"] for r in explained] == [r["prediction"] for r in predicted]
    assert "missing.txt" in explained[2]["missing"] and REVIEW in explained[2]["missing"]
    assert REVIEW not in explained[2]["present"] and "missing" in predicted[2]
    assert not any("missing" in r for r in explained[:2] + explained[3:])
    assert main(["explain", run_dir, "--data", table, "--strict", *out, "--out", str(folder / "xh3")]) == 2
    _one_line_error(capsys, "row 3", f"'{REVIEW}'", "missing.txt")


def test_data_and_argument_errors_read_as_what_they_are(run, capsys):
    """Not "invalid configuration:" -- no configuration was given: the option or the data is named."""
    _, folder = run
    run_dir, test = str(folder / "run"), str(folder / "test.csv")
    assert main(["predict", run_dir, "--data", test, "--out", test]) == 2
    assert _one_line_error(capsys, "--out").startswith("mmcore predict: --out: ")
    assert main(["eval", run_dir, "--data", str(folder / "absent.csv")]) == 2
    assert "invalid configuration" not in _one_line_error(capsys, "absent.csv")
    assert main(["predict", run_dir, "a=lots"]) == 2
    assert "invalid configuration" not in _one_line_error(capsys, "lots")


def test_a_bare_file_path_goes_to_the_one_column_of_its_modality(run, capsys):
    """As for a train run: ``mmcore predict RUN note.txt`` puts the file in the one column of its modality
    (here the column of text files); a file no column's modality matches asks for column=value."""
    _, folder = run
    run_dir, note = str(folder / "run"), folder / "notes" / "1_0.txt"
    assert main(["predict", run_dir, f"{REVIEW}={note}", "a=0.3"]) == 0
    named = json.loads(capsys.readouterr().out)
    assert main(["predict", run_dir, str(note), "a=0.3"]) == 0
    assert json.loads(capsys.readouterr().out) == named
    picture = folder / "x.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n")  # (never opened: no column is an image)
    assert main(["predict", run_dir, str(picture)]) == 2
    _one_line_error(capsys, "not column=value, nor a file of a modality exactly one column has")


def test_help_says_fit_runs_work_too(capsys):
    for command in ("predict", "eval"):
        assert main([command, "--help"]) == 0
        assert "`mmcore train` or `mmcore fit`" in " ".join(capsys.readouterr().out.split())
