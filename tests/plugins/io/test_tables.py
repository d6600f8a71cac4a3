"""Tables read within bounds, whatever their format (issue 28): JSON Lines split at real line ends,
nesting and size limits, Parquet bounded by its footer before anything is materialised, streaming
batches, FIFOs refused, duplicate-column checks linear in the columns."""

from __future__ import annotations

import json
import os
import threading
import tracemalloc

import numpy as np
import pytest

from mmcore_plugins.io import tables
from mmcore_plugins.io.tables import TableError, iter_table, read_table, table_columns

LINE_BREAKS_INSIDE_TEXT = ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\r"]


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".json"])
def test_json_lines_are_split_at_newlines_only(tmp_path, suffix):
    """U+2028, U+0085 and the other characters str.splitlines breaks at are text inside a string."""
    rows = [{"text": f"before{c}after", "label": i} for i, c in enumerate(LINE_BREAKS_INSIDE_TEXT)]
    path = tmp_path / f"t{suffix}"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert "\u2028" in path.read_text(encoding="utf-8"), "written raw, not escaped"
    assert read_table(path) == rows
    assert [r for batch in iter_table(path, batch_rows=2) for r in batch] == rows
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows), encoding="utf-8")
    assert read_table(path) == rows, "Windows line ends"


@pytest.mark.parametrize("layout", ["line", "array"])
def test_json_nested_too_deeply_is_a_named_error_not_a_crash(tmp_path, layout):
    deep = "[" * 200_000 + "]" * 200_000
    path = tmp_path / ("t.jsonl" if layout == "line" else "t.json")
    path.write_text('{"a": 1}\n{"a": ' + deep + "}\n" if layout == "line" else "[" + deep + "]")
    with pytest.raises(TableError, match=r"(line 2|the file) nests JSON arrays or objects too deeply"):
        read_table(path)


def _parquet(path, **columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path, compression="zstd")
    return path


def test_a_parquet_declaring_more_rows_than_the_limit_is_refused_from_its_footer(tmp_path):
    """A 20-million-row Parquet of a few hundred KB used to become 20 million Python dicts."""
    import pyarrow as pa

    path = _parquet(tmp_path / "many.parquet", x=pa.array(np.zeros(20_000_000, dtype=np.int8)))
    assert path.stat().st_size < 2_000_000
    tracemalloc.start()
    try:
        with pytest.raises(TableError, match=r"many.parquet: 20000000 rows, more than the 10000000-row limit"):
            read_table(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"{peak / 2**20:.0f} MiB of Python objects before the refusal"
    assert len(next(iter_table(path, batch_rows=1000))) == 1000, "streamed, it is read batch by batch"


def test_parquet_cells_and_sizes_are_bounded_before_python_sees_them(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "MAX_CELL_BYTES", 1 << 20)
    big = "x" * (4 << 20)  # 4 MiB of one letter: a few KB compressed
    alone = _parquet(tmp_path / "alone.parquet", text=[big], label=["a"])
    assert alone.stat().st_size < 64 * 1024
    with pytest.raises(TableError, match=r"column 'text' holds \d+ bytes in 1 row\(s\) of row group 0: cells larger"):
        read_table(alone)
    hidden = _parquet(tmp_path / "hidden.parquet", text=[big] + ["short"] * 9, label=["a"] * 10)
    tracemalloc.start()
    try:
        with pytest.raises(TableError, match=r"column 'text' holds a cell of 4194304 bytes, more than the 1048576-byte limit"):
            read_table(hidden)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 << 20, "refused in Arrow, before the cell became a Python string"
    monkeypatch.setattr(tables, "MAX_CELL_BYTES", 64 << 20)
    monkeypatch.setattr(tables, "MAX_TABLE_BYTES", 1 << 20)
    with pytest.raises(TableError, match=r"holds \d+ bytes uncompressed, more than the 1048576-byte limit"):
        read_table(hidden)


def test_a_csv_field_over_the_cell_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "MAX_FIELD_CHARS", 1000)
    path = tmp_path / "t.csv"
    path.write_text('text,label\n"' + "y" * 2000 + '",a\n')
    with pytest.raises(TableError, match=r"t.csv: line 2: field larger than field limit \(1000\)"):
        read_table(path)


def test_a_text_table_over_the_row_limit_is_refused_while_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "MAX_TABLE_ROWS", 100)
    path = tmp_path / "t.csv"
    path.write_text("a\n" + "1\n" * 101)
    with pytest.raises(TableError, match="more than 100 rows"):
        read_table(path)
    assert sum(len(b) for b in iter_table(path, batch_rows=7)) == 101


