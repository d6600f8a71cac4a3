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


class CellPaths:
    """:func:`resolve_cell_path` for the many cells of one table, at one ``lstat`` a cell.

    Each folder is resolved once (its links followed; a table's files share a few folders), then
    only the file's own entry is looked at: a link there is followed, anything else is the resolved
    folder plus the name -- the same path :func:`resolve_cell_path` gives, without walking every
    component of every path again.

    ``follow_links=False`` touches nothing on disk (``validate: none``): ``..`` and ``~`` are
    applied to the name as written and the result must lie inside the folder; a symbolic link
    *inside* the folder that points out of it is not seen here but when the file is read
    (:meth:`confirm`, one ``realpath`` per file read: the manifest's data set calls it for each
    file of a sample it hands out, and before reading a text file).

    Calling it raises what :func:`resolve_cell_path` raises.
    """

    def __init__(self, root: str | os.PathLike, *, allow_outside: bool = False, opt_in: str = "allow_outside_paths: true",
                 follow_links: bool = True) -> None:
        self.base = str(Path(root).expanduser().resolve())
        self.allow_outside, self.opt_in, self.follow_links = allow_outside, opt_in, follow_links
        self._folders: dict[str, str] = {}
        self._prefix = self.base if self.base.endswith(os.sep) else self.base + os.sep

    def __call__(self, cell: str) -> Path:
        return Path(self.text(cell))

    def text(self, cell: str) -> str:
        """The resolved path as a string (what ``__call__`` returns, without building a Path: a
        table of a million rows spent a fifth of its reading time in pathlib)."""
        if "\0" in cell:
            raise ValueError("embedded null byte")
        if (not self.follow_links and os.sep == "/" and cell[:1] not in ("/", "~", "") and "//" not in cell
                and "/." not in "/" + cell and not cell.endswith("/")):
            # A plain relative name ("images/0001/x.png": no ".", ".." or empty part, no "~"): what
            # expanduser + join + normpath give, without them (a million-row table: ~2 us a row).
            return self._prefix + cell
        expanded = os.path.expanduser(cell)
        if self.follow_links and ".." in expanded.replace("\\", "/").split("/"):
            # "link/.." is the link target's parent, not the folder holding the link: the full walk
            return str(resolve_cell_path(cell, self.base, allow_outside=self.allow_outside, opt_in=self.opt_in))
        joined = os.path.normpath(os.path.join(self.base, expanded))
        if self.follow_links:
            folder, name = os.path.split(joined)
            real = self._folders.get(folder)
            if real is None:
                real = self._folders[folder] = os.path.realpath(folder)
            joined = os.path.join(real, name) if name else real
            if name and os.path.islink(joined):
                joined = os.path.realpath(joined)
        if not self.allow_outside and not (joined == self.base or joined.startswith(self.base.rstrip(os.sep) + os.sep)):
            raise OutsidePathError(f"path {cell!r} escapes the table's folder {self.base!r} ({self.opt_in} permits it)")
        return joined

    def confirm(self, path: str) -> str:
        """``path`` (a result of :meth:`text`) with its links followed, checked to lie inside the
        folder when it is about to be read; raises :class:`OutsidePathError` otherwise."""
        return confirm_inside(path, (self.base,), allow_outside=self.allow_outside, opt_in=self.opt_in)


def confirm_inside(path: str, bases: tuple[str, ...] | list[str], *, allow_outside: bool = False,
                   opt_in: str = "allow_outside_paths: true") -> str:
    """``os.path.realpath(path)``, which must lie inside one of ``bases`` (resolved folders) unless
    ``allow_outside``: the check at the moment a file named by a table is read, when the table was
    read without looking at the disk (``validate: none``) and a link inside the folder may lead out.
    Raises :class:`OutsidePathError` naming the path, where it leads and ``opt_in``."""
    if allow_outside:
        return path
    real = os.path.realpath(path)
    if not any(real == base or real.startswith(base.rstrip(os.sep) + os.sep) for base in bases):
        raise OutsidePathError(f"{path!r} is a link leading to {real!r}, outside the table's folder "
                               f"{bases[0]!r} ({opt_in} permits it)")
    return real


__all__ = ["CellPaths", "OutsidePathError", "confirm_inside", "resolve_cell_path"]
