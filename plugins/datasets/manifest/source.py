"""One manifest source (the main table, or a val/test file) and its rows, read through
:func:`mmcore_plugins.io.tables.read_table_batches` on first use, batch by batch into columns
(:class:`mmcore.sample_columns.SampleColumns`): a million-row table is never held as a list of dicts."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from mmcore_plugins.io.tables import read_table, read_table_batches

#: A manifest's config names its columns and what each holds, so its cells are taken as written: no
#: decimal-comma guessing (``mmcore fit``, which shows what it read in its column table, guesses), which
#: would turn a multilabel cell ``"1,3"`` (labels 1 and 3, delimiter ``,``) into the number 1.3.
#: The delimiter is still sniffed (a ';' file reads; nothing it could turn into another value).
DECIMAL = "."

#: Rows read (and encoded into columns) at a time: the transient dicts of one batch.
BATCH_ROWS = 65536


def read_rows(path: Path, *, encoding: str = "utf-8-sig") -> list[dict[str, Any]]:
    """Rows of a manifest file (see :func:`mmcore_plugins.io.tables.read_table`), as dicts."""
    return read_table(path, encoding=encoding, decimal=DECIMAL)


class Table:
    """One manifest source (the main one, or a val/test file) and its rows."""

    def __init__(self, source: Any, encoding: str, root: str | None, role: str = "") -> None:
        self.source = source
        if isinstance(source, (str, os.PathLike)):
            self.path: Path | None = Path(source).expanduser()
            self.name = str(self.path)
            self.root = Path(root).expanduser().resolve() if root else self.path.parent.resolve()
        else:
            self.path = None
            self.name = f"<{role + ' ' if role else ''}{type(source).__name__}>"
            self.root = Path(root).expanduser().resolve() if root else Path.cwd().resolve()
        self.encoding = encoding
        self._rows: Sequence[dict[str, Any]] | None = None
        self._columns: list[str] | None = None

    @property
    def rows(self) -> Sequence[dict[str, Any]]:
        """The table's rows (each a new ``{column: cell}`` dict), read on first use -- batch by batch into
        columns -- and kept as columns (a cached parse never reads the file again)."""
        if self._rows is None:
            from mmcore.sample_columns import SampleColumns

            rows, columns = SampleColumns(), {}
            for batch in read_table_batches(self.source, encoding=self.encoding, decimal=DECIMAL, batch_rows=BATCH_ROWS):
                first = batch[0]
                if not all(len(row) == len(first) and row.keys() == first.keys() for row in batch):
                    for row in batch:  # rows of JSON Lines may name different keys
                        columns.update(dict.fromkeys(row))
                columns.update(dict.fromkeys(first))
                rows.extend(batch)
            self._rows, self._columns = rows, list(columns)
        return self._rows

    @rows.setter
    def rows(self, rows: Sequence[dict[str, Any]]) -> None:
        self._rows, self._columns = rows, None

    @property
    def columns(self) -> list[str]:
        """Every column a row of the table names, in the order they first occur."""
        if self._columns is None:
            self._columns = list(dict.fromkeys(key for row in self.rows for key in row))
        return self._columns

    def values(self, column: str, indices: Iterable[int] | None = None) -> Iterator[Any]:
        """The cells of ``column`` (None where a row lacks it) of the rows ``indices`` (default every row), in
        that order, without building the rows."""
        rows = self.rows
        if hasattr(rows, "values"):  # held as columns: read column-wise
            return rows.values(column, indices)
        indices = range(len(rows)) if indices is None else indices
        return (rows[i].get(column) for i in indices)

    def describe(self) -> dict[str, Any]:
        """``{"file", "sha256", "rows", "columns"}``: what a run records of this source (the digest of a
        file's bytes; None for an in-memory table), for ``--resume`` to tell what changed."""
        from mmcore.engine.data_record import file_digest

        digest = file_digest(self.path) if self.path is not None and self.path.is_file() else None
        return {"file": self.name, "sha256": digest, "rows": len(self.rows), "columns": list(self.columns)}

    def key(self) -> Any:
        if self.path is None or not self.path.is_file():
            return None  # an in-memory table is never cached; a missing file is reported when read
        st = self.path.stat()
        return (str(self.path.resolve()), st.st_size, st.st_mtime_ns)

