"""What the column table says about a newcomer's messy table (issue items 1, 4, 5, 6): decimal commas read as
numbers are said so, and a column of them that is not read so gets a hint; a few empty cells show ``<1%``
and are counted; unreadable files are named by row (the column table's note, ``autofit.json``, and
``--strict``'s one line listing them all, up to a bound); a class too rare for every split gets one warning."""

from __future__ import annotations

from pathlib import Path

import pytest
from autofit_helpers import write_png

from mmcore_plugins.autofit.fitting import _info_json
from mmcore_plugins.autofit.infer import (
    ColumnError,
    format_table,
    infer_columns,
    infer_input,
    note_table_format,
    split_warnings,
    strict_error,
    table_format_lines,
)
from mmcore_plugins.io.tables import TableFormat


def _by_name(infos):
    return {i.name: i for i in infos}


def test_one_empty_cell_in_many_shows_under_one_percent_and_is_counted(tmp_path):
    values = [f"{i * 1.5:.1f}" for i in range(219)] + ["n/a"]
    info = infer_input("weight", values, tmp_path)
    assert info.kind == "numeric" and "1 empty cell (row 220: 'n/a')" in info.why
    line = format_table([info]).splitlines()[2]
    assert " <1% " in line and " 0% " not in line
    full = infer_input("weight", [f"{i}.5" for i in range(220)], tmp_path)
    assert " 0% " in format_table([full]).splitlines()[2] and "empty" not in full.why


def test_decimal_commas_forced_numeric_or_inferred_as_strings_point_at_the_decimal_option(tmp_path):
    cells = [f"0,{100 + 3 * i}" for i in range(60)]
    with pytest.raises(ColumnError, match=r"cell '0,100' is not a number; .*--decimal ,"):
        infer_input("weight_kg", cells, tmp_path, "numeric")
    info = infer_input("weight_kg", cells, tmp_path)
    assert info.kind != "numeric" and "--decimal ," in info.why, "a column of decimal commas read as strings says how to read it"
    words = infer_input("note", ["3,5"] + [f"a long sentence number {i}" for i in range(59)], tmp_path)
    assert "--decimal" not in words.why


def test_decimal_columns_and_a_sniffed_delimiter_are_said_under_the_table():
    rows = [{"w": str(0.5 + i), "label": "ab"[i % 2]} for i in range(30)]
    infos = infer_columns(rows, target="label")
    fmt = TableFormat(sep=";", sep_detected=True, decimal=",", decimal_detected=True, decimal_columns=["w"])
    note_table_format(infos, fmt)
    assert "decimal commas read as numbers" in _by_name(infos)["w"].why
    lines = table_format_lines(fmt)
    assert "';'-separated" in lines[0] and "--sep" in lines[0] and "'w'" in lines[1] and "--decimal ." in lines[1]
    assert table_format_lines(TableFormat(sep=",")) == [], "a plain CSV adds nothing"


@pytest.fixture
def broken_files(tmp_path: Path):
    for i in range(3):
        write_png(tmp_path / f"{i}.png", i)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    rows = [{"photo": f"{i % 3}.png", "label": "ab"[i % 2]} for i in range(30)]
    for i in (3, 7, 11, 20):
        rows[i]["photo"] = "bad.png" if i == 7 else f"gone_{i}.png"
    return tmp_path, rows


def test_unreadable_files_are_named_in_the_note_autofit_json_and_strict(broken_files):
    folder, rows = broken_files
    photo = _by_name(infer_columns(rows, target="label", base=folder))["photo"]
    assert "4 missing/unreadable (row 4 'gone_3.png', row 8 'bad.png', row 12 'gone_11.png', ...)" in photo.why
    recorded = _info_json(photo)["details"]["unusable"]
    assert recorded["count"] == 4 and [e["row"] for e in recorded["listed"]] == [4, 8, 12, 21]
    assert "bad.png" in recorded["listed"][1]["why"] and "gone_20.png" in recorded["listed"][3]["why"]
    error = str(strict_error([photo]))
    assert error.startswith("4 unusable cells") and error.endswith("(--strict)") and "\n" not in error
    assert all(f"row {r}, column 'photo'" in error for r in (4, 8, 12, 21)), "every one is listed, not the first"
    bounded = str(strict_error([photo], limit=2))
    assert "row 12" not in bounded and "and 2 more" in bounded


def test_strict_fit_lists_them_before_any_column_table(broken_files, capsys):
    import mmcore

    folder, rows = broken_files
    table = folder / "t.csv"
    table.write_text("photo,label\n" + "".join(f"{r['photo']},{r['label']}\n" for r in rows), encoding="utf-8")
    with pytest.raises(ColumnError, match=r"^4 unusable cells.*row 21, column 'photo'.*\(--strict\)$"):
        mmcore.fit(str(table), target="label", strict=True, run_dir=folder / "run", time_limit="1m")
    assert "treated as missing" not in capsys.readouterr().out
    assert not (folder / "run").exists()


def test_a_class_too_rare_for_every_split_gets_one_warning_naming_where_its_rows_went():
    table = [{"y": "cat" if i % 2 else "dog", "split": "val" if i % 5 == 0 else "train"} for i in range(40)]
    table += [{"y": "axolotl", "split": "train"}, {"y": "axolotl", "split": "train"}]
    lines = split_warnings(table, "y", "split")
    assert len(lines) == 1 and "class 'axolotl' has 2 rows (2 in train), none in val" in lines[0]
    only_val = split_warnings([*table, {"y": "emu", "split": "val"}], "y", "split")
    assert any("'emu' has 1 row (1 in val), none in train" in line and "never sees it" in line for line in only_val)
    assert split_warnings(table[:40], "y", "split") == []


def test_fit_takes_encoding_sep_and_decimal_from_python_and_the_command_line(tmp_path):
    import argparse

    import mmcore
    from mmcore_plugins.autofit.command import mmcore_add_commands
    from mmcore_plugins.io.tables import TableError

    table = tmp_path / "t.csv"
    table.write_bytes("Größe;Stadt;y\n1,5;Köln;a\n2,5;Zürich;b\n".encode("latin-1"))
    with pytest.raises(TableError, match="--encoding cp1252"):
        mmcore.fit(str(table), target="nope", run_dir=tmp_path / "run")
    with pytest.raises(ColumnError, match=r"no column 'nope'.*Größe, Stadt, y"):  # read: the columns are named
        mmcore.fit(str(table), target="nope", encoding="latin-1", sep=";", decimal=",", run_dir=tmp_path / "run")
    parser = argparse.ArgumentParser()
    mmcore_add_commands(parser.add_subparsers())
    args = parser.parse_args(["fit", "t.csv", "--target", "y", "--sep", "\\t", "--decimal", ",", "--encoding", "cp1252"])
    assert (args.sep, args.decimal, args.encoding) == ("\t", ",", "cp1252")
    assert parser.parse_args(["fit", "t.csv", "--target", "y"]).sep is None
