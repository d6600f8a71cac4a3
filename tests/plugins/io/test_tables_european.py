"""European and other non-default CSVs (issue: a newcomer's messy table, items 1-3): the delimiter is
sniffed from the first lines (``;``, tab, ``|``) when none is given, decimal-comma number columns are read
as numbers -- and said so (:class:`TableFormat`) -- the user's ``sep``/``decimal`` decide when given, and
the errors point at the option that fixes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmcore_plugins.io.tables import (
    TableError,
    decimal_comma_columns,
    iter_table,
    read_table,
    read_table_format,
    table_columns,
)


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding, newline="")
    return path


SEMICOLON = "id;weight;note;label\nA1;0,314;grey cat, small;cat\nA2;12,5;;dog\nA3;3;big, loud dog;dog\nA4;n/a;x;cat\n"


def test_a_semicolon_csv_is_sniffed_and_its_decimal_commas_read_as_numbers(tmp_path):
    rows, fmt = read_table_format(_write(tmp_path / "t.csv", SEMICOLON))
    assert [r["weight"] for r in rows] == ["0.314", "12.5", "3", "n/a"]
    assert rows[0]["note"] == "grey cat, small", "a comma inside a ';' file is text"
    assert (fmt.sep, fmt.sep_detected, fmt.decimal, fmt.decimal_detected, fmt.decimal_columns) == (";", True, ",", True, ["weight"])
    assert fmt.options() == {"encoding": "utf-8-sig", "sep": None, "decimal": ","}, "a sniffed delimiter is sniffed again"
    assert table_columns(tmp_path / "t.csv") == ["id", "weight", "note", "label"]


@pytest.mark.parametrize("sep", ["\t", "|"])
def test_tab_and_pipe_in_a_csv_are_sniffed(tmp_path, sep):
    text = sep.join(["a", "b", "label"]) + "\n" + "\n".join(sep.join([f"{i}", f"x{i}", "yes"]) for i in range(5)) + "\n"
    rows, fmt = read_table_format(_write(tmp_path / "t.csv", text))
    assert fmt.sep == sep and rows[2] == {"a": "2", "b": "x2", "label": "yes"}


def test_a_quoted_decimal_comma_in_a_comma_csv_is_a_number_and_a_plain_csv_is_untouched(tmp_path):
    text = 'id,weight,label\nA1,"0,314",cat\nA2,"1.234,5",dog\nA3,7,dog\nA4,"1.200",cat\n'
    rows, fmt = read_table_format(_write(tmp_path / "t.csv", text))
    assert [r["weight"] for r in rows] == ["0.314", "1234.5", "7", "1200"], "points group thousands in such a column"
    assert fmt.sep == "," and not fmt.sep_detected and fmt.decimal_columns == ["weight"]
    plain = read_table_format(_write(tmp_path / "p.csv", "id,weight\nA,0.5\nB,1.25\n"))
    assert plain[0][1]["weight"] == "1.25" and plain[1].decimal == "." and plain[1].decimal_columns == []


def test_thousands_grouping_in_a_comma_csv_is_left_alone_unless_decimal_comma_is_given(tmp_path):
    path = _write(tmp_path / "t.csv", 'id,amount\nA,"1,234"\nB,"12,500"\nC,7\n')
    assert [r["amount"] for r in read_table(path)] == ["1,234", "12,500", "7"], "a thousand as likely as 1.234"
    assert [r["amount"] for r in read_table(path, decimal=",")] == ["1.234", "12.500", "7"]
    semicolon = _write(tmp_path / "s.csv", "id;amount\nA;1,234\nB;7\n")
    assert [r["amount"] for r in read_table(semicolon)] == ["1.234", "7"], "in a ';' file a comma is the decimal mark"


def test_decimal_point_keeps_cells_as_written_and_text_columns_are_never_converted(tmp_path):
    path = _write(tmp_path / "t.csv", SEMICOLON)
    assert [r["weight"] for r in read_table(path, decimal=".")] == ["0,314", "12,5", "3", "n/a"]
    words = [{"note": w} for w in ["3,5", "a cat", "two dogs", "a bird", "fish"]]
    assert decimal_comma_columns(words, sep=";") == [], "one decimal comma among words is text"


def test_the_users_sep_decides_and_a_bad_one_is_refused(tmp_path):
    path = _write(tmp_path / "t.csv", "a;b,c\n1;2,3\n")
    assert read_table(path, sep=",") == [{"a;b": "1;2", "c": "3"}]
    with pytest.raises(TableError, match="--sep must be one character"):
        read_table(path, sep=";;")
    with pytest.raises(TableError, match="--decimal must be ',' or '.'"):
        read_table(path, decimal=";")


def test_a_one_column_csv_and_a_tsv_keep_their_delimiters(tmp_path):
    assert read_table(_write(tmp_path / "one.csv", "text\nhello; there\nbye\n")) == [{"text": "hello; there"}, {"text": "bye"}]
    # a tab-separated file's "1,5" is a decimal comma, as in a ";" file
    assert read_table(_write(tmp_path / "t.tsv", "a\tb\n1,5\tx;y\n")) == [{"a": "1.5", "b": "x;y"}]


def test_streaming_decides_decimal_columns_on_the_first_batch_and_keeps_them(tmp_path):
    lines = "".join(f"R{i};{i},5;{i}\n" for i in range(10))
    batches = list(iter_table(_write(tmp_path / "t.csv", "id;w;n\n" + lines), batch_rows=3))
    assert len(batches) == 4 and [r["w"] for b in batches for r in b][-1] == "9.5"
    assert [r["n"] for b in batches for r in b][:3] == ["0", "1", "2"], "a whole-number column is left as written"


def test_a_misread_delimiter_and_a_wrong_encoding_name_the_option_that_fixes_them(tmp_path):
    path = _write(tmp_path / "t.csv", "a,b\n1,2,3\n")
    with pytest.raises(TableError, match=r"line 2 has 3 fields.*--sep"):
        read_table(path)
    latin = _write(tmp_path / "l.csv", "name;city\nJosé;Zürich\n", encoding="latin-1")
    with pytest.raises(TableError, match=r"line 2, byte offset \d+.*--encoding cp1252"):
        read_table(latin)
    assert read_table(latin, encoding="latin-1") == [{"name": "José", "city": "Zürich"}]
