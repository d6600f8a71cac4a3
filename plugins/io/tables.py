"""Tables (manifests, ``mmcore predict --data`` files) -> a list of ``{column: value}`` rows, or
batches of them (:func:`iter_table`: memory bounded by one batch, for tables of any length).

Read through the libraries made for each format: the :mod:`csv` module for CSV/TSV, :mod:`json`
for JSON Lines (and a ``.json`` file holding one array of objects), pyarrow for Parquet; a pandas
``DataFrame`` or a pyarrow ``Table`` given from Python is taken as it is. pandas is never
imported unless a DataFrame is given.

Every error names the file and, where there is one, the line: a decode error gives the line and
byte offset of the first bad byte, a duplicate column name (where the last one would otherwise
silently win) and a cell over the size limit are refused.

Bounds, the same for every format, checked before anything is materialised: a table read whole
(:func:`read_table`) holds at most :data:`MAX_TABLE_BYTES` of data -- the file's size for CSV and
JSON Lines, the uncompressed size its metadata declares for Parquet -- and :data:`MAX_TABLE_ROWS`
rows (Parquet's row count is read from its footer; a 250 KB file can declare 20 million rows);
a cell holds at most :data:`MAX_CELL_BYTES` (a Parquet column chunk whose rows average more is
refused from its metadata, every string cell is measured in Arrow before it becomes a Python
value, a CSV field by :mod:`csv`'s own limit). A path that is a FIFO, a device or a folder is
refused before it is opened. JSON Lines are split at ``\n`` only: U+2028, U+0085 and the other
characters Python's ``str.splitlines`` also breaks at are text inside a value.

Cells come back as Python values: strings from CSV (an empty field is ``""``), JSON values from
JSON Lines, and from Parquet/DataFrames ``None`` for a missing cell (null, NaN, NaT, pd.NA all
become ``None``) and each type as what it is: integers (nullable or not, any width) as ``int``,
booleans (nullable too) as ``bool``, floats as ``float``, decimals as :class:`decimal.Decimal`,
strings (large, dictionary-encoded / categorical too: the category's value) as ``str``, binary
as ``bytes``, timestamps as :class:`datetime.datetime` (time zone kept; pandas' and numpy's
nanoseconds cut to Python's microseconds), dates as :class:`datetime.date`, times of day as
:class:`datetime.time`, durations as :class:`datetime.timedelta`, lists (large too) as
``list``, structs as ``dict``.
"""

from __future__ import annotations

import codecs
import collections
import csv
import dataclasses
import io
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmcore.errors import UserInputError

