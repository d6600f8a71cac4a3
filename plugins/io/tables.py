"""Tables (manifests, ``mmcore predict --data`` files) -> a list of ``{column: value}`` rows.

Read through the libraries made for each format: the :mod:`csv` module for CSV/TSV, :mod:`json`
for JSON Lines (and a ``.json`` file holding one array of objects), pyarrow for Parquet; a pandas
``DataFrame`` or a pyarrow ``Table`` given from Python is taken as it is. pandas is never
imported unless a DataFrame is given.

Every error names the file and, where there is one, the line: a decode error gives the line and
byte offset of the first bad byte, a duplicate column name (where the last one would otherwise
silently win) and a cell over the size limit are refused.

Cells come back as Python values: strings from CSV (an empty field is ``""``), JSON values from
JSON Lines, and from Parquet/DataFrames ``None`` for a missing cell (null, NaN, NaT, pd.NA all
become ``None``), lists for list columns, plain ``int``/``float``/``str``/``bool`` otherwise.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from mmcore.errors import UserInputError

#: Suffixes (lower case) read as each format.
CSV_SUFFIXES = frozenset({".csv", ".tsv", ".tab"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
TABLE_SUFFIXES = CSV_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES

#: The largest CSV field accepted (characters). csv's own default is 131072, which a long text cell
#: passes easily; a field beyond this one is a named error (it is most likely an unclosed quote).
MAX_FIELD_CHARS = 2**31 - 1

#: Manifests are read whole; a file larger than this is refused before it is read (1 GiB).
MAX_TABLE_BYTES = 1 << 30


class TableError(UserInputError):
    """A table file that cannot be read as rows; the message names the file (and line)."""


class TableNotFoundError(TableError, FileNotFoundError):
    """The table file does not exist (a FileNotFoundError too)."""


def read_table(source: Any, *, encoding: str = "utf-8-sig") -> list[dict[str, Any]]:
    """The rows of ``source`` as dicts ``{column: value}``, in file order.

    ``source``: a path (``.csv``/``.tsv``, ``.jsonl``/``.ndjson``/``.json``, ``.parquet``/``.pq``),
    a pandas ``DataFrame`` or a pyarrow ``Table``. ``encoding`` applies to the text formats
    (default ``utf-8-sig``: UTF-8, a leading byte-order mark dropped; ``cp1252`` for a CSV that
    Excel saved as "CSV" on Windows).

    Raises :class:`TableError` (a ``ValueError``) naming the file and line: undecodable bytes
    (with the byte offset), duplicate or unnamed non-empty columns, a CSV row with more fields
    than the header, a JSON line that is not an object, a field over ``MAX_FIELD_CHARS``;
    :class:`TableNotFoundError` (also a ``FileNotFoundError``) when the file does not exist.
    """
    if _is_dataframe(source):
        return _frame_rows(source)
    if type(source).__module__.startswith("pyarrow") and hasattr(source, "to_pylist"):
        return _arrow_rows(source, "the pyarrow table")
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"a table is a file path, a pandas DataFrame or a pyarrow Table, got {type(source).__name__}")
    path = Path(source).expanduser()
    if not path.is_file():
        raise TableNotFoundError(f"table {str(path)!r} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise TableError(f"{path}: expected a {', '.join(sorted(TABLE_SUFFIXES))} file, got {suffix or 'no suffix'}")
    if suffix in PARQUET_SUFFIXES:
        return _parquet_rows(path)
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise TableError(f"{path}: {path.stat().st_size} bytes, more than the {MAX_TABLE_BYTES}-byte limit for a table")
    text = _decode(path, encoding)
    if suffix in JSONL_SUFFIXES:
        return _jsonl_rows(path, text)
    return _csv_rows(path, text, delimiter="\t" if suffix in (".tsv", ".tab") else ",")


# ---------------------------------------------------------------------- text formats
def _decode(path: Path, encoding: str) -> str:
    try:
        codec = codecs.lookup(encoding).name
    except LookupError as exc:
        raise TableError(f"{path}: unknown encoding {encoding!r}") from exc
    data = path.read_bytes()
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : min(exc.end, exc.start + 4)]
        raise TableError(f"{path}: line {line}, byte offset {exc.start}: {bad!r} is not valid {encoding} ({exc.reason}); "
                         "set the manifest's encoding (e.g. encoding: cp1252 for a CSV saved by Excel) "
                         "or re-save the file as UTF-8") from exc
    return text.removeprefix("\ufeff")  # a byte-order mark is not part of the first column's name


def _csv_rows(path: Path, text: str, *, delimiter: str) -> list[dict[str, Any]]:
    previous = csv.field_size_limit()
    csv.field_size_limit(MAX_FIELD_CHARS)  # csv's 131072-character default refuses ordinary long texts
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        try:
            header = next(reader, None)
            if header is None:
                return []
            names = _check_header(path, header)
            rows = []
            for record in reader:
                if not record:  # a blank line
                    continue
                if len(record) > len(header):
                    extra = record[len(header):]
                    if any(cell.strip() for cell in extra):
                        raise TableError(f"{path}: line {reader.line_num} has {len(record)} fields, the header "
                                         f"{len(header)} ({', '.join(header)}); a value holding '{delimiter}' must be quoted")
                # A short row (Excel leaves trailing empty fields out) has empty cells.
                rows.append({name: (record[i] if i < len(record) else "") for i, name in names})
        except csv.Error as exc:
            raise TableError(f"{path}: line {reader.line_num}: {exc}") from exc
    finally:
        csv.field_size_limit(previous)
    unnamed = [i for i, name in enumerate(header) if not name.strip()]
    return rows if not unnamed else _drop_unnamed(path, rows)


def _check_header(path: Path, header: list[str]) -> list[tuple[int, str]]:
    """``(index, name)`` of the named columns; duplicates refused (csv.DictReader lets the last win)."""
    seen: dict[str, int] = {}
    duplicates = []
    for i, name in enumerate(header):
        if not name.strip():
            continue
        if name in seen:
            duplicates.append(f"{name!r} (columns {seen[name] + 1} and {i + 1})")
        seen.setdefault(name, i)
    if duplicates:
        raise TableError(f"{path}: duplicate column name(s) {', '.join(duplicates)}; rename them so each column has one meaning")
    # Unnamed columns are kept under a placeholder so that a non-empty cell there can be reported.
    return [(i, name if name.strip() else f"\0unnamed{i + 1}") for i, name in enumerate(header)]


def _drop_unnamed(path: Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for number, row in enumerate(rows, start=2):
        for key, value in row.items():
            if key.startswith("\0unnamed") and str(value).strip():
                raise TableError(f"{path}: column {key[len(chr(0)) + 7:]} has no name in the header but holds "
                                 f"{value!r:.40} (data row {number - 1}); name it in the header")
    return [{k: v for k, v in row.items() if not k.startswith("\0unnamed")} for row in rows]


def _jsonl_rows(path: Path, text: str) -> list[dict[str, Any]]:
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):  # one JSON array of objects
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TableError(f"{path}: not valid JSON: {exc}") from exc
        for i, row in enumerate(data, start=1):
            if not isinstance(row, dict):
                raise TableError(f"{path}: item {i} of the array must be a JSON object, got {type(row).__name__}")
        return data
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TableError(f"{path}: line {number} is not valid JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise TableError(f"{path}: line {number} must hold a JSON object, got {type(row).__name__} {line.strip()!r:.40}")
        rows.append(row)
    return rows


# ---------------------------------------------------------------------- columnar
def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # a dependency; a broken install still gets a clear line
        raise TableError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from exc
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise TableError(f"{path}: not a readable Parquet file: {exc}") from exc
    return _arrow_rows(table, str(path))


def _arrow_rows(table: Any, name: str) -> list[dict[str, Any]]:
    names = list(table.column_names)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TableError(f"{name}: duplicate column name(s) {duplicates}; rename them so each column has one meaning")
    return [{k: _plain(v) for k, v in row.items()} for row in table.to_pylist()]


def _is_dataframe(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")


def _frame_rows(frame: Any) -> list[dict[str, Any]]:
    names = [str(c) for c in frame.columns]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TableError(f"the DataFrame has duplicate column name(s) {duplicates}; rename them so each column has one meaning")
    return [{name: _plain(value) for name, value in zip(names, record, strict=True)}
            for record in frame.itertuples(index=False, name=None)]


def _plain(value: Any) -> Any:
    """A cell as a plain Python value; every kind of missing (None, NaN, NaT, pd.NA) as None."""
    if value is None:
        return None
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, (str, bool, int)):
        return value
    module = type(value).__module__
    if module.startswith("pandas") and type(value).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(value, "tolist") and module.startswith("numpy"):  # numpy scalars and arrays (list cells)
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


__all__ = ["TABLE_SUFFIXES", "TableError", "TableNotFoundError", "read_table"]
