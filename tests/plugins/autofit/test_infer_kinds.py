"""Column kinds a human would agree with (issue 27, issue 20 items 4 and 7): dates and times are not
text, ids are ignored, a path column whose files mostly do not exist is reported, and a target's
kind is decided on its finite numbers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from autofit_helpers import write_png

from mmcore_plugins.autofit import dates
from mmcore_plugins.autofit.infer import ColumnError, format_table, infer_columns, infer_target
from mmcore_plugins.autofit.prepare import Preparer, check_table_columns, make_plan
from mmcore_plugins.io.tables import read_table


def _by_name(infos):
    return {i.name: i for i in infos}


def _day(k: int) -> dt.datetime:
    return dt.datetime(2021, 1, 1, 9, 0) + dt.timedelta(days=3 * k, hours=k % 7)


FORMATTED = {
    "iso date": lambda d: d.strftime("%Y-%m-%d"),
    "iso time": lambda d: d.strftime("%Y-%m-%dT%H:%M:%S"),
    "iso utc": lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"),
    "iso space": lambda d: d.strftime("%Y-%m-%d %H:%M"),
    "iso offset": lambda d: d.strftime("%Y-%m-%dT%H:%M:%S+02:00"),
    "us": lambda d: d.strftime("%m/%d/%Y"),
    "day first": lambda d: d.strftime("%d/%m/%Y"),
    "dotted": lambda d: d.strftime("%d.%m.%Y %H:%M"),
    "month name": lambda d: d.strftime("%b %d, %Y"),
    "long": lambda d: d.strftime("%d %B %Y"),
}


@pytest.mark.parametrize("style", sorted(FORMATTED))
def test_date_strings_in_common_formats_are_dates_not_text(style: str, tmp_path: Path):
    rows = [{"created_at": FORMATTED[style](_day(k)), "x": k % 5, "y": k % 2} for k in range(60)]
    info = _by_name(infer_columns(rows, target="y", base=tmp_path))["created_at"]
    assert info.kind == "date" and info.role == "input", info.why
    assert "date/time" in info.why and "days" in info.why
    parsed = dates.parse(rows[7]["created_at"], info.details["format"])
    assert parsed is not None and parsed.date() in {_day(7).date(), (_day(7) - dt.timedelta(hours=2)).date()}


def test_day_first_is_chosen_when_a_day_exceeds_twelve():
    values = [f"{d:02d}/03/2021" for d in range(1, 29)]
    fmt, read = dates.detect(values)
    assert fmt == "%d/%m/%Y" and read == len(values)
    assert dates.parse("25/03/2021", fmt) == dt.datetime(2021, 3, 25)


def test_typed_dates_from_a_dataframe_and_parquet(tmp_path: Path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({
        "stamp": pd.to_datetime([_day(k) for k in range(40)]),
        "day": [_day(k).date() for k in range(40)],
        "at": [dt.time(8 + k % 10, 15) for k in range(40)],
        "utc": pd.to_datetime([_day(k) for k in range(40)]).tz_localize("Europe/Paris"),
        "y": [k % 2 for k in range(40)],
    })
    for source in (frame, tmp_path / "t.parquet"):
        if not isinstance(source, pd.DataFrame):
            frame.to_parquet(source)
        rows = read_table(source)
        infos = _by_name(infer_columns(rows, target="y", base=tmp_path))
        assert {n: infos[n].kind for n in ("stamp", "day", "at", "utc")} == dict.fromkeys(("stamp", "day", "at", "utc"), "date")
        assert infos["at"].details["time_only"] and not infos["day"].details["with_time"]
        assert infos["stamp"].details["with_time"]


def test_derived_parts_go_to_the_table_slot_and_are_derived_again_for_new_rows(tmp_path: Path):
    rows = [{"created_at": FORMATTED["iso time"](_day(k)) if k % 10 else "", "n": 0.37 * k, "y": k % 2} for k in range(50)]
    infos = infer_columns(rows, target="y", base=tmp_path)
    plan = make_plan(infos, rows)
    spec = plan.slots["tabular"]
    assert spec["dates"] == ["created_at"]
    numeric, categorical = plan.tabular_columns(spec)
    assert numeric == ["n", "created_at days", "created_at year", "created_at hour", "created_at missing"]
    assert categorical == ["created_at month", "created_at weekday"]
    assert plan.manifest_columns()["tabular"] == {"numeric": numeric, "categorical": categorical}
    # the date column is a column the model reads: a table without it is refused by name (issue 20.1)
    assert plan.input_columns == ["n", "created_at"]
    with pytest.raises(ColumnError, match=r"no column 'created_at' \(trained on; did you mean 'created'\?\)"):
        check_table_columns(plan, ["n", "created"])
    assert check_table_columns(plan, ["n"], ["created_at"]) == ["created_at"]
    preparer = Preparer(plan, tmp_path)
    row = preparer.table_row({"created_at": "2021-03-04T10:30:00", "n": 1.0, "y": 1}, 0, "train")
    origin = dates.ordinal_days(_day(1))  # the earliest date (row 0 is empty)
    assert row["created_at days"] == pytest.approx(dates.ordinal_days(dt.datetime(2021, 3, 4, 10, 30)) - origin)
    assert (row["created_at year"], row["created_at hour"], row["created_at missing"]) == (2021.0, 10.5, 0.0)
    assert (row["created_at month"], row["created_at weekday"]) == ("3", "4")  # a Thursday
    # a missing date (empty, a placeholder): training medians, no category, the indicator set
    for value in ("", None, "n/a", "  "):
        sample = preparer.sample({"created_at": value, "n": 2.0}, 0)["inputs"]["tabular"]
        assert sample["created_at missing"] == 1.0 and sample["created_at month"] is None
        assert sample["created_at year"] == plan.fill["created_at year"]
    # a cell that does not read as a date is that row's error, as a number cell that is no number is
    # (newcomer 3 item 6: 'gestern', '2026-13-45' were predicted with no note); a time of day is not a date
    for value in ("gestern", "2026-13-45", "not a date", dt.time(10, 30)):
        with pytest.raises(ColumnError, match=r"row 4, column 'created_at': expected a date in ISO 8601 "
                                              r"\(e\.g\. 2021-03-04 or 2021-03-04T10:30\), got "):
            preparer.sample({"created_at": value, "n": 2.0}, 3)
    with pytest.raises(ColumnError, match="row 4, column 'n': expected a number, got 'abc'"):
        preparer.sample({"created_at": "2021-03-04", "n": "abc"}, 3)
    # fit's --val/--test tables (stray cells noted): missing and noted, never silent
    lenient = Preparer(plan, tmp_path, stray_numbers=True)
    assert lenient.sample({"created_at": "gestern", "n": 2.0}, 3)["inputs"]["tabular"]["created_at missing"] == 1.0
    assert lenient.dropped == [(3, "created_at", "expected a date in ISO 8601 (e.g. 2021-03-04 or 2021-03-04T10:30), "
                                                 "got 'gestern'")]
    # the plan round-trips through JSON (autofit.json) with what the predictor needs
    again = type(plan).from_json(json.loads(json.dumps(plan.to_json())))
    assert Preparer(again, tmp_path).table_row({"created_at": "2021-03-04T10:30:00", "n": 1.0, "y": 1}, 0, "train") == row


def test_what_is_not_a_date(tmp_path: Path):
    rows = [{"compact": str(20210101 + 100 * (k % 7)), "words": f"meeting {k} at noon", "score": f"{k % 4}-{k % 3}",
             "same": "2021-01-01", "y": k % 2} for k in range(40)]
    infos = _by_name(infer_columns(rows, target="y", base=tmp_path))
    assert infos["compact"].kind == "numeric"  # digits alone are a number
    assert infos["words"].kind == "text"
    assert infos["score"].kind != "date"
    assert infos["same"].kind == "ignore" and "the same in every row" in infos["same"].why
    with pytest.raises(ColumnError, match="--column words=date: cell 'meeting 0 at noon' is not a date"):
        infer_columns(rows, target="y", base=tmp_path, overrides={"words": "date"})
    mostly = [{"when": "2021-02-03" if k % 4 else "soon", "y": k % 2} for k in range(40)]
    assert _by_name(infer_columns(mostly, target="y", base=tmp_path))["when"].kind != "date"  # 75% read: not a date column
    # a training table's cells that do not read: missing in training, each listed (row, what came)
    stray = [{"when": f"{1 + k % 28:02d}.03.2021" if k != 7 else "gestern", "y": k % 2} for k in range(40)]
    found = infer_columns(stray, target="y", base=tmp_path)
    info = _by_name(found)["when"]
    assert info.kind == "date" and info.details["unusable"] == {7: "expected a date as %d.%m.%Y (e.g. 04.03.2021), got 'gestern'"}
    plan = make_plan(found, stray)
    trained = Preparer(plan, tmp_path, unusable={"when": info.details["unusable"]})
    assert trained.table_row(stray[7], 7, "train")["when missing"] == 1.0 and trained.dropped_files == {"when": 1}
    with pytest.raises(ColumnError, match="row 8, column 'when': expected a date as %d.%m.%Y"):
        Preparer(plan, tmp_path).table_row(stray[7], 7, "train")
    nearly = [{"when": f"2021-02-{1 + k % 28:02d}" if k % 20 else "n/a", "y": k % 2} for k in range(40)]
    info = _by_name(infer_columns(nearly, target="y", base=tmp_path))["when"]
    # "n/a" is a placeholder, a missing cell (mmcore.labels.is_missing), not a cell that fails to read
    assert info.kind == "date" and info.missing == pytest.approx(2 / 40)


def test_ids_are_ignored_and_single_words_are_categories(tmp_path: Path):
    rows = [{"sku": f"SKU-{k // 2:05d}", "user": f"u{(7 * k) % 180}", "brand": ["Acme", "Zenith", "Orbit", "Nova"][k % 4] + str(k % 30),
             "city": ["Paris", "Lyon", "Nice", "Lille", "Metz", "Brest", "Caen", "Dijon"][k % 8] + "x" * (k % 9),
             "y": k % 2} for k in range(200)]
    infos = _by_name(infer_columns(rows, target="y", base=tmp_path))
    assert infos["sku"].kind == "ignore" and "identifier" in infos["sku"].why
    assert infos["user"].kind == "ignore"
    assert infos["city"].kind == "categorical"  # 72 distinct single words that repeat: categories, not sentences


def test_a_path_column_whose_files_mostly_do_not_exist_is_reported(tmp_path: Path):
    for k in range(3):
        write_png(tmp_path / f"{k}.png", k)
    rows = [{"photo": f"{k % 3}.png" if k % 4 == 0 else f"elsewhere/{k}.png", "y": k % 2} for k in range(40)]
    info = _by_name(infer_columns(rows, target="y", base=tmp_path))["photo"]
    assert info.kind == "image" and info.missing == pytest.approx(30 / 40)
    assert "30 of its 40 files (75%) do not exist" in info.details["warning"]
    assert "warning: column 'photo': 30 of its 40 files" in format_table([info])
    few = [{"photo": f"{k % 3}.png" if k % 4 else "gone.png", "y": k % 2} for k in range(40)]
    assert "warning" not in _by_name(infer_columns(few, target="y", base=tmp_path))["photo"].details


@pytest.mark.parametrize("bad", [float("inf"), "inf", "-inf", "Infinity", float("-inf")])
def test_a_non_finite_target_cell_is_an_error_naming_row_and_column(bad):
    prices = [round(9.99 + 1.37 * k, 2) for k in range(60)]
    prices[17] = bad
    with pytest.raises(ColumnError) as caught:
        infer_target("price", prices)
    message = str(caught.value)
    assert message.startswith("row 18, target 'price'") and "not a finite number" in message
    assert "regression" in message and "--column price=regression" in message


@pytest.mark.parametrize("placeholder", ["nan", "NaN", float("nan")])
def test_a_nan_target_cell_is_a_missing_label_not_an_error(placeholder):
    prices = [round(9.99 + 1.37 * k, 2) for k in range(60)]
    prices[17] = placeholder
    info = infer_target("price", prices)
    assert info.missing == pytest.approx(1 / 60)


def test_the_kind_is_decided_on_finite_numbers_and_a_declared_regression_drops_them():
    prices = [round(9.99 + 1.37 * k, 2) for k in range(60)]
    prices[3], prices[40] = "inf", float("nan")  # a float NaN is a missing cell already
    info = infer_target("price", prices, "regression")
    assert info.kind == "regression" and info.details["nonfinite"] == {3: "inf"}
    assert info.missing == pytest.approx(2 / 60) and "1 non-finite" in info.why
    classes = [k % 3 for k in range(60)]
    classes[5] = "inf"
    with pytest.raises(ColumnError, match=r"row 6, target 'y': 'inf' is not a finite number; the target is classification"):
        infer_target("y", classes)
    with pytest.raises(ColumnError, match="row 6, target 'y'"):
        infer_target("y", classes, "classification")
    labels = ["cat", "dog", "inf", "bird"] * 5
    with pytest.raises(ColumnError, match="row 3, target 'y'"):
        infer_target("y", labels)


@pytest.mark.parametrize("stray", ["3,5", "approx. 4", "12 kg", "?", "--"])
def test_a_few_stray_cells_in_a_number_column_are_missing_measurements_not_a_new_kind(stray: str, tmp_path: Path):
    """One cell that is not a number among many (a decimal comma, a unit, a note) must not turn the column
    into an identifier or categories (it was silently ignored): it stays numeric, the cell is missing (the
    training median, the indicator set) and named; --strict refuses it; at predict time it is the row's error."""
    rows = [{"ink": round(2 + 0.013 * k, 3) if k != 7 else stray, "y": k % 2} for k in range(246)]
    infos = _by_name(infer_columns(rows, target="y", base=tmp_path))
    info = infos["ink"]
    assert info.kind == "numeric" and info.details["unusable"] == {7: f"expected a number, got {stray!r}"}
    assert f"row 8: {stray!r}" in info.why and "treated as missing" in info.why
    plan = make_plan(list(infos.values()), rows)
    assert "ink" in plan.indicators and plan.fill["ink"] == pytest.approx(2 + 0.013 * 123)
    preparer = Preparer(plan, tmp_path, unusable={"ink": info.details["unusable"]})
    row = preparer.table_row(rows[7], 7, "train")
    assert row["ink"] == plan.fill["ink"] and row[plan.indicators["ink"]] == 1.0
    assert preparer.dropped == [(7, "ink", f"expected a number, got {stray!r}")]
    with pytest.raises(ColumnError, match=r"row 1, column 'ink': expected a number"):  # a new row: its error
        Preparer(plan, tmp_path).sample({"ink": stray}, 0)
    # fit's --val/--test tables: the same rule as the training table's stray cells (strict: an error)
    extra = Preparer(plan, tmp_path, stray_numbers=True)
    assert extra.table_row({"ink": stray, "y": 1}, 4, "test")["ink"] == plan.fill["ink"]
    assert extra.dropped == [(4, "ink", f"expected a number, got {stray!r}")]
    with pytest.raises(ColumnError, match=r"row 5, column 'ink': expected a number"):
        Preparer(plan, tmp_path, stray_numbers=True, strict=True).table_row({"ink": stray, "y": 1}, 4, "test")


def test_a_column_of_strings_with_some_numbers_is_not_made_numeric(tmp_path: Path):
    sizes = [{"size": str(k % 9) if k % 10 else "XL", "y": k % 2} for k in range(100)]  # 10% words: not stray cells
    assert _by_name(infer_columns(sizes, target="y", base=tmp_path))["size"].kind == "categorical"
    few = [{"n": str(k) if k != 3 else "3,5", "y": k % 2} for k in range(15)]  # too few numbers to call one stray
    assert _by_name(infer_columns(few, target="y", base=tmp_path))["n"].kind != "numeric"