#: Suffixes (lower case) read as each format.
CSV_SUFFIXES = frozenset({".csv", ".tsv", ".tab"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
TABLE_SUFFIXES = CSV_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES

#: A table read whole holds at most this much data (1 GiB): the file's size for text formats, the
#: declared uncompressed size for Parquet. :func:`iter_table` streams longer tables.
MAX_TABLE_BYTES = 1 << 30

#: A table read whole holds at most this many rows (a Python row costs a few hundred bytes).
MAX_TABLE_ROWS = 10_000_000

#: The largest cell accepted, in bytes (characters for CSV): what a text file may hold
#: (mmcore_plugins.io.text.MAX_TEXT_BYTES, 64 MiB); a CSV field beyond it is most likely an unclosed quote.
MAX_CELL_BYTES = 64 * 1024 * 1024
MAX_FIELD_CHARS = MAX_CELL_BYTES

#: Rows per batch of :func:`iter_table` unless asked otherwise.
BATCH_ROWS = 4096


#: The delimiters a CSV's first lines are sniffed for (:class:`csv.Sniffer`) when none is given.
SNIFF_DELIMITERS = ",;\t|"
#: Characters of a CSV's start the delimiter is sniffed from (whole lines only).
SNIFF_CHARS = 64 * 1024

#: A number written with a decimal comma: ``0,314``, ``-12,5``, ``1.234,5`` (a point groups thousands).
DECIMAL_COMMA = re.compile(r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d+")
#: A whole number (thousands grouped by points, or not): what a decimal-comma column's other cells may be.
_WHOLE = re.compile(r"[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+)")
#: Reads as US thousands grouping (``1,234``, ``12,345,678``) as well as a decimal comma: a comma-separated
#: file whose decimal-comma cells all look like this is left as it is (``decimal=","`` decides).
_THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2}(?:,\d{3})+")
#: Cells that are no value (the placeholders fit reads as missing): they do not count against a column.
_EMPTY = frozenset({"", "na", "n/a", "nan", "null", "none", "-", "?", "#n/a"})
#: Least share of a column's non-empty cells that must be decimal-comma or whole numbers.
DECIMAL_SHARE = 0.95


@dataclass
class TableFormat:
    """How a text table was read: ``sep`` (the CSV delimiter; None for JSON Lines, Parquet, frames),
    ``sep_detected`` (True: sniffed from its first lines, not given), ``decimal`` (``","``: the
    decimal-comma columns ``decimal_columns`` were read as numbers ``0,314`` -> ``"0.314"``; ``"."``:
    none), ``decimal_detected`` (True: found from the cells, not given) and ``encoding``."""

    sep: str | None = None
    sep_detected: bool = False
    decimal: str = "."
    decimal_detected: bool = False
    decimal_columns: list[str] = dataclasses.field(default_factory=list)
    encoding: str = "utf-8-sig"
    sep_given: str | None = None
    decimal_given: str | None = None

    def to_json(self) -> dict[str, Any]:
        """What a fit run records: what was used, and the options that read later tables the same way
        (``options``: the ``sep`` the user gave -- a sniffed one is sniffed again -- and ``decimal=","``
        once decimal commas were read)."""
        return {"sep": self.sep, "sep_detected": self.sep_detected, "decimal": self.decimal,
                "decimal_detected": self.decimal_detected, "decimal_columns": list(self.decimal_columns),
                "encoding": self.encoding, "options": self.options()}

    def options(self) -> dict[str, Any]:
        """``{encoding, sep, decimal}`` keyword arguments of :func:`read_table` that read another table of
        this kind the same way."""
        return {"encoding": self.encoding, "sep": self.sep_given,
                "decimal": "," if self.decimal_columns else self.decimal_given}


class TableError(UserInputError):
    """A table file that cannot be read as rows; the message names the file (and line)."""


class TableNotFoundError(TableError, FileNotFoundError):
    """The table file does not exist (a FileNotFoundError too)."""


def read_table(source: Any, *, encoding: str = "utf-8-sig", sep: str | None = None,
               decimal: str | None = None, decimal_columns: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The rows of ``source`` as dicts ``{column: value}``, in file order.

    ``source``: a path (``.csv``/``.tsv``, ``.jsonl``/``.ndjson``/``.json``, ``.parquet``/``.pq``),
    a pandas ``DataFrame`` or a pyarrow ``Table``. ``encoding`` applies to the text formats
    (default ``utf-8-sig``: UTF-8, a leading byte-order mark dropped; ``cp1252`` for a CSV that
    Excel saved as "CSV" on Windows). ``sep``: a CSV's delimiter (one character); None sniffs it
    from the first lines (:class:`csv.Sniffer`, among ``, ; tab |``; tab for ``.tsv``/``.tab``).
    ``decimal`` (CSV only): ``","`` reads decimal-comma number columns (``0,314``, ``1.234,5``) as
    numbers (cells ``"0.314"``, ``"1234.5"``), ``"."`` never; None finds them: a column whose
    non-empty cells are (at least :data:`DECIMAL_SHARE` of them) whole or decimal-comma numbers,
    one at least with a comma -- except, in a comma-separated file, when every such cell also reads
    as thousands grouping (``"1,234"``), which is left as it is. :func:`read_table_format` says
    what was found. ``decimal_columns`` (unless ``decimal="."``): columns known to hold decimal-comma
    numbers -- the ones a ``fit`` run read so -- read so in this table too, whatever their share of such
    cells here (a small new table with one bad cell: that cell is the row's error, not every row's).

    Raises :class:`TableError` (a ``ValueError``) naming the file and line: undecodable bytes
    (with the byte offset), duplicate or unnamed non-empty columns, a CSV row with more fields
    than the header, a JSON line that is not an object, a cell over ``MAX_CELL_BYTES``, a table
    over ``MAX_TABLE_BYTES`` or ``MAX_TABLE_ROWS`` (module docstring), a bad ``sep``/``decimal``;
    :class:`TableNotFoundError` (also a ``FileNotFoundError``) when the file does not exist.
    """
    return read_table_format(source, encoding=encoding, sep=sep, decimal=decimal, decimal_columns=decimal_columns)[0]


def read_table_format(source: Any, *, encoding: str = "utf-8-sig", sep: str | None = None,
                      decimal: str | None = None, decimal_columns: Sequence[str] = ()
                      ) -> tuple[list[dict[str, Any]], TableFormat]:
    """:func:`read_table`'s rows and the :class:`TableFormat` they were read with (the delimiter and
    decimal-comma columns found or given)."""
    fmt = TableFormat(encoding=encoding)
    rows: list[dict[str, Any]] = []
    for batch in _batches(source, encoding=encoding, batch_rows=65536, whole=True, sep=sep, decimal=decimal, fmt=fmt,
                          decimal_columns=decimal_columns):
        rows += batch
    return rows, fmt


def read_table_batches(source: Any, *, encoding: str = "utf-8-sig", sep: str | None = None, decimal: str | None = None,
                       batch_rows: int = 65536) -> Iterator[list[dict[str, Any]]]:
    """:func:`read_table`'s rows (the same values, the same errors and bounds: ``MAX_TABLE_BYTES`` before
    the first row, ``MAX_TABLE_ROWS`` as the rows come) in lists of at most ``batch_rows``, for a caller that
    keeps them in another form (:class:`mmcore.sample_columns.SampleColumns`) and never holds them all as
    dicts. Decimal-comma columns (``decimal`` None or ``","``) are decided on the first batch, as
    :func:`read_table`'s are."""
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ValueError(f"batch_rows must be a positive int, got {batch_rows!r}")
    return _batches(source, encoding=encoding, batch_rows=batch_rows, whole=True, sep=sep, decimal=decimal)


def iter_table(source: Any, *, encoding: str = "utf-8-sig", batch_rows: int = BATCH_ROWS, sep: str | None = None,
               decimal: str | None = None, decimal_columns: Sequence[str] = ()) -> Iterator[list[dict[str, Any]]]:
    """The rows of ``source`` (as :func:`read_table` reads them) in lists of at most ``batch_rows``.

    Streams the file: memory follows one batch, whatever the table's length (``MAX_TABLE_BYTES``
    and ``MAX_TABLE_ROWS`` apply to whole reads only; a cell is still at most ``MAX_CELL_BYTES``,
    and a Parquet row group at most ``MAX_TABLE_BYTES``). The header (or the file's checks) is read
    before the first batch is yielded; errors name the file and line as :func:`read_table`'s do.
    Decimal-comma columns (``decimal`` None or ``","``) are decided on the first batch.
    """
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ValueError(f"batch_rows must be a positive int, got {batch_rows!r}")
    return _batches(source, encoding=encoding, batch_rows=batch_rows, whole=False, sep=sep, decimal=decimal,
                    decimal_columns=decimal_columns)


def table_columns(source: Any, *, encoding: str = "utf-8-sig", sep: str | None = None) -> list[str]:
    """The column names of ``source``: the CSV header, Parquet's schema, the keys of every JSON line
    (a pass over the file, nothing kept), a DataFrame's columns."""
    if _is_dataframe(source):
        return [str(c) for c in source.columns]
    if type(source).__module__.startswith("pyarrow") and hasattr(source, "column_names"):
        return list(source.column_names)
    path = _table_path(source)
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return list(_parquet_file(path).schema_arrow.names)
    if suffix in CSV_SUFFIXES:
        codec = _codec(path, encoding)
        batches = _csv_batches(path, codec, batch_rows=1, delimiter=_delimiter(path, codec, encoding, sep)[0],
                               encoding=encoding, header_only=True)
        return next(batches, [])
    seen: dict[str, None] = {}
    for batch in _batches(path, encoding=encoding, batch_rows=BATCH_ROWS, whole=False):
        for row in batch:
            seen.update(dict.fromkeys(row))
    return list(seen)


def _check_sep(sep: str | None) -> None:
    if sep is not None and (not isinstance(sep, str) or len(sep) != 1 or sep in "\"\r\n" or sep.isalnum()):
        raise TableError(f"--sep must be one character that is not a letter, digit, quote or line break (e.g. ';' or "
                         f"'\\t'), got {sep!r}")


def _check_decimal(decimal: str | None) -> None:
    if decimal is not None and decimal not in (",", "."):
        raise TableError(f"--decimal must be ',' or '.', got {decimal!r}")


def _delimiter(path: Path, codec: str, encoding: str, sep: str | None) -> tuple[str, bool]:
    """A CSV's delimiter and whether it was sniffed: ``sep`` when given, tab for ``.tsv``/``.tab``, else
    :class:`csv.Sniffer` on the first lines among :data:`SNIFF_DELIMITERS` (``,`` when it cannot tell,
    or when what it finds is not in the header line)."""
    _check_sep(sep)
    if sep is not None:
        return sep, False
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t", False
    try:
        with _text(path, codec, "") as fh:
            sample = fh.read(SNIFF_CHARS)
    except UnicodeDecodeError:
        return ",", False  # the read itself names the bad byte
    sample = sample.removeprefix("\ufeff")
    if len(sample) == SNIFF_CHARS and "\n" in sample:
        sample = sample[:sample.rindex("\n") + 1]  # whole lines only
    header = sample.split("\n", 1)[0]
    try:
        found = csv.Sniffer().sniff(sample, delimiters=SNIFF_DELIMITERS).delimiter
    except csv.Error:
        found = ","
    if found not in header:  # a one-column table, or a guess from the data the header does not share
        found = "," if "," in header or not any(d in header for d in SNIFF_DELIMITERS) else next(
            d for d in SNIFF_DELIMITERS if d in header)
    return found, found != ","


def decimal_comma_columns(rows: list[dict[str, Any]], *, sep: str | None, forced: bool = False) -> list[str]:
    """The columns of ``rows`` (CSV cells: strings) that hold decimal-comma numbers (see
    :func:`read_table`'s ``decimal``). ``forced`` (``decimal=","``): a comma-separated file's cells
    that also read as thousands grouping count as decimal commas too."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    found = []
    for name in columns:
        cells = [c.strip() for c in (row.get(name) for row in rows) if isinstance(c, str) and c.strip().lower() not in _EMPTY]
        commas = [c for c in cells if DECIMAL_COMMA.fullmatch(c)]
        if not commas:
            continue
        whole = sum(1 for c in cells if _WHOLE.fullmatch(c))
        if len(commas) + whole < DECIMAL_SHARE * len(cells):
            continue
        if not forced and sep == "," and all(_THOUSANDS.fullmatch(c) for c in commas):
            continue  # "1,234": a thousand as likely as one point two three four
        found.append(name)
    return found


def _point(cell: Any) -> Any:
    """A decimal-comma (or point-grouped whole) number cell written with a decimal point; others as they are."""
    if not isinstance(cell, str):
        return cell
    text = cell.strip()
    if DECIMAL_COMMA.fullmatch(text) or ("." in text and _WHOLE.fullmatch(text)):
        return text.replace(".", "").replace(",", ".")
    return cell


def _decimal_batches(batches: Iterator[list[dict[str, Any]]], *, sep: str | None, decimal: str | None,
                     fmt: TableFormat, known: Sequence[str] = (), guess: bool = True) -> Iterator[list[dict[str, Any]]]:
    """``batches`` with the decimal-comma string cells of the decimal-comma columns written with a point
    (``guess``: columns found from the cells when ``decimal`` is None too, else only under ``decimal=","``)."""
    columns: list[str] | None = None
    for batch in batches:
        if columns is None:
            search = decimal == "," or (decimal is None and guess)
            columns = decimal_comma_columns(batch, sep=sep, forced=decimal == ",") if search else []
            if decimal != "." and known:  # read so before (a fit run's): so again, whatever their share here
                header = {name for row in batch for name in row}
                columns += [c for c in known if c in header and c not in columns]
            fmt.decimal_columns = columns
            fmt.decimal = "," if columns or decimal == "," else "."
            fmt.decimal_detected = decimal is None and bool(columns)
        if columns:
            for row in batch:
                for name in columns:
                    if name in row:
                        row[name] = _point(row[name])
        yield batch


def decimal_comma_cells(rows: list[dict[str, Any]], *, decimal: str | None = None,
                        decimal_columns: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Records (``{column: value}`` dicts from Python, a server's JSON) read as a table's rows are: under
    ``decimal=","`` the columns whose string cells are decimal-comma numbers, and the ``decimal_columns``
    a fit run read so (unless ``decimal="."``), have those cells written with a point (``"59,47"`` ->
    ``"59.47"``); numbers and other cells as they are. Returns new dicts; raises TableError for a bad ``decimal``."""
    _check_decimal(decimal)
    rows = [dict(r) for r in rows]
    return next(_decimal_batches(iter([rows]), sep=None, decimal=decimal, fmt=TableFormat(), known=decimal_columns,
                                 guess=False), rows)


def _table_path(source: Any) -> Path:
    from mmcore.engine.atomic import UnsafePathError, check_regular_file

    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"a table is a file path, a pandas DataFrame or a pyarrow Table, got {type(source).__name__}")
    path = Path(source).expanduser()
    if not path.exists():
        raise TableNotFoundError(f"table {str(path)!r} does not exist")
    try:
        check_regular_file(path, "table")
    except UnsafePathError as exc:
        raise TableError(str(exc)) from None
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise TableError(f"{path}: expected a {', '.join(sorted(TABLE_SUFFIXES))} file, got {suffix or 'no suffix'}")
    return path


