"""An export of a ``mmcore fit`` run takes the user's own columns (issue 20.2 on every export surface): the
manifest carries fit's column plan as plain JSON and the front end derives again what fit derived -- the
median and the ``"<column> missing"`` indicator of an empty number, the parts of a date (ISO strings in
their spellings, a day-first-by-name format, times of day, typed timestamps), a text-file cell's text, a
file cell's path; ids are never read; an unseen category is the "unseen" index. ``frontend.Artefact``,
``mmcore serve EXPORT`` (JSON, multipart, /metadata, the page) and its errors name only the user's
columns, and predict what ``mmcore.Predictor`` predicts on the same records.

One small fit run (module scope: one epoch, 40 rows) and its ONNX and pt2 graphs (one export): about 50 s of shared
setup on 2 busy cores (hence ``slow``); each test then takes about a second."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import mmcore
from mmcore.cli import main
from mmcore_plugins.autofit.infer import ColumnError

WORDS = {"high": ["sunny", "bright", "warm"], "low": ["rainy", "dark", "cold"]}
#: columns named as users name them: fit's slots are ``photo`` and ``tabular``; users only ever see these
PHOTO, PRICE = "Photo", "Unit Price (€)"
pytestmark = pytest.mark.slow

#: columns fit derives from this table (never asked for, never shown)
DERIVED = ("weight missing", f"{PRICE} missing", "created missing", "created days", "created year", "created hour", "created month",
           "created weekday", "sold days", "sold month", "opens hour")


def _png(path: Path, seed: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(path)


def _table(folder: Path, n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    (folder / "notes").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        a, h = rng.standard_normal(2)
        y = "high" if a + 0.5 * h > 0 else "low"
        note = folder / "notes" / f"{seed}_{i}.txt"
        note.write_text(" ".join(rng.choice(WORDS[y], size=3)) + f" day {i}", encoding="utf-8")
        rows.append({"id": f"ID{seed}{i:04d}", "a": round(float(a), 3), "weight": "" if i % 5 == 0 else round(float(h), 3),
                     PRICE: "" if i % 6 == 2 else 1 + i % 4, "group": ["north", "south", "east"][i % 3],
                     "created": "" if i % 7 == 3 else f"2021-{1 + i % 12:02d}-{1 + i % 27:02d} {i % 24:02d}:{i % 60:02d}",
                     "sold": dt.date(2020, 1 + i % 12, 1 + i % 28).strftime("%b %d, %Y"),
                     "opens": f"{6 + i % 5:02d}:{15 * (i % 4):02d}",
                     PHOTO: f"img/{i % 3}.png" if i % 4 else "", "note": f"notes/{note.name}", "y": y})
    return rows


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fit_export")
    for k in range(3):
        _png(folder / "img" / f"{k}.png", k)
    _write_csv(folder / "train.csv", _table(folder, 40, 0))
    predictor = mmcore.fit(str(folder / "train.csv"), target="y", time_limit="10m", max_epochs=1, preset="fast",
                           run_dir=folder / "run", verbose=False)
    plan = predictor.plan
    assert plan.indicators.get("weight") == "weight missing" and plan.text_files == ["note"]
    assert plan.slots["photo"] == {"kind": "image", "column": PHOTO} and plan.indicators[PRICE] == f"{PRICE} missing"
    assert set(plan.dates) == {"created", "sold", "opens"} and plan.dates["opens"]["time_only"]
    assert "id" not in plan.input_columns, "the id column is ignored"
    export = folder / "export"  # model.onnx (the default graph) and model.pt2 from one torch.export
    assert main(["export", str(folder / "run"), "--format", "onnx,pt2", "--out", str(export)]) == 0
    return predictor, folder, {"onnx": export, "pt2": export}


def _frontend(export: Path):
    sys.path.insert(0, str(export))
    try:
        sys.modules.pop("frontend", None)
        import frontend
    finally:
        sys.path.pop(0)
    return frontend


def _records(folder: Path) -> list[dict]:
    """The user's columns, every derived kind's variants: empty / None / placeholder / absent numbers, an
    unseen and an empty category, ISO dates in several spellings and typed ones, placeholder dates (an
    unreadable one is that record's error, below), a missing text file, a missing photo, ids present or not."""
    note = "notes/0_{}.txt"
    return [
        {"id": "ID9", "a": 0.3, "weight": "", PRICE: 2, "group": "north", "created": "2021-03-04", "sold": "Mar 04, 2020",
         "opens": "07:30", PHOTO: "img/1.png", "note": note.format(0)},
        {"a": -1.2, "weight": None, PRICE: None, "group": "west", "created": "2021-03-04T10:30:00Z", "sold": "", "opens": "",
         PHOTO: "", "note": note.format(1)},
        {"a": "0.75", "weight": "N/A", PRICE: "3.5", "group": "", "created": "2021-03-04 10:30:00.5+02:00", "sold": "n/a",
         "opens": "N/A", PHOTO: "img/2.png", "note": "notes/gone.txt"},
        {"a": 1.5, "weight": 0.5, PRICE: "N/A", "group": "south", "created": dt.datetime(2021, 7, 1, 18, 45), "sold": dt.date(2020, 5, 6),
         "opens": dt.time(9, 15), PHOTO: "img/missing.png", "note": note.format(3)},
        {"a": -0.4, "weight": "inf", PRICE: 4, "group": "east", "created": dt.datetime(2022, 1, 2, 3, 4, tzinfo=dt.timezone.utc),
         "sold": "Dec 31, 2019", "opens": "06:00", PHOTO: None, "note": note.format(4)},  # (each record names every column)
        {"a": "", "weight": "", PRICE: "", "group": None, "created": None, "sold": None, "opens": None, PHOTO: None, "note": ""},
    ]


def _expected(predictor, data, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels = list(predictor.predict(data, **options))
        proba = predictor.predict_proba(data, **options)
    return labels, np.asarray(proba, dtype=np.float64)


def _got(results, classes):
    labels = [None if r is None else r["prediction"] for r in results]
    proba = np.array([[np.nan] * len(classes) if r is None else [r["probabilities"][c] for c in classes] for r in results])
    return labels, proba


def test_the_manifest_holds_fits_plan_as_plain_json(fitted):
    predictor, _, exports = fitted
    manifest = json.loads((exports["onnx"] / "manifest.json").read_text(encoding="utf-8"))
    columns = manifest["columns"]
    assert columns["input_columns"] == predictor.plan.input_columns == [
        PHOTO, "note", "a", "weight", PRICE, "group", "created", "sold", "opens"], "a date column is read too"
    assert columns["fill"] == predictor.plan.fill and columns["indicators"] == predictor.plan.indicators
    assert columns["dates"] == predictor.plan.dates and columns["text_files"] == ["note"]
    assert columns["class_values"] == ["high", "low"]
    assert columns["table_columns"] == ["id", "a", "weight", PRICE, "group", "created", "sold", "opens", PHOTO, "note", "y"]


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_the_export_predicts_what_the_predictor_predicts_on_the_users_columns(fitted, fmt, monkeypatch):
    predictor, folder, exports = fitted
    monkeypatch.chdir(folder)  # relative file cells start from the current folder, for both
    records = _records(folder)
    labels, proba = _expected(predictor, records)
    artefact = _frontend(exports[fmt]).load(exports[fmt], graph=f"model.{fmt}")
    # every warning recorded here: one left to pytest would reach xdist's controller, which cannot import the
    # export's own `frontend` module to rebuild the warning's class
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = artefact.predict(records)
    shown = " ".join(str(w.message) for w in caught)
    assert re.search(r"row 3, column 'note'.*gone\.txt", shown), shown
    assert "3 cell(s) or row(s) treated as missing" in shown and "rows 6: no input at all (no prediction)" in shown
    assert f"row 4, column '{PHOTO}'" in shown and not any(d in shown for d in DERIVED)
    got_labels, got_proba = _got(results, ["high", "low"])
    assert got_labels == labels and labels[5] is None  # the last row, every cell empty: no prediction, as in Predictor
    assert np.allclose(got_proba, proba, atol=1e-5, rtol=0, equal_nan=True)
    assert results[1]["modalities"] == ["note", "tabular"] and results[0]["modalities"] == [PHOTO, "note", "tabular"]
    # 'west' is no training group ('' is an empty cell, not a category): predicted as unknown, and told once,
    # in the words mmcore predict uses -- never about the columns fit derives from the dates
    unseen = [str(w.message) for w in caught if type(w.message).__name__ == "UnseenCategoriesWarning"]
    assert unseen == ["column 'group': 1 record had a value not seen in training ('west'); it was treated as unknown"]
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        artefact.predict([{**records[1], "group": g} for g in ("west", "up", "west", "north", "down", "left")])
    assert [str(w.message) for w in told if type(w.message).__name__ == "UnseenCategoriesWarning"] == [
        "column 'group': 5 records had values not seen in training (e.g. 'west', 'up', 'down'); they were treated as unknown"]


def test_a_dataframe_with_typed_timestamps_and_nulls_reads_as_fit_reads_it(fitted, monkeypatch):
    pd = pytest.importorskip("pandas")
    predictor, folder, exports = fitted
    monkeypatch.chdir(folder)
    frame = pd.DataFrame(_records(folder)[:5]).drop(columns=["id"])
    frame["created"] = pd.to_datetime(["2021-03-04", "2021-03-04 10:30", None, "2021-07-01 18:45", "2022-01-02"], format="ISO8601")
    frame["weight"] = pd.array([None, 0.2, None, 0.5, -0.1], dtype="Float64")
    labels, proba = _expected(predictor, frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = _frontend(exports["onnx"]).load(exports["onnx"]).predict(frame)
    got_labels, got_proba = _got(results, ["high", "low"])
    assert got_labels == labels and np.allclose(got_proba, proba, atol=1e-5, rtol=0)


def test_a_missing_column_is_named_with_the_closest_match_or_declared_missing(fitted, monkeypatch):
    predictor, folder, exports = fitted
    monkeypatch.chdir(folder)
    frontend = _frontend(exports["onnx"])
    artefact = frontend.load(exports["onnx"])
    renamed = [{("height" if k == "weight" else k): v for k, v in r.items()} for r in _records(folder)[:4]]
    with pytest.raises(frontend.ColumnsError) as caught:
        artefact.predict(renamed)
    message = str(caught.value)
    assert "no column 'weight'" in message and "did you mean 'height'?" in message and "missing_columns" in message
    assert caught.value.column == "weight" and not any(d in message for d in DERIVED)
    with pytest.raises(ColumnError) as expected:  # the same words as Predictor's
        predictor.predict(renamed)
    assert message == str(expected.value).replace("the rows", "the records")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = artefact.predict(renamed, missing_columns=["weight"])
    labels, proba = _expected(predictor, renamed, missing_columns=["weight"])
    assert _got(results, ["high", "low"])[0] == labels
    assert np.allclose(_got(results, ["high", "low"])[1], proba, atol=1e-5, rtol=0)
    with pytest.raises(frontend.ColumnsError, match="'weight missing' is not a column the model reads"):
        artefact.predict(renamed, missing_columns=["weight missing"])
    # strict: a missing file is the row's error, naming row and column
    with pytest.raises(frontend.ColumnsError, match=r"row 3, column 'note': file 'notes/gone.txt' does not exist"):
        artefact.predict(_records(folder)[:3], strict=True)
    with pytest.raises(frontend.ColumnsError, match=r"row 1, column 'a': expected a number, got 'abc'"):
        artefact.predict([{**_records(folder)[0], "a": "abc"}])
    # a date or time of day that does not read is the record's error, as a bad number is -- in Predictor's words
    for column, bad in (("sold", "not a date"), ("opens", "25:99")):
        record = [{**_records(folder)[0], column: bad}]
        with pytest.raises(frontend.ColumnsError, match=rf"row 1, column '{column}': expected a (date|time of day)") as caught:
            artefact.predict(record)
        with pytest.raises(ColumnError) as expected:
            predictor.predict(record)
        assert str(caught.value) == str(expected.value).replace("the rows: ", "")
    with pytest.raises(frontend.ColumnsError, match="no records given"):
        artefact.predict([])
    # each record is its own row: one without a column the model reads is refused whatever the others hold
    complete = _records(folder)[0]
    for records, row in (([{"a": complete["a"]}], 1), ([complete, {"a": complete["a"]}], 2)):
        with pytest.raises(frontend.ColumnsError, match=rf"^row {row} has no columns .*\(its columns: 'a'\)") as caught:
            artefact.predict(records)
        with pytest.raises(ColumnError) as expected:  # Predictor: the same rule, the same words
            predictor.predict(records)
        assert str(caught.value) == str(expected.value)


def test_serve_export_takes_and_shows_the_users_columns_only(fitted):
    """`mmcore serve EXPORT` as `mmcore serve RUN` of the same fit run (tests/plugins/autofit/
    test_fit_run_commands.py): JSON records and form fields are the user's row, named exactly as the training
    table wrote them ("Photo", "Unit Price (€)"), a number left out is a missing cell, the text slot takes
    the text a text-file cell held; the slots' names stay accepted as aliases; /metadata, the page and the
    errors show only the user's columns, never a derived one or a slot's name; the answers are Predictor's."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmcore_plugins.deploy.backends import open_backend
    from mmcore_plugins.deploy.serve import create_app

    predictor, folder, exports = fitted
    note, photo = folder / "notes" / "0_3.txt", folder / "img" / "1.png"
    records = [{PHOTO: str(photo), "a": 0.3, "weight": "", PRICE: 2.5, "group": "north", "created": "2021-03-04 08:00",
                "sold": "Mar 04, 2020", "opens": "", "note": str(note)},
               {PHOTO: "", "a": -1.2, "weight": 0.5, PRICE: "", "group": "west", "created": "", "sold": "", "opens": "07:15",
                "note": ""}]
    labels, proba = _expected(predictor, records)
    text = note.read_text(encoding="utf-8")
    upload = {PHOTO: ("photo.png", photo.read_bytes(), "image/png")}
    first = {"a": "0.3", PRICE: "2.5", "group": "north", "created": "2021-03-04 08:00", "sold": "Mar 04, 2020", "note": text}
    second = {"a": -1.2, "weight": 0.5, "group": "west", "opens": "07:15"}
    with TestClient(create_app(open_backend(exports["onnx"]))) as client:
        metadata = client.get("/metadata")
        assert metadata.json()["columns"] == [PHOTO, "note", "a", "weight", PRICE, "group", "created", "sold", "opens"]
        slots = {s["name"]: s for s in metadata.json()["slots"]}
        assert slots["photo"]["column"] == PHOTO and slots["tabular"]["numeric"] == ["a", "weight", PRICE]
        assert slots["tabular"]["categorical"] == ["group"]  # date columns are date fields, not categories
        assert set(slots["tabular"]["categories"]) == {"group"}  # the training values of the user's category
        page = client.get("/").text
        for column in (PHOTO, "note", "a", "weight", PRICE, "group", "created", "sold", "opens"):
            assert f'name="{column}"' in page, column
        assert 'name="photo"' not in page and "tabular." not in page
        for shown in (metadata.text, page):
            assert not any(d in shown for d in DERIVED)
        form = client.post("/predict", data=first, files=upload)  # the user's columns, a photo uploaded
        assert form.status_code == 200, form.text
        assert form.json()["predictions"][0]["prediction"] == labels[0]
        assert form.json()["predictions"][0]["modalities"] == [PHOTO, "note", "tabular"]
        assert "warnings" not in form.json()["predictions"][0]  # 'north': a training category
        assert np.allclose(_got(form.json()["predictions"], ["high", "low"])[1], proba[:1], atol=1e-5, rtol=0)
        answer = client.post("/predict", json={"records": [second]})  # JSON: no upload, the photo is missing
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["warnings"] == [  # 'west': predicted as unknown, and said
            "column 'group': 'west' was not seen in training; it was treated as unknown"]
        assert _got(answer.json()["predictions"], ["high", "low"])[0] == labels[1:]
        assert np.allclose(_got(answer.json()["predictions"], ["high", "low"])[1], proba[1:], atol=1e-5, rtol=0)
        alias = client.post("/predict", json={"records": [{"tabular": second}]})  # the slot's name: an alias
        assert alias.status_code == 200 and alias.json() == answer.json(), alias.text
        form = client.post("/predict", data={f"tabular.{k}": v for k, v in first.items() if k != "note"} | {"note": text},
                           files={"photo": upload[PHOTO]})
        assert form.status_code == 200, form.text
        assert np.allclose(_got(form.json()["predictions"], ["high", "low"])[1], proba[:1], atol=1e-5, rtol=0)
        path = client.post("/predict", json={"records": [{PHOTO: "img/1.png", "a": 0.3}]})  # a path is never opened
        assert path.status_code == 422 and path.json()["field"] == f"records[0].{PHOTO}" and "uploaded" in path.text
        both = client.post("/predict", data={"a": "0.3"}, files={**upload, "photo": ("b.png", (folder / "img" / "2.png")
                                                                                          .read_bytes(), "image/png")})
        assert both.status_code == 422 and f"'{PHOTO}'" in both.text and "'photo'" in both.text, both.text
        wrong = client.post("/predict", json={"records": [{"unit price (€)": 2.0}]})
        assert wrong.status_code == 422 and f"did you mean {PRICE!r}?" in wrong.json()["error"], wrong.text
        bad = client.post("/predict", json={"records": [{"tabular": {"a": 0.3, "weight missing": 1.0}}]})
        assert bad.status_code == 422 and bad.json()["field"] == "records[0].tabular.weight missing"
        listed = bad.json()["error"]
        assert f"'a', 'weight', '{PRICE}', 'group', 'created', 'sold', 'opens'" in listed and "missing'" not in listed
        bad = client.post("/predict", json={"records": [{"a": "x"}]})
        assert bad.status_code == 422 and bad.json()["field"] == "records[0].a"
        numbers = client.post("/predict", json={"records": [{"tabular": [0.3, 0.5, 1.0]}]})  # a list of the numbers
        assert numbers.status_code == 422 and numbers.json()["field"] == "records[0].tabular"
        # a whole row of the training table (its id and target: not read, ignored as Predictor ignores them), its
        # numbers as the CSV's text ("0.75" is 0.75; "N/A", "inf", "" are missing cells), JSON or form
        assert metadata.json()["ignored_columns"] == ["id", "y"]
        whole = client.post("/predict", json={"records": [{**second, "id": "ID0001", "y": "low"}]})
        assert whole.status_code == 200, whole.text  # the id echoed first, as predict --data writes it
        assert whole.json() == {"predictions": [{"id": "ID0001", **answer.json()["predictions"][0]}]}
        assert list(whole.json()["predictions"][0])[0] == "id"
        texts = client.post("/predict", json={"records": [{**second, "a": "-1.2", "weight": " 5e-1 ", PRICE: "N/A"}]})
        assert texts.status_code == 200 and texts.json() == answer.json(), texts.text
        form = client.post("/predict", data={**first, "id": "ID0001", "y": "high"}, files=upload)
        assert form.status_code == 200 and form.json()["predictions"][0]["id"] == "ID0001", form.text
        assert np.allclose(_got(form.json()["predictions"], ["high", "low"])[1], proba[:1], atol=1e-5, rtol=0)
        bad = client.post("/predict", json={"records": [second, {**second, "weight": "abc"}]})
        assert bad.status_code == 422 and bad.json()["field"] == "records[1].weight", bad.text
        assert "expected a number, got 'abc'" in bad.json()["error"]
        wrong = client.post("/predict", json={"records": [{**second, "id": "ID1", "wieght": 0.5}]})
        assert wrong.status_code == 422 and "did you mean 'weight'?" in wrong.json()["error"], wrong.text


def test_the_front_end_derives_the_columns_without_mmcore(fitted, monkeypatch):
    predictor, folder, exports = fitted
    monkeypatch.chdir(folder)
    records = [{k: v for k, v in r.items() if isinstance(v, (str, int, float)) or v is None} for r in _records(folder)[:3]]
    records = [{**r, "created": r.get("created") or "", "sold": r.get("sold") or "", "opens": r.get("opens") or ""}
               for r in records]
    _, proba = _expected(predictor, records)
    script = textwrap.dedent(f"""
        import json, sys, warnings
        sys.modules["mmcore"] = None          # any import of mmcore now fails
        sys.modules["mmcore_plugins"] = None
        sys.modules["torch"] = None           # and of torch: the ONNX export needs numpy, Pillow, onnxruntime
        sys.path.insert(0, {str(exports['onnx'])!r})
        import frontend
        warnings.simplefilter("ignore")
        model = frontend.load({str(exports['onnx'])!r})
        print(json.dumps(model.predict(json.loads({json.dumps(records)!r}))))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=folder)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert np.allclose(_got(results, ["high", "low"])[1], proba, atol=1e-5, rtol=0)


def test_a_plan_that_does_not_fit_the_exports_slots_is_refused_when_loaded(fitted):
    _, _, exports = fitted
    frontend = _frontend(exports["onnx"])
    manifest = json.loads((exports["onnx"] / "manifest.json").read_text(encoding="utf-8"))
    columns, slots = manifest["columns"], manifest["slots"]
    frontend.Columns(columns, slots)
    broken = {**columns, "indicators": {}}  # the slot reads 'weight missing' that the plan no longer derives
    with pytest.raises(ValueError, match=r"columns\.slots\.tabular"):
        frontend.Columns(broken, slots)
    with pytest.raises(ValueError, match=r"columns\.slots"):
        frontend.Columns({**columns, "slots": {}}, slots)


def test_date_columns_are_date_fields_in_serve_run_and_serve_export(fitted):
    """A date column is shown as a date field (kind "date", the format fit read it with as a hint), not as a
    category with an empty list of values -- in /metadata and on the page, of the run and of its export."""
    from fastapi.testclient import TestClient

    from mmcore_plugins.deploy.backends import open_backend
    from mmcore_plugins.deploy.serve import create_app

    _, folder, exports = fitted
    for source in (exports["onnx"], folder / "run"):
        with TestClient(create_app(open_backend(source))) as client:
            table = next(s for s in client.get("/metadata").json()["slots"] if s["name"] == "tabular")
            page = client.get("/").text
        dates = {d["column"]: d for d in table["dates"]}
        assert list(dates) == ["created", "sold", "opens"] and {d["kind"] for d in dates.values()} == {"date"}
        assert "ISO 8601" in dates["created"]["hint"] and "Mar 04, 2021" in dates["sold"]["hint"], dates
        assert not set(dates) & set(table["categorical"]) and not set(dates) & set(table["categories"])
        for column in dates:
            assert f'class="date" id="{column}" name="{column}"' in page and f'list="{column}.values"' not in page
        assert 'placeholder="Mar 04, 2021"' in page
