"""Every file mmcore writes goes through here: atomically, never through a symbolic link, with an
unpredictable temporary name created exclusively in the target's own folder -- one file
(:func:`write_file`, :func:`atomic_write`) or a folder swapped in whole (:func:`atomic_directory`,
checkpoints). Its own module so that the run directory and the checkpoints depend on it and not
on each other.

The rules (docs/reliability.md, "Symbolic links, temporary files, locks and size bounds"):

* **Temporaries.** A file is written to ``.<name>.<8 random characters>.tmp``, created with
  ``O_CREAT | O_EXCL | O_NOFOLLOW`` in the target's folder: nobody can plant a link under a name
  that is not known in advance, and a name that exists (a link included) is never opened — another
  is drawn. It is fsynced, given the umask's permissions (``0o666 & ~umask``), renamed over the
  target, and the folder is fsynced: a reader sees the old file or the new one, never half of one.
  (The pattern is :data:`TEMPORARY`; a run directory removes what a killed process left.)
* **The target.** A symbolic link at the target's name is *replaced* by the new file, never written
  through: the link's target is untouched. ``replace=False`` (a file beside an output whose name
  the user did not type) refuses an existing name instead: the file is linked in with ``link(2)``,
  which fails atomically when the name is taken.
* **Folders.** The folders between a ``root`` and the file (a run directory's ``plots/``,
  ``robustness/``, a cache's sub-folders) are mmcore's own: each is opened relative to the one
  above with ``O_NOFOLLOW`` (``openat``), created when missing, and a symbolic link or a file in
  its place is refused with :class:`UnsafePathError` — so a linked ``plots/`` never receives a
  file, and cannot be swapped in between a check and the write. ``root`` itself, and the folders
  above it, are the user's path and are followed as given.
* **A full disk** or quota (ENOSPC/EDQUOT) raises :class:`CheckpointWriteError` (one line, exit 2);
  the previous file is kept and the temporary removed.

Readers of files mmcore did not write use :func:`check_regular_file`: a FIFO, a device or a
socket named where a file is expected is refused before it is opened (opening a FIFO blocks for
ever; ``/dev/zero`` never ends). JSON that mmcore wrote and reads back (sidecars, a fit's plan)
goes through :func:`read_json`: bounded in size, strict (no NaN/Infinity), nesting and encoding
errors as ``ValueError``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from mmcore.errors import UserInputError

#: What every temporary mmcore creates is named: ``.<name>.<8 random characters>.tmp``.
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"  # tempfile's: the same names a run directory cleans
_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: Whether folders can be opened relative to one another (POSIX); elsewhere paths are checked by lstat.
_AT = os.open in os.supports_dir_fd and os.replace in os.supports_dir_fd and bool(_O_NOFOLLOW)


class UnsafePathError(UserInputError):
    """A path mmcore was about to write through is a symbolic link, a file where a folder belongs,
    an existing file it must not replace, or not a regular file where one is read."""


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


def no_space_error(exc: BaseException, what: str, kept: str) -> CheckpointWriteError | None:
    """``exc`` as a :class:`CheckpointWriteError` when it is ENOSPC/EDQUOT, else None."""
    if isinstance(exc, OSError) and not isinstance(exc, CheckpointWriteError) and exc.errno in _NO_SPACE:
        error = CheckpointWriteError(f"{_NO_SPACE[exc.errno]} writing {what}; the previous {kept} is kept")
        error.errno = exc.errno
        return error
    return None


def temporary_name(name: str) -> str:
    """A fresh ``.<name>.<8 random characters>.tmp`` (:data:`TEMPORARY`)."""
    return f".{name}.{''.join(secrets.choice(_ALPHABET) for _ in range(8))}.tmp"


# ------------------------------------------------------------------------------ folders
def _relative_parts(folder: Path, root: Path) -> list[str]:
    try:
        parts = folder.relative_to(root).parts
    except ValueError:
        raise ValueError(f"{folder} is not inside {root}") from None
    if any(p in ("..", ".") for p in parts):
        raise ValueError(f"{folder}: '..' is not allowed below {root}")
    return list(parts)


def _refuse_folder(path: Path, exc: OSError | None = None) -> UnsafePathError:
    if path.is_symlink():
        return UnsafePathError(f"{path} is a symbolic link (to {os.readlink(path)}); mmcore writes its own files into "
                               "a folder of its own there and never through a link: remove the link")
    return UnsafePathError(f"{path} is not a folder ({'a file' if path.exists() else exc}); mmcore writes its own "
                           "folder there: move it away")


def _open_folder(folder: Path, root: Path | None) -> int:
    """An open file descriptor of ``folder``, every folder below ``root`` opened without following links
    (created when missing). ``root`` (default: ``folder`` itself) is followed as the user gave it."""
    root = folder if root is None else root
    parts = _relative_parts(folder, root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # a file (or a dangling link) where the folder belongs
        raise _refuse_folder(root, exc) from exc
    fd = os.open(root, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    here = root
    try:
        for part in parts:
            here = here / part
            for attempt in range(2):
                try:
                    child = os.open(part, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=fd)
                    break
                except FileNotFoundError:
                    if attempt:
                        raise
                    try:
                        os.mkdir(part, 0o777, dir_fd=fd)
                    except FileExistsError:  # created meanwhile (another process), or a dangling link
                        pass
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                        raise _refuse_folder(here, exc) from exc
                    raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def ensure_folder(folder: str | os.PathLike, *, root: str | os.PathLike | None = None) -> Path:
    """Create ``folder`` (and the folders between ``root`` and it) as real folders; refuse a
    symbolic link or a file in place of any of them (:class:`UnsafePathError`). Returns ``folder``.

    For a library that writes files of its own names into a folder (TensorBoard's event files).
    """
    folder = Path(folder)
    if _AT:
        os.close(_open_folder(folder, Path(root) if root is not None else None))
        return folder
    base = Path(root) if root is not None else folder
    base.mkdir(parents=True, exist_ok=True)
    here = base
    for part in _relative_parts(folder, base):
        here = here / part
        if here.is_symlink() or (here.exists() and not here.is_dir()):
            raise _refuse_folder(here)
        here.mkdir(exist_ok=True)
    return folder


# ------------------------------------------------------------------------------ files
def write_file(path: str | os.PathLike, content: bytes | str | Callable[[IO[bytes]], Any], *,
               root: str | os.PathLike | None = None, replace: bool = True) -> Path:
    """Write ``path`` atomically (module docstring): ``content`` is bytes, a str (written as UTF-8)
    or a function given the binary file object to write into. Returns ``path``.

    ``root``: the folder from which on every folder down to ``path``'s is mmcore's (opened without
    following links; default ``path``'s own folder). ``replace=False``: refuse when ``path`` exists.

    Raises :class:`UnsafePathError` (a linked or misplaced folder below ``root``; an existing ``path``
    with ``replace=False``), :class:`CheckpointWriteError` for a full disk, OSError otherwise.
    """
    path = Path(path)
    if isinstance(content, str):
        data = content.encode("utf-8")
        fill: Callable[[IO[bytes]], Any] = lambda fh: fh.write(data)  # noqa: E731
    elif isinstance(content, (bytes, bytearray, memoryview)):
        fill = lambda fh: fh.write(content)  # noqa: E731
    else:
        fill = content
    _atomic(path, root, replace, lambda fd, tmp: _fill_fd(fd, fill))
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], *, root: str | os.PathLike | None = None,
                 replace: bool = True) -> None:
    """Call ``write(tmp_path)``, then rename the temporary over ``path`` (the rules of :func:`write_file`).

    For a library that insists on a file name; ``tmp_path`` is an exclusively created, empty file
    in ``path``'s folder, and must still be that regular file after ``write`` (else refused).
    Prefer :func:`write_file`, which writes through the descriptor it created.
    """
    _atomic(Path(path), root, replace, lambda fd, tmp: write(tmp))


def _fill_fd(fd: int, fill: Callable[[IO[bytes]], Any]) -> None:
    fh = os.fdopen(os.dup(fd), "wb")
    try:
        fill(fh)
        fh.flush()
    finally:
        fh.close()


def _atomic(path: Path, root: str | os.PathLike | None, replace: bool, fill: Callable[[int, Path], Any]) -> None:
    name = path.name
    if not name or name in (".", ".."):
        raise UnsafePathError(f"{path} names no file")
    folder = path.parent
    try:
        dir_fd = _open_folder(folder, Path(root) if root is not None else None) if _AT else None
        if dir_fd is None:
            ensure_folder(folder, root=root)
    except OSError as exc:
        raise (no_space_error(exc, name, name) or exc) from exc
    tmp = fd = None
    try:
        for _ in range(100):
            candidate = temporary_name(name)
            try:
                fd = os.open(candidate if dir_fd is not None else folder / candidate,
                             os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600,
                             **({"dir_fd": dir_fd} if dir_fd is not None else {}))
                tmp = candidate
                break
            except FileExistsError:
                continue
        if fd is None or tmp is None:
            raise FileExistsError(errno.EEXIST, "no free temporary name", str(folder))
        created = os.fstat(fd)
        fill(fd, folder / tmp)
        current = os.stat(tmp, dir_fd=dir_fd, follow_symlinks=False) if dir_fd is not None else os.lstat(folder / tmp)
        if not stat.S_ISREG(current.st_mode) or (current.st_dev, current.st_ino) != (created.st_dev, created.st_ino):
            raise UnsafePathError(f"{folder / tmp}: the temporary file was replaced while it was written; nothing "
                                  f"was written to {path}")
        # The same inode as created (checked above): the descriptor reaches what the writer wrote.
        _fsync_fd(fd)
        os.fchmod(fd, 0o666 & ~current_umask())
        if replace:
            if dir_fd is not None:
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            else:
                os.replace(folder / tmp, path)
        else:
            try:
                if dir_fd is not None:
                    os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                else:
                    os.link(folder / tmp, path)
            except FileExistsError:
                raise UnsafePathError(f"{path} exists and mmcore did not write it; it is left as it is (move it, or "
                                      "choose another output name)") from None
            os.unlink(tmp, dir_fd=dir_fd) if dir_fd is not None else os.unlink(folder / tmp)
        tmp = None
        if dir_fd is not None:
            _fsync_fd(dir_fd)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp, dir_fd=dir_fd) if dir_fd is not None else os.unlink(folder / tmp)
            except OSError:
                pass
        error = no_space_error(exc, name, name)
        if error is not None:
            raise error from exc
        raise
    finally:
        if fd is not None:
            os.close(fd)
        if dir_fd is not None:
            os.close(dir_fd)


def _fsync_fd(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.EROFS):  # some file systems cannot fsync a folder
            raise


# ------------------------------------------------------------------------------ folders swapped in whole
def write_fsynced(path: Path, write: Callable[[Any], Any]) -> None:
    """Open ``path`` for binary writing, call ``write(file)``, flush and fsync; an OSError
    raised inside names ``path`` (``exc.filename``). Not atomic by itself: for the files of a fresh
    private folder (:func:`atomic_directory`'s ``write``), which is swapped in whole."""
    try:
        with open(path, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
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
        raise (no_space_error(exc, f"{path.name}/", "checkpoint") or exc) from exc
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
        error = no_space_error(exc, f"{path.name}/{name}", "checkpoint")
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


# ------------------------------------------------------------------------------ reading
def check_regular_file(path: str | os.PathLike, what: str = "file") -> os.stat_result:
    """The stat of ``path`` (links followed) when it is a regular file; :class:`UnsafePathError`
    naming it when it is a FIFO, a device, a socket or a folder (FileNotFoundError when missing).

    Opening a FIFO blocks until someone writes to it, and a device such as ``/dev/zero`` never
    ends: a path cell naming one must be refused before it is opened.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "not a regular file")
        raise UnsafePathError(f"{what} {str(path)!r} is {kind}, expected a regular file")
    return st


def read_json(path: str | os.PathLike, *, max_bytes: int, what: str = "file") -> Any:
    """The JSON value in ``path``, read only when it is a regular file of at most ``max_bytes``.

    Strict: ``NaN``/``Infinity`` are refused (they are not JSON). Raises :class:`UnsafePathError`
    for a FIFO/device/folder, FileNotFoundError, and ValueError (naming the file) for a file too
    large, not UTF-8, not JSON, or nested too deeply for the parser.
    """
    size = check_regular_file(path, what).st_size
    if size > max_bytes:
        raise ValueError(f"{path} is {size} bytes, more than the {max_bytes}-byte limit of a {what}")

    def refuse(name: str) -> Any:
        raise ValueError(f"non-finite number {name}")

    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    try:
        return json.loads(data.decode("utf-8"), parse_constant=refuse)
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


#: The old private name (kept for callers of it).
_no_space = no_space_error

__all__ = ["TEMPORARY", "CheckpointWriteError", "UnsafePathError", "atomic_directory", "atomic_write", "check_regular_file",
           "current_umask", "ensure_folder", "no_space_error", "read_json", "temporary_name", "write_file", "write_fsynced"]
