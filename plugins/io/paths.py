"""The one rule for file paths in a table's cells (``mmcore train``'s manifest and ``mmcore fit``).

A cell names a file relative to the table's folder (or absolutely; ``~`` is the home folder). The
path is resolved -- ``..`` and symbolic links followed -- and must still lie inside the table's
folder: a table shared with you cannot make mmcore read ``../../.ssh/id_rsa`` or ``/etc/passwd``
(and copy it into a run: ``fit`` reads text files into its prepared table). Both commands take the
same opt-in to read files elsewhere: ``allow_outside_paths: true`` in a manifest's options,
``--allow-outside-paths`` for ``mmcore fit`` (``allow_outside_paths=True`` from Python).
"""

from __future__ import annotations

import os
from pathlib import Path

from mmcore.errors import UserInputError


class OutsidePathError(UserInputError):
    """A cell's path leads outside the table's folder and reading outside was not allowed."""


def resolve_cell_path(cell: str, root: str | os.PathLike, *, allow_outside: bool = False,
                      opt_in: str = "allow_outside_paths: true") -> Path:
    """The absolute, resolved path ``cell`` names relative to the table's folder ``root``.

    Raises :class:`OutsidePathError` (naming the cell, the folder and ``opt_in``, the option that
    permits it) when the resolved path is outside ``root`` and ``allow_outside`` is False; OSError
    or ValueError for a name the system cannot resolve (a NUL byte, a loop of links).
    """
    base = Path(root).expanduser().resolve()
    path = (base / Path(cell).expanduser()).resolve()
    if not allow_outside and not path.is_relative_to(base):
        raise OutsidePathError(f"path {cell!r} escapes the table's folder {str(base)!r} ({opt_in} permits it)")
    return path


__all__ = ["OutsidePathError", "resolve_cell_path"]
