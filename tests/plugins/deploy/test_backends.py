"""What every serve backend adds to a record's answer (:meth:`mmcore_plugins.deploy.backends.Backend.warnings`):
a category value never seen in training is predicted (read as unknown, never refused) and its answer says so
under ``"warnings"``. Served here from a fit run (the session's cp1252 run, tests/plugins/conftest.py); the
export's backend is checked in test_export_fit_run.py (its 'west' record)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow  # the shared fit run (one epoch of a 40-row table)


def test_a_new_category_is_predicted_and_noted_in_its_answer(cp1252_fit_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmcore_plugins.deploy.backends import open_backend
    from mmcore_plugins.deploy.serve import create_app

    records = [{"Kunde": "Acme", "Stadt": "Berlin", "Betrag": 0.5},  # two new categories
               {"Kunde": "Müller", "Stadt": "Zürich", "Betrag": "0.5"},  # trained ones (non-ASCII, as trained)
               {"Kunde": None, "Stadt": "", "Betrag": 1.0}]  # empty cells: missing, not unknown
    with TestClient(create_app(open_backend(cp1252_fit_run))) as client:
        answer = client.post("/predict", json={"records": records})
    assert answer.status_code == 200, answer.text
    first, second, third = answer.json()["predictions"]
    assert "prediction" in first and first["warnings"] == [
        "column 'Kunde': 'Acme' was not seen in training; it was treated as unknown",
        "column 'Stadt': 'Berlin' was not seen in training; it was treated as unknown"]
    assert "warnings" not in second and "warnings" not in third


@pytest.fixture(scope="module")
def cp1252_export(cp1252_fit_run, tmp_path_factory):
    """The cp1252 fit run exported (ONNX): its manifest carries the columns fit read with decimal commas."""
    pytest.importorskip("onnxruntime")
    from mmcore.cli import main

    out = tmp_path_factory.mktemp("cp1252_export") / "export"
    assert main(["export", str(cp1252_fit_run), "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("served", ["run", "export"])
def test_serve_reads_decimal_commas_as_the_run_read_its_table_and_answers_a_record_without_input(
        cp1252_fit_run, cp1252_export, served):
    """fit read 'Betrag' with decimal commas: a string cell "0,5" (JSON or a form field) is read so again, a JSON
    number is a number; a record with no input at all ({} or every cell empty) gets no prediction and says why
    (Predictor's None, predict --data's line), not a 422; a cell that is no number is still a 422 that names no
    option serve lacks."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmcore_plugins.deploy.backends import open_backend
    from mmcore_plugins.deploy.serve import create_app

    folder = cp1252_fit_run if served == "run" else cp1252_export
    base = {"Kunde": "Müller", "Stadt": "Zürich"}
    with TestClient(create_app(open_backend(folder))) as client:
        def post(**request):
            answer = client.post("/predict", **request)
            assert answer.status_code == 200, answer.text
            return answer.json()["predictions"]

        point = post(json={"records": [{**base, "Betrag": 0.5}, {**base, "Betrag": 1234.5}]})
        assert post(json={"records": [{**base, "Betrag": "0,5"}, {**base, "Betrag": "1.234,5"}]}) == point
        assert post(data={**base, "Betrag": "0,5"}) == point[:1]
        answers = post(json={"records": [{}, {"Kunde": None, "Stadt": "", "Betrag": "N/A"}, {"Kundennr": "K1"},
                                         {**base, "Betrag": "0,5"}]})
        for empty in answers[:3]:
            assert empty["prediction"] is None and "no input in this record" in empty["missing"], empty
            assert "probabilities" not in empty
        assert answers[3] == point[0]
        refused = client.post("/predict", json={"records": [{**base, "Betrag": "viel"}]})
        assert refused.status_code == 422 and refused.json()["field"] == "records[0].Betrag", refused.text
        assert "--decimal" not in refused.text


@pytest.mark.parametrize("served", ["run", "export"])
def test_serve_echoes_a_records_ids_as_predict_writes_them_into_its_lines(
        cp1252_fit_run, cp1252_export, cp1252_table, tmp_path, served):
    """The run's id columns ('Kundennr'; 'row', a name predict's line uses itself) come back in each record's
    answer under the names and with the values `mmcore predict --data` writes into that row's line (JSON records
    holding the table's rows as its cells read, and a form's field); a record without them gets none, a record
    without input keeps its ids beside its null prediction."""
    import csv

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmcore.cli import main
    from mmcore_plugins.deploy.backends import ANSWER_KEYS, open_backend
    from mmcore_plugins.deploy.serve import create_app

    table = cp1252_table(tmp_path / "new.csv", 3, seed=7)
    assert main(["predict", str(cp1252_fit_run), "--data", str(table), "--out", str(tmp_path / "p.jsonl")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    predicted = [{k: v for k, v in line.items() if k not in ("row", "prediction", "probabilities", "error", "missing")}
                 for line in lines]
    assert predicted[0] == {"Kundennr": "K1000", "row (id)": "1100"}, "predict's own naming of the ids"
    with table.open(encoding="cp1252", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    folder = cp1252_fit_run if served == "run" else cp1252_export
    with TestClient(create_app(open_backend(folder))) as client:
        answer = client.post("/predict", json={"records": [*rows, {"Kunde": "Müller", "Betrag": 0.5},
                                                           {"Kundennr": "K9", "Kunde": None}]})
        assert answer.status_code == 200, answer.text
        *answers, without, empty = answer.json()["predictions"]
        form = client.post("/predict", data={"Kundennr": "K8", "Kunde": "Müller", "Stadt": "Köln", "Betrag": "0,5"})
        assert form.status_code == 200, form.text
    assert [{k: v for k, v in a.items() if k not in ANSWER_KEYS} for a in answers] == predicted
    assert list(answers[0])[:2] == ["Kundennr", "row (id)"], "the ids first, as in predict's line"
    if served == "run":
        assert [a["prediction"] for a in answers] == [line["prediction"] for line in lines]
    assert "Kundennr" not in without and "row (id)" not in without and "prediction" in without
    assert empty["Kundennr"] == "K9" and empty["prediction"] is None and "no input" in empty["missing"]
    assert form.json()["predictions"][0]["Kundennr"] == "K8"
