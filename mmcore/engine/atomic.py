"""Writing files whole or not at all: :func:`atomic_write` (one file), :func:`atomic_directory` (a folder
swapped in by renames), :func:`write_file` (fsynced). A full disk or quota (ENOSPC, EDQUOT) raises
:class:`CheckpointWriteError` and keeps the previous file or folder untouched. Files and folders get
the permissions the process's umask gives any new file (``0o666 & ~umask``, folders ``0o777 & ~umask``).

Its own module so that the run directory (:mod:`~mmcore.engine.rundir`, which writes its marker) and
the checkpoints (:mod:`~mmcore.engine.checkpoint`, which use the run directory's file names) depend on
it and not on each other.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmcore.errors import UserInputError

__all__ = ["CheckpointWriteError", "atomic_directory", "atomic_write", "current_umask", "write_file"]


class CheckpointWriteError(UserInputError, OSError):
    """A file could not be written for lack of space (ENOSPC) or quota (EDQUOT); the previous one is kept.

    ``str()`` is the one-line message; ``errno`` the cause's."""


def current_umask() -> int:
    """The process's umask, read without changing it where Linux shows it (/proc/self/status)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and put back (not thread-safe; done rarely)
    os.umask(mask)
    return mask


#: The umask when mmcore was imported (kept for callers of the old name; writes read it afresh).
_UMASK = current_umask()
_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


def _no_space(exc: BaseException, what: str, kept: str) -> CheckpointWriteError | None:
    if isinstance(exc, OSError) and not isinstance(exc, CheckpointWriteError) and exc.errno in _NO_SPACE:
        error = CheckpointWriteError(f"{_NO_SPACE[exc.errno]} writing {what}; the previous {kept} is kept")
        error.errno = exc.errno
        return error
    return None


def write_file(path: Path, write: Callable[[Any], Any]) -> None:
    """Open ``path`` for binary writing, call ``write(file)``, flush and fsync; an OSError
    raised inside names ``path`` (``exc.filename``)."""
    try:
        with open(path, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: a crash mid-write never replaces a good file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise (_no_space(exc, path.name, path.name) or exc) from exc
    os.close(fd)
    try:
        write(Path(tmp))
        _fsync(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
        _fsync(path.parent)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        error = _no_space(exc, path.name, path.name)
        if error is not None:
            raise error from exc
        raise


def atomic_directory(path: Path, write: Callable[[Path], Any]) -> Path:
    """Fill a fresh temporary folder with ``write(folder)``, then swap it in as ``path``.

    The swap is two renames (old -> ``.name.old``, new -> name); a reader finding no ``path``
    but a ``.name.old`` uses that one (:func:`resolve_checkpoint`), so there is always a
    complete checkpoint on disk. Raises CheckpointWriteError (the old folder kept) when the
    disk is full.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise (_no_space(exc, f"{path.name}/", "checkpoint") or exc) from exc
    old = path.parent / f".{path.name}.old"
    try:
        write(tmp)
        umask = current_umask()
        for item in tmp.iterdir():
            if item.is_file():
                _fsync(item)
                os.chmod(item, 0o666 & ~umask)
        os.chmod(tmp, 0o777 & ~umask)
        _fsync(tmp)
        if old.exists():
            if path.exists():
                shutil.rmtree(old)
            else:  # a previous swap died between its renames: the old folder is the good one
                os.replace(old, path)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        name = Path(exc.filename).name if isinstance(exc, OSError) and exc.filename else ""
        error = _no_space(exc, f"{path.name}/{name}", "checkpoint")
        if error is not None:
            raise error from exc
        raise
    return path


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (after renames), to disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):  # some file systems cannot fsync a folder
            raise
    finally:
        os.close(fd)
