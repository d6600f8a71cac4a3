"""One manifest source (the main table, or a val/test file) and its rows, read through
:func:`mmcore_plugins.io.tables.read_table` on first use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmcore_plugins.io.tables import read_table


def read_rows(path: Path, *, encoding: str = "utf-8-sig") -> list[dict[str, Any]]:
    """Rows of a manifest file (see :func:`mmcore_plugins.io.tables.read_table`), as dicts."""
    return read_table(path, encoding=encoding)


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
            self._rows = read_table(self.source, encoding=self.encoding)
        return self._rows

    @rows.setter
    def rows(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows

    def key(self) -> Any:
        if self.path is None or not self.path.is_file():
            return None  # an in-memory table is never cached; a missing file is reported when read
        st = self.path.stat()
        return (str(self.path.resolve()), st.st_size, st.st_mtime_ns)