def test_iter_table_keeps_one_batch_in_memory(tmp_path):
    path = tmp_path / "t.csv"
    with open(path, "w") as fh:
        fh.write("text,label\n")
        fh.writelines(f"row number {i} of a long table,{i % 3}\n" for i in range(30_000))
    tracemalloc.start()
    try:
        seen = 0
        for batch in iter_table(path, batch_rows=500):
            seen += len(batch)
        streamed = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        whole = read_table(path)
        read_whole = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == len(whole) == 30_000
    assert streamed < read_whole / 10, (streamed, read_whole)


def test_a_fifo_or_a_folder_named_as_a_table_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    outcome = {}

    def read():
        try:
            read_table(fifo)
        except TableError as exc:
            outcome["error"] = str(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(60)
    if reader.is_alive():  # the old behaviour: blocked on open() for ever; free it
        with open(fifo, "w"):
            pass
        pytest.fail("reading a FIFO named as a table blocked")
    assert "is a FIFO (named pipe), expected a regular file" in outcome["error"]
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(TableError, match="is a folder"):
        read_table(tmp_path / "dir.csv")


class _Name(str):
    """A column name that counts how often it is compared (hash lookups compare rarely)."""

    comparisons = 0

    def __eq__(self, other):
        type(self).comparisons += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_duplicate_column_checks_are_linear_in_the_columns():
    """A 100k-column table took minutes: each name was counted in the whole list (quadratic)."""
    names = [_Name(f"c{i}") for i in range(20_000)]
    _Name.comparisons = 0
    tables._check_names(names, "wide")
    assert _Name.comparisons < 2 * len(names)
    with pytest.raises(TableError, match=r"duplicate column name\(s\) \['c7'\]"):
        tables._check_names([*names, _Name("c7")], "wide")


def test_a_wide_csv_gives_its_columns_and_rows(tmp_path):
    width = 100_000
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(width)) + "\n" + ",".join("1" for _ in range(width)) + "\n")
    assert len(table_columns(path)) == width
    rows = read_table(path)
    assert len(rows) == 1 and len(rows[0]) == width


def test_recorded_encoding_yields_to_a_file_that_is_utf8(tmp_path):
    """A run's recorded legacy encoding (cp1252) is used for a table that is cp1252 or plain ASCII; a UTF-8 one
    (a BOM, or non-ASCII bytes that decode as UTF-8 -- also when the probe cuts a character) is read as UTF-8;
    a recorded UTF-8 and non-file sources are left alone."""
    from mmcore_plugins.io.tables import UTF8_PROBE_BYTES, recorded_encoding

    text = "id;Kunde\n1;Müller\n2;café\n"
    cases = {"cp.csv": text.encode("cp1252"), "ascii.csv": b"id;Kunde\n1;Mueller\n", "utf8.csv": text.encode("utf-8"),
             "bom.csv": b"\xef\xbb\xbf" + b"id\n1\n", "cut.csv": b"x" * (UTF8_PROBE_BYTES - 1) + "ü".encode()}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    got = {name: recorded_encoding(tmp_path / name, "cp1252") for name in cases}
    assert got == {"cp.csv": "cp1252", "ascii.csv": "cp1252", "utf8.csv": "utf-8-sig", "bom.csv": "utf-8-sig",
                   "cut.csv": "utf-8-sig"}
    assert recorded_encoding(tmp_path / "cp.csv", "utf-8") == "utf-8"
    assert recorded_encoding(tmp_path / "absent.csv", "latin-1") == "latin-1"
    assert recorded_encoding([{"a": 1}], "cp1252") == "cp1252"


def test_decimal_columns_known_before_are_read_so_whatever_their_share(tmp_path):
    """A column a run read with decimal commas (``decimal_columns``) is read so again in a table where too few of
    its cells are decimal-comma numbers to be found (one bad cell in three); not under ``decimal="."``."""
    path = tmp_path / "t.csv"
    path.write_text("a;b\n0,5;x\nviel;y\n2,25;z\n", encoding="utf-8")
    assert [r["a"] for r in read_table(path)] == ["0,5", "viel", "2,25"], "2 of 3 cells: under the share, not found"
    assert [r["a"] for r in read_table(path, decimal_columns=["a", "absent"])] == ["0.5", "viel", "2.25"]
    assert [r["a"] for r in read_table(path, decimal=".", decimal_columns=["a"])] == ["0,5", "viel", "2,25"]
    batches = list(iter_table(path, batch_rows=2, decimal=",", decimal_columns=["a"]))
    assert [r["a"] for batch in batches for r in batch] == ["0.5", "viel", "2.25"]
