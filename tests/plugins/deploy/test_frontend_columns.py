"""``frontend.Columns`` (an export's copy of fit's column plan, run without mmcore) derives exactly what
``mmcore_plugins.autofit.prepare.Preparer`` derives, cell for cell: for every date format fit recognises
(ISO 8601 spellings, every ``strptime`` format in ``dates.FORMATS``, times of day, typed values), numbers
(empty, placeholders, non-finite, numpy scalars, bad values -> the same error), categories (unseen,
padded, numbers), text-file and file cells (relative paths, missing files), and the predictions' decoding
for each task. No model is trained: plans come from ``make_plan`` on small tables."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from mmcore_plugins.autofit import dates
from mmcore_plugins.autofit.infer import ColumnError, infer_columns
from mmcore_plugins.autofit.prepare import Preparer, decode_prediction, make_plan
from mmcore_plugins.deploy import frontend
from mmcore_plugins.io.tables import _plain


def _day(k: int) -> dt.datetime:
    return dt.datetime(2021, 1, 1, 9, 0) + dt.timedelta(days=3 * k, hours=k % 7, minutes=5 * (k % 3))


def _columns(plan) -> frontend.Columns:
    """The export's view of ``plan``: its JSON, and the table slot's processor columns."""
    slots = {}
    for slot, spec in plan.slots.items():
        if spec["kind"] == "tabular":
            numeric, categorical = plan.tabular_columns(spec)
            slots[slot] = {"kind": "tabular", "columns": numeric, "categorical": categorical}
        else:
            slots[slot] = {"kind": spec["kind"]}
    return frontend.Columns(json.loads(json.dumps(plan.to_json())), slots)


def _same(preparer: Preparer, columns: frontend.Columns, row: dict) -> None:
    """The table slot of ``row``, derived both ways (the Preparer reads cells as mmcore reads a table)."""
    try:
        expected = preparer.inputs({k: _plain(v) for k, v in row.items()}, 0)["tabular"]
    except ColumnError as exc:
        with pytest.raises(frontend.ColumnsError) as caught:
            columns.table_row("tabular", row)
        from mmcore_plugins.autofit.tables import _DECIMAL_OPTION

        # the same words, less the table-reading option Predictor has and the front end lacks
        assert f"row 1, {caught.value}" == str(exc).replace(_DECIMAL_OPTION, "")
        return
    assert columns.table_row("tabular", row) == expected, row


PROBES = ["", None, "N/A", "  ", "not a date", "2021-13-45", dt.datetime(2022, 2, 3, 4, 5, 6), dt.date(2020, 2, 29),
          dt.time(23, 59, 30), dt.datetime(2021, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=5))),
          np.datetime64("2021-03-04T05:06:07"), float("nan")]


@pytest.mark.parametrize("fmt", ["iso date", "iso T Z", "iso offset", *dates.FORMATS])
def test_every_date_format_fit_reads_is_derived_alike(fmt: str, tmp_path: Path):
    style = {"iso date": lambda d: d.strftime("%Y-%m-%d"), "iso T Z": lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"),
             "iso offset": lambda d: d.strftime("%Y-%m-%d %H:%M:%S.5+02:00")}.get(fmt, lambda d: d.strftime(fmt))
    rows = [{"when": style(_day(k)) if k % 9 else "", "n": 0.37 * k if k % 4 else "", "y": k % 2} for k in range(40)]
    plan = make_plan(infer_columns(rows, target="y", base=tmp_path), rows)
    assert plan.slots["tabular"].get("dates") == ["when"], fmt
    preparer, columns = Preparer(plan, tmp_path), _columns(plan)
    assert columns.input_columns == plan.input_columns == ["n", "when"]
    pd = pytest.importorskip("pandas")
    for value in [rows[1]["when"], style(_day(100)), style(dt.datetime(1999, 12, 31, 23, 59)), *PROBES,
                  pd.Timestamp("2021-05-06 07:08:09")]:
        _same(preparer, columns, {"when": value, "n": 1.0})


#: number cells as a JSON request to ``mmcore serve`` may hold them (numbers as text, booleans, lists, objects)
JSON_CELLS = ["0.75", " 3 ", "1e3", "-0", "+4", "  ", "null", "NaN", "Infinity", False, 0, -2.5, "0x10", "3 4", [1.0],
              {"v": 1}, "\t1.5\n"]


def test_numbers_and_categories_are_derived_alike_and_bad_numbers_fail_alike(tmp_path: Path):
    rows = [{"n": f"{0.5 * k:.2f}" if k % 5 else "", "m": k % 7 - 3.0, "colour": ["red", "green", "blue"][k % 3],
             "size": ["S", "M"][k % 2], "y": ["a", "b"][k % 2]} for k in range(40)]
    plan = make_plan(infer_columns(rows, target="y", base=tmp_path), rows)
    assert plan.indicators == {"n": "n missing"} and plan.slots["tabular"]["categorical"] == ["colour", "size"]
    preparer, columns = Preparer(plan, tmp_path), _columns(plan)
    numbers = ["", None, "NA", "#N/A", "inf", "-Infinity", float("inf"), float("nan"), np.float32(1.5), np.int64(3),
               "1e3", " 2.5 ", 7, True, "abc", "1,5", *JSON_CELLS]
    categories = ["red", " red ", "purple", "", None, "null", 3, 2.5, np.str_("blue")]
    for number in numbers:
        for category in categories:
            _same(preparer, columns, {"n": number, "m": number, "colour": category, "size": category})
    _same(preparer, columns, {})  # every cell absent (a declared-missing column): medians and indicators


def test_file_and_text_file_cells_resolve_and_read_alike(tmp_path: Path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    (tmp_path / "notes").mkdir()
    for k in range(3):
        Image.fromarray(np.full((8, 8), 60 * k, dtype=np.uint8)).save(tmp_path / "img" / f"{k}.png")
    rows = []
    for k in range(24):
        note = tmp_path / "notes" / f"{k}.txt"
        note.write_text(["\ufeffsunny warm day", "rainy dark night", "cold morning wind"][k % 3] + f" {k}", encoding="utf-8")
        rows.append({"photo": f"img/{k % 3}.png" if k % 4 else "", "note": f"notes/{k}.txt", "x": float(k % 5),
                     "y": ["p", "q"][k % 2]})
    plan = make_plan(infer_columns(rows, target="y", base=tmp_path), rows)
    assert plan.text_files == ["note"] and plan.slots["photo"]["kind"] == "image"
    preparer, columns = Preparer(plan, tmp_path, allow_outside_paths=True), _columns(plan)
    (tmp_path / "notes" / "utf16.txt").write_bytes("\ufeffwarm".encode("utf-16"))
    probes = [{"photo": "img/1.png", "note": "notes/3.txt"}, {"photo": str(tmp_path / "img" / "2.png"), "note": "N/A"},
              {"photo": "img/gone.png", "note": "notes/gone.txt"}, {"photo": "img/../img/0.png", "note": "notes/utf16.txt"},
              {"photo": "", "note": ""}]
    for i, probe in enumerate(probes):
        row = {**probe, "x": 1.0}
        expected = preparer.sample(row, i)["inputs"]
        notes: list[str] = []
        got = columns.record(row, i, str(tmp_path), notes=notes)
        assert got == expected, probe
        assert [n for n in notes] == [f"row {i + 1}, column {c!r}: {why}" for j, c, why in preparer.dropped if j == i]
    with pytest.raises(frontend.ColumnsError, match=r"row 3, column 'photo': file 'img/gone.png' does not exist") as caught:
        columns.record({**probes[2], "x": 1.0}, 2, str(tmp_path), strict=True)
    assert caught.value.column == "photo"


@pytest.mark.parametrize("task", ["classification", "multilabel", "regression"])
def test_predictions_decode_to_the_users_values(task: str, tmp_path: Path):
    values = {"classification": lambda k: [1, 0, -1][k % 3], "multilabel": lambda k: ["a;b", "b", "c;a"][k % 3],
              "regression": lambda k: 0.37 * k * k}
    rows = [{"x": (k % 5) + 0.5, "y": values[task](k)} for k in range(40)]
    plan = make_plan(infer_columns(rows, target="y", base=tmp_path), rows)
    assert plan.task == task
    columns = _columns(plan)
    outputs = {"classification": [np.int64(0), np.int64(2)], "multilabel": [np.array([1, 0, 1]), np.array([0, 0, 0])],
               "regression": [np.array([2.5], dtype=np.float32), np.array([-1.25], dtype=np.float32)]}[task]
    for output in outputs:
        expected = decode_prediction(plan, output.tolist())
        assert columns.decode(output) == expected and type(columns.decode(output)) is type(expected)


def test_a_malformed_plan_is_refused_naming_the_field(tmp_path: Path):
    rows = [{"n": float(k) if k % 3 else "", "y": k % 2} for k in range(20)]
    plan = make_plan(infer_columns(rows, target="y", base=tmp_path), rows)
    good = json.loads(json.dumps(plan.to_json()))
    slots = {"tabular": {"kind": "tabular", "columns": ["n", "n missing"], "categorical": []}}
    frontend.Columns(good, slots)
    for broken, field in (({**good, "fill": {"n": "x"}}, "fill"), ({**good, "indicators": {"n": 3}}, "indicators"),
                          ({**good, "slots": {"tabular": {"kind": "sound"}}}, "slots.tabular.kind"),
                          ({**good, "dates": {"n": {}}}, "dates"), ({**good, "task": "ranking"}, "task"),
                          ({**good, "class_values": [0]}, "class_values"), ([], "")):
        with pytest.raises(ValueError, match=rf"manifest columns\.{field}"):
            frontend.Columns(broken, slots)


def test_a_video_cell_is_its_folder_of_frames_in_mmcores_order(tmp_path: Path):
    from PIL import Image

    from mmcore_plugins.io.check import video_frames

    clip = tmp_path / "clip"
    clip.mkdir()
    for name in ("frame_10.png", "frame_2.png", "frame_1.jpg", "notes.txt"):
        if name.endswith("txt"):
            (clip / name).write_text("not a frame")
        else:
            Image.fromarray(np.full((6, 6), len(name) * 9, dtype=np.uint8)).save(clip / name)
    assert frontend.video_frames(str(clip)) == video_frames(clip)
    slot = frontend.VideoSlot("clip", {"kind": "video", "modality": "video", "max_frames": 4,
                                       "frame": {"image_size": 4, "channels": 1, "background": 255}})
    assert slot.prepare(str(clip)).shape == (3, 1, 4, 4)
    with pytest.raises(ValueError, match="holds no frame images"):
        frontend.video_frames(str(tmp_path))  # a folder of folders


def test_serve_reads_a_number_cell_by_the_table_readers_rule_in_both_backends(tmp_path: Path):
    """``mmcore serve`` of a fit run checks a JSON cell of a number column by the rule of the table reader
    (``Backend._table_value`` through the slot's ``derive``): the run's derive (hook ``mmcore_table_slot``:
    mmcore's Preparer) and the export's (the front end's ``Columns.table_row``) accept the same cells as the
    same numbers -- a number's text is the number, empty / null / placeholder / non-finite cells are missing
    (the training median) -- and refuse the same cells with the same 422 naming ``records[0].<column>``."""
    from mmcore_plugins.autofit.fitting import PLAN_FILE
    from mmcore_plugins.autofit.tables import mmcore_table_slot
    from mmcore_plugins.deploy.backends import Backend, FieldError, SlotInfo

    rows = [{"n": f"{0.5 * k:.2f}" if k % 5 else "", "m": k % 7 - 3.0, "colour": ["red", "green"][k % 2], "y": k % 2}
            for k in range(30)]
    plan = make_plan(infer_columns(rows, target="y", base=tmp_path), rows)
    (tmp_path / PLAN_FILE).write_text(json.dumps({"plan": plan.to_json(), "columns": [{"name": c} for c in rows[0]]}))
    numeric, categorical, derive = mmcore_table_slot(run_dir=tmp_path, slot="tabular")
    columns = _columns(plan)
    slots = [SlotInfo("tabular", "tabular", "table", list(numeric), list(categorical), {}, "", derive=d)
             for d in (derive, lambda values: columns.table_row("tabular", values))]

    def outcome(slot, cell):
        try:
            row = Backend._table_value(slot, {"n": cell, "colour": "red"}, "records[0]")
            return "ok", slot.derive(row)
        except FieldError as exc:
            return exc.field, exc.reason

    for cell in ["", None, "N/A", "inf", float("nan"), 2, "abc", "1,5", True, *JSON_CELLS]:
        mmcore_side, front_side = (outcome(slot, cell) for slot in slots)
        assert mmcore_side == front_side, cell
        if frontend.as_number(cell) is not None:
            assert mmcore_side == ("ok", {**mmcore_side[1], "n": frontend.as_number(cell)}), cell
            assert mmcore_side[1]["n missing"] == 0.0, cell
        elif frontend.is_missing(cell) or frontend.is_non_finite(cell):
            assert mmcore_side[1]["n"] == plan.fill["n"] and mmcore_side[1]["n missing"] == 1.0, cell
        else:
            assert mmcore_side[0] == "records[0].n" and "expected a number" in mmcore_side[1], cell


def test_the_columns_a_row_may_hold_unread_are_the_training_tables_others(tmp_path: Path):
    """``Columns.ignored_columns`` (what ``mmcore serve EXPORT`` accepts and ignores): the training table's
    columns the model does not read -- the target, an id -- from the plan's ``table_columns``; an export
    written before it (no ``table_columns``) still ignores the target; a malformed one is refused."""
    rows = [{"id": f"K{k:03d}", "n": 0.5 * k, "colour": ["red", "green"][k % 2], "y": k % 2} for k in range(30)]
    plan = make_plan(infer_columns(rows, target="y", base=tmp_path), rows)
    columns = _columns(plan)
    assert columns.ignored_columns == ["y"]  # no table_columns: an older export
    spec = {**json.loads(json.dumps(plan.to_json())), "table_columns": list(rows[0])}
    slots = {"tabular": {"kind": "tabular", "columns": plan.tabular_columns(plan.slots["tabular"])[0],
                         "categorical": plan.tabular_columns(plan.slots["tabular"])[1]}}
    assert frontend.Columns(spec, slots).ignored_columns == ["id", "y"]
    with pytest.raises(ValueError, match="columns.table_columns"):
        frontend.Columns({**spec, "table_columns": "id,n"}, slots)


def test_the_front_ends_decimal_comma_rule_is_the_table_readers():
    """The front end's copy of the decimal-comma pattern (its hint for '1,5' in a number column) is mmcore's."""
    from mmcore_plugins.deploy import frontend
    from mmcore_plugins.io.tables import DECIMAL_COMMA

    assert frontend._DECIMAL_COMMA.pattern == DECIMAL_COMMA.pattern
