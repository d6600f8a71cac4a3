"""One manifest source (the main table, or a val/test file) and its rows, read through
:func:`mmcore_plugins.io.tables.read_table` on first use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmcore_plugins.io.tables import read_table

#: A manifest's config names its columns and what each holds, so its cells are taken as written: no
#: decimal-comma guessing (``mmcore fit``, which shows what it read in its column table, guesses), which
#: would turn a multilabel cell ``"1,3"`` (labels 1 and 3, delimiter ``,``) into the number 1.3.
#: The delimiter is still sniffed (a ';' file reads; nothing it could turn into another value).
DECIMAL = "."


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
        self._rows: list[dict[str, Any]] | None = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The table's rows, read on first use (a cached parse never reads the file again)."""
        if self._rows is None:
            self._rows = read_table(self.source, encoding=self.encoding, decimal=DECIMAL)
        return self._rows

    @rows.setter
    def rows(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows

    def describe(self) -> dict[str, Any]:
        """``{"file", "sha256", "rows", "columns"}``: what a run records of this source (the digest of a
        file's bytes; None for an in-memory table), for ``--resume`` to tell what changed."""
        from mmcore.engine.data_record import file_digest

        columns = list(dict.fromkeys(key for row in self.rows for key in row))
        digest = file_digest(self.path) if self.path is not None and self.path.is_file() else None
        return {"file": self.name, "sha256": digest, "rows": len(self.rows), "columns": columns}

    def key(self) -> Any:
        if self.path is None or not self.path.is_file():
            return None  # an in-memory table is never cached; a missing file is reported when read
        st = self.path.stat()
        return (str(self.path.resolve()), st.st_size, st.st_mtime_ns)

