"""Errors raised while reading users' media files. Each message names the file and says what was
expected and what came; all are ``ValueError`` subclasses (bad input, not a bug) and mmcore errors
(the CLI prints them as one line, exit 2)."""

from __future__ import annotations

import os
import stat

from mmcore.errors import InputReadError


class MediaError(InputReadError):
    """A media file (or in-memory image / waveform) cannot be read as what it was given as (an
    :class:`mmcore.errors.InputReadError`: training treats it by ``trainer.unreadable_inputs``).

    ``path`` is the file concerned (``None`` for in-memory values); the message already names it.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        super().__init__(message)


class ImageReadError(MediaError):
    """An image file or array cannot be read (unknown format, truncated, decompression bomb, NaN, ...)."""


class AudioReadError(MediaError):
    """An audio file or waveform cannot be read (unknown format, absurd header, non-finite samples, ...)."""


class TextReadError(MediaError):
    """A text file cannot be read (missing, too large, not valid in the given encoding)."""


def not_a_regular_file(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be opened as a media file, or None when it is a regular file (links followed).

    "no such file", "it is a folder", "it is a FIFO (named pipe)", "it is a device", "it is a socket":
    a FIFO blocks its reader until someone writes to it and a device such as ``/dev/zero`` never
    ends, so such a path is refused before it is opened.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "no such file"
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte, no permission
        return getattr(exc, "strerror", None) or str(exc)
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "it is a folder"
    if stat.S_ISFIFO(mode):
        return "it is a FIFO (named pipe), not a regular file"
    if stat.S_ISSOCK(mode):
        return "it is a socket, not a regular file"
    return "it is a device, not a regular file"


def is_empty_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file of 0 bytes (an interrupted copy or download, a placeholder): said as such,
    not as a file of an unknown format."""
    try:
        return os.stat(path).st_size == 0
    except (OSError, ValueError, TypeError):
        return False


def describe(path: str | os.PathLike) -> str:
    """``'path'`` quoted the way every media error names its file."""
    return repr(os.fspath(path))