def _batches(source: Any, *, encoding: str, batch_rows: int, whole: bool, sep: str | None = None,
             decimal: str | None = None, fmt: TableFormat | None = None,
             decimal_columns: Sequence[str] = ()) -> Iterator[list[dict[str, Any]]]:
    _check_sep(sep)
    _check_decimal(decimal)
    fmt = fmt if fmt is not None else TableFormat(encoding=encoding)
    fmt.sep_given, fmt.decimal_given = sep, decimal
    # A DataFrame's, a pyarrow table's, Parquet's and JSON Lines' string cells ("59,47") are read with
    # decimal commas as a CSV's are when the user says so (decimal=",") or a fit run read the column so
    # (decimal_columns); never guessed there (their numbers are typed: only a CSV's cells are all text).
    if _is_dataframe(source):
        rows = _frame_rows(source)
        frames = iter([rows[i:i + batch_rows] for i in range(0, len(rows), batch_rows)])
        return _decimal_batches(frames, sep=None, decimal=decimal, fmt=fmt, known=decimal_columns, guess=False)
    if type(source).__module__.startswith("pyarrow") and hasattr(source, "to_pylist"):
        return _decimal_batches(_arrow_batches(source, "the pyarrow table", batch_rows), sep=None, decimal=decimal, fmt=fmt,
                                known=decimal_columns, guess=False)
    path = _table_path(source)
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return _decimal_batches(_parquet_batches(path, batch_rows, whole), sep=None, decimal=decimal, fmt=fmt,
                                known=decimal_columns, guess=False)
    size = path.stat().st_size
    if whole and size > MAX_TABLE_BYTES:
        raise TableError(f"{path}: {size} bytes, more than the {MAX_TABLE_BYTES}-byte limit for a table read whole")
    codec = _codec(path, encoding)
    limit = MAX_TABLE_ROWS if whole else None
    if suffix in JSONL_SUFFIXES:
        return _limited(_decimal_batches(_jsonl_batches(path, codec, encoding, batch_rows), sep=None, decimal=decimal, fmt=fmt,
                                         known=decimal_columns, guess=False), path, limit)
    delimiter, fmt.sep_detected = _delimiter(path, codec, encoding, sep)
    fmt.sep = delimiter
    batches = _csv_batches(path, codec, batch_rows=batch_rows, delimiter=delimiter, encoding=encoding)
    return _limited(_decimal_batches(batches, sep=delimiter, decimal=decimal, fmt=fmt, known=decimal_columns), path, limit)


