"""Text files -> ``str``: UTF-8 (a byte-order mark is stripped), with errors that name the file and byte.

Only :class:`pathlib.Path`-like values and file names given explicitly as files are read here; a
plain ``str`` given to a text encoder is the text itself (see ``mmcore_plugins.encoders.text``).
"""

from __future__ import annotations

import codecs
import os

from mmcore_plugins.io.errors import TextReadError, describe, not_a_regular_file

#: Suffixes (lower case, with the dot) of files read as plain text.
TEXT_SUFFIXES: frozenset[str] = frozenset({".txt", ".text", ".md", ".markdown", ".rst"})

#: Files larger than this are refused rather than read whole into memory (text encoders keep at most a
#: few thousand tokens of a text anyway). 64 MiB.
MAX_TEXT_BYTES = 64 * 1024 * 1024

_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def read_text(path: str | os.PathLike, *, encoding: str = "utf-8", max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The contents of the text file ``path`` as ``str``.

    Decoded as ``encoding`` (default UTF-8). A leading byte-order mark is stripped; when
    ``encoding`` is UTF-8 and the file starts with a UTF-16 or UTF-32 byte-order mark (what
    Windows Notepad writes as "Unicode"), the mark decides the encoding — a BOM is unambiguous.
    Line endings are kept as they are.

    Raises :class:`TextReadError` naming the file when it is missing, a folder, larger than
    ``max_bytes`` (default 64 MiB), or not valid in the encoding (then the message gives the byte
    offset and line of the first bad byte, and the bytes there).
    """
    name = describe(path)
    try:
        encoding_name = codecs.lookup(encoding).name
    except LookupError as exc:
        raise TextReadError(f"unknown text encoding {encoding!r} for {name}", path=path) from exc
    try:
        if os.path.isdir(path):
            raise TextReadError(f"text file {name} is a folder, expected a file", path=path)
        problem = not_a_regular_file(path)
        if problem is not None and problem != "no such file":  # a FIFO would block open() for ever
            raise TextReadError(f"cannot read text file {name}: {problem}", path=path)
        size = os.path.getsize(path)
        if size > max_bytes:
            raise TextReadError(f"text file {name} is {size} bytes, more than the {max_bytes}-byte limit", path=path)
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise TextReadError(f"cannot read text file {name}: {exc.strerror or exc}", path=path) from exc
    if len(data) > max_bytes:  # grew since the size check
        raise TextReadError(f"text file {name} is more than the {max_bytes}-byte limit", path=path)
    if encoding_name in ("utf-8", "utf-8-sig"):
        for bom, codec in _BOMS:
            if data.startswith(bom):
                encoding_name = codec if codec != "utf-8" else "utf-8-sig"
                break
    try:
        text = data.decode(encoding_name)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : min(exc.end, exc.start + 4)]
        raise TextReadError(f"text file {name} is not valid {encoding_name}: byte offset {exc.start} (line {line}) "
                            f"holds {bad!r} ({exc.reason}); give the file's encoding or re-save it as UTF-8",
                            path=path) from exc
    return text.removeprefix("\ufeff")  # utf-16/32 codecs strip their BOM; a doubled one would remain