def _limited(batches: Iterator[list[dict[str, Any]]], path: Path, max_rows: int | None) -> Iterator[list[dict[str, Any]]]:
    count = 0
    for batch in batches:
        count += len(batch)
        if max_rows is not None and count > max_rows:
            raise TableError(f"{path}: more than {max_rows} rows, the limit for a table read whole; split it, or predict "
                             "it with mmcore predict --data (which streams it)")
        yield batch


#: Bytes of a text table looked at by :func:`recorded_encoding` for signs that it is UTF-8.
UTF8_PROBE_BYTES = 1 << 16


def recorded_encoding(source: Any, recorded: str) -> str:
    """The encoding to read ``source`` with when the user gave none and a run recorded ``recorded`` (the one
    its training table was read with, e.g. cp1252 for an Excel CSV): ``recorded``, unless ``recorded`` is a
    legacy single-byte codec and the file says it is UTF-8 -- a UTF-8 byte-order mark, or non-ASCII bytes in
    its first :data:`UTF8_PROBE_BYTES` that decode as UTF-8 (cp1252 / Latin-1 text almost never does: "ü"
    is one byte 0xFC there, never valid UTF-8) -- then ``utf-8-sig``, so that the next table saved as UTF-8
    is not read as mojibake. Not a text table file (Parquet, a DataFrame, a missing file): ``recorded``."""
    try:
        codec = codecs.lookup(recorded).name
    except LookupError:
        return recorded  # the reader names the unknown encoding
    if codec.startswith("utf") or not isinstance(source, (str, os.PathLike)):
        return recorded
    try:
        with open(Path(source).expanduser(), "rb") as fh:
            head = fh.read(UTF8_PROBE_BYTES)
    except OSError:
        return recorded
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.isascii():
        return recorded
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)  # a character cut at the end is fine
    except UnicodeDecodeError:
        return recorded
    return "utf-8-sig"


# ---------------------------------------------------------------------- text formats
def _codec(path: Path, encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError as exc:
        raise TableError(f"{path}: unknown encoding {encoding!r}") from exc


def _decode_error(path: Path, codec: str, encoding: str) -> TableError:
    """The first undecodable byte of ``path``, by line and byte offset (found again from the bytes:
    a streaming decoder reports offsets within its chunk)."""
    decoder = codecs.getincrementaldecoder(codec)()
    offset = lines = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                data = exc.object  # what the decoder held from the last chunk, then this chunk
                held = len(data) - len(chunk)
                at = offset - held + exc.start
                line = lines - data.count(b"\n", 0, held) + data.count(b"\n", 0, exc.start) + 1
                bad = data[exc.start:min(exc.end, exc.start + 4)]
                return TableError(f"{path}: line {line}, byte offset {at}: {bad!r} is not valid {encoding} ({exc.reason}); "
                                  "give the file's encoding (--encoding cp1252 for a CSV saved by Excel; in a manifest "
                                  "encoding: cp1252, from Python encoding='cp1252') or re-save the file as UTF-8")
            offset += len(chunk)
            lines += chunk.count(b"\n")
    return TableError(f"{path}: not valid {encoding}")


def _text(path: Path, codec: str, newline: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(open(path, "rb"), encoding=codec, errors="strict", newline=newline)


def _csv_batches(path: Path, codec: str, *, batch_rows: int, delimiter: str, encoding: str = "utf-8-sig",
                 header_only: bool = False) -> Iterator[list[Any]]:
    previous = csv.field_size_limit()
    with _text(path, codec, "") as fh:
        try:
            csv.field_size_limit(MAX_FIELD_CHARS)  # csv's 131072-character default refuses ordinary long texts
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return
            if header:
                header[0] = header[0].removeprefix("\ufeff")  # a byte-order mark is not part of the first name
            names = _check_header(path, header)
            if header_only:
                yield [n for _, n in names if not n.startswith("\0unnamed")]
                return
            unnamed = any(n.startswith("\0unnamed") for _, n in names)
            rows: list[dict[str, Any]] = []
            for record in reader:
                if not record:  # a blank line
                    continue
                if len(record) > len(header):
                    extra = record[len(header):]
                    if any(cell.strip() for cell in extra):
                        raise TableError(f"{path}: line {reader.line_num} has {len(record)} fields, the header "
                                         f"{len(header)} ({', '.join(header)}); a value holding '{delimiter}' must be quoted, or the "
                                         f"delimiter is not {delimiter!r} (give it: --sep)")
                # A short row (Excel leaves trailing empty fields out) has empty cells.
                row = {name: (record[i] if i < len(record) else "") for i, name in names}
                if unnamed:
                    row = _drop_unnamed(path, row, len(rows) + 1)
                rows.append(row)
                if len(rows) >= batch_rows:
                    yield rows
                    rows = []
            if rows:
                yield rows
        except csv.Error as exc:
            raise TableError(f"{path}: line {reader.line_num}: {exc}") from exc
        except UnicodeDecodeError:
            raise _decode_error(path, codec, encoding) from None
        finally:
            csv.field_size_limit(previous)


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


def _drop_unnamed(path: Path, row: dict[str, Any], number: int) -> dict[str, Any]:
    for key, value in row.items():
        if key.startswith("\0unnamed") and str(value).strip():
            raise TableError(f"{path}: column {key[len(chr(0)) + 7:]} has no name in the header but holds "
                             f"{value!r:.40} (data row {number}); name it in the header")
    return {k: v for k, v in row.items() if not k.startswith("\0unnamed")}


def _json_value(path: Path, text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TableError(f"{path}: {where} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise TableError(f"{path}: {where} nests JSON arrays or objects too deeply") from None


def _check_cells(path: Path, row: dict[str, Any], where: str) -> None:
    for key, value in row.items():
        if isinstance(value, str) and len(value) > MAX_CELL_BYTES:
            raise TableError(f"{path}: {where}, column {key!r}: a cell of {len(value)} characters, more than the "
                             f"{MAX_CELL_BYTES} a cell may hold")


def _jsonl_batches(path: Path, codec: str, encoding: str, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
    try:
        with _text(path, codec, "\n") as fh:  # lines end at "\n" only: U+2028, U+0085, \x0c are text
            first = fh.read(1)
            while first and first in " \t\r\n\ufeff":
                first = fh.read(1)
            if path.suffix.lower() == ".json" and first == "[":  # one JSON array of objects: read whole
                fh.seek(0)
                data = _json_value(path, fh.read().removeprefix("\ufeff"), "the file")
                if not isinstance(data, list):
                    raise TableError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
                for i, row in enumerate(data, start=1):
                    if not isinstance(row, dict):
                        raise TableError(f"{path}: item {i} of the array must be a JSON object, got {type(row).__name__}")
                    _check_cells(path, row, f"item {i}")
                for start in range(0, len(data), batch_rows):
                    yield data[start:start + batch_rows]
                return
            fh.seek(0)
            rows: list[dict[str, Any]] = []
            for number, line in enumerate(fh, start=1):
                if number == 1:
                    line = line.removeprefix("\ufeff")
                if not line.strip():
                    continue
                row = _json_value(path, line, f"line {number}")
                if not isinstance(row, dict):
                    raise TableError(f"{path}: line {number} must hold a JSON object, got {type(row).__name__} {line.strip()!r:.40}")
                if len(line) > MAX_CELL_BYTES:
                    _check_cells(path, row, f"line {number}")
                rows.append(row)
                if len(rows) >= batch_rows:
                    yield rows
                    rows = []
            if rows:
                yield rows
    except UnicodeDecodeError:
        raise _decode_error(path, codec, encoding) from None


# ---------------------------------------------------------------------- columnar
def _parquet_file(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # a dependency; a broken install still gets a clear line
        raise TableError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from exc
    try:
        return pq.ParquetFile(path)  # the footer only
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise TableError(f"{path}: not a readable Parquet file: {exc}") from exc


def _check_parquet(path: Path, parquet: Any, whole: bool) -> None:
    """The footer's row count and uncompressed sizes against the bounds (module docstring), before any page is read."""
    meta = parquet.metadata
    if whole and meta.num_rows > MAX_TABLE_ROWS:
        raise TableError(f"{path}: {meta.num_rows} rows, more than the {MAX_TABLE_ROWS}-row limit for a table read whole; "
                         "split it, or predict it with mmcore predict --data (which streams it)")
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        size = sum(max(0, group.column(c).total_uncompressed_size) for c in range(group.num_columns))
        total += size
        if size > MAX_TABLE_BYTES:
            raise TableError(f"{path}: row group {g} holds {size} bytes uncompressed, more than the {MAX_TABLE_BYTES}-byte "
                             "limit")
        for c in range(group.num_columns):
            chunk = group.column(c)
            if chunk.total_uncompressed_size > MAX_CELL_BYTES * max(1, group.num_rows):
                raise TableError(f"{path}: column {chunk.path_in_schema!r} holds {chunk.total_uncompressed_size} bytes "
                                 f"in {group.num_rows} row(s) of row group {g}: cells larger than the {MAX_CELL_BYTES}-byte "
                                 "limit of a cell")
    if whole and total > MAX_TABLE_BYTES:
        raise TableError(f"{path}: {total} bytes uncompressed, more than the {MAX_TABLE_BYTES}-byte limit for a table "
                         "read whole")


def _check_arrow_cells(batch: Any, name: str) -> None:
    """Every string / binary cell of an Arrow batch within MAX_CELL_BYTES, measured before Python sees it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for field, column in zip(batch.schema, batch.columns, strict=True):
        kind = field.type
        if pa.types.is_dictionary(kind):
            column, kind = column.dictionary, kind.value_type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            longest = pc.max(pc.binary_length(column)).as_py() if len(column) else None
            if longest is not None and longest > MAX_CELL_BYTES:
                raise TableError(f"{name}: column {field.name!r} holds a cell of {longest} bytes, more than the "
                                 f"{MAX_CELL_BYTES}-byte limit of a cell")


def read_parquet_table(path: str | os.PathLike) -> Any:
    """A Parquet file as a pyarrow Table, within the bounds of a table read whole (module docstring)."""
    path = _table_path(path)
    parquet = _parquet_file(path)
    _check_parquet(path, parquet, whole=True)
    try:
        table = parquet.read()
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors for damaged pages
        raise TableError(f"{path}: not a readable Parquet file: {exc}") from exc
    _check_arrow_cells(table, str(path))
    return table


def _parquet_batches(path: Path, batch_rows: int, whole: bool) -> Iterator[list[dict[str, Any]]]:
    parquet = _parquet_file(path)
    _check_parquet(path, parquet, whole)
    _check_names(list(parquet.schema_arrow.names), str(path))
    try:
        batches = parquet.iter_batches(batch_size=batch_rows)
        for batch in batches:
            _check_arrow_cells(batch, str(path))
            yield [{k: _plain(v) for k, v in row.items()} for row in batch.to_pylist()]
    except TableError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors for damaged pages
        raise TableError(f"{path}: not a readable Parquet file: {exc}") from exc


def _check_names(names: list[str], name: str) -> None:
    duplicates = sorted(n for n, k in collections.Counter(names).items() if k > 1)  # linear in the columns
    if duplicates:
        raise TableError(f"{name}: duplicate column name(s) {duplicates}; rename them so each column has one meaning")


def _arrow_batches(table: Any, name: str, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
    _check_names(list(table.column_names), name)
    for batch in table.to_batches(max_chunksize=batch_rows):
        yield [{k: _plain(v) for k, v in row.items()} for row in batch.to_pylist()]


def _is_dataframe(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and type(value).__module__.startswith("pandas")


def _frame_rows(frame: Any) -> list[dict[str, Any]]:
    names = [str(c) for c in frame.columns]
    duplicates = sorted(n for n, k in collections.Counter(names).items() if k > 1)  # linear in the columns
    if duplicates:
        raise TableError(f"the DataFrame has duplicate column name(s) {duplicates}; rename them so each column has one meaning")
    return [{name: _plain(value) for name, value in zip(names, record, strict=True)}
            for record in frame.itertuples(index=False, name=None)]


def _plain(value: Any) -> Any:
    """A cell as a plain Python value; every kind of missing (None, NaN, NaT, pd.NA) as None."""
    if value is None:
        return None
    if isinstance(value, float):  # numpy's float64 is a float subclass: made a plain float
        return None if math.isnan(value) else float(value)
    if type(value) in (str, bool, int):
        return value
    if isinstance(value, str):  # numpy's str_ and other subclasses: a plain str
        return str(value)
    module = type(value).__module__
    if module.startswith("pandas"):
        kind = type(value).__name__
        if kind in ("NAType", "NaTType"):
            return None
        if kind == "Timestamp":  # a datetime subclass; nanoseconds are beyond Python's datetime
            return value.to_pydatetime(warn=False)
        if kind == "Timedelta":
            return value.to_pytimedelta()
    if module.startswith("numpy") and type(value).__name__ in ("datetime64", "timedelta64"):
        import numpy as np

        if np.isnat(value):
            return None
        # .tolist() of a nanosecond datetime64 is an int: read at microseconds, Python's resolution
        return value.astype(f"{type(value).__name__}[us]").item()
    if hasattr(value, "tolist") and module.startswith("numpy"):  # numpy scalars and arrays (list cells)
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


__all__ = ["MAX_CELL_BYTES", "MAX_TABLE_BYTES", "MAX_TABLE_ROWS", "TABLE_SUFFIXES", "TableError", "TableNotFoundError",
           "TableFormat", "decimal_comma_cells", "decimal_comma_columns", "iter_table", "read_parquet_table", "read_table", "read_table_batches",
           "read_table_format", "table_columns"]
