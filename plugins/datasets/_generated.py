"""Generated data sets appear whole or not at all: shared by the data sets that synthesise their files."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def generated_folder(root: Path, *, prefix: str) -> Iterator[Path]:
    """A new temporary folder beside ``root`` to write a data set into.

    When the block ends normally the folder becomes ``root`` by one rename — or, when another
    process finished first, is removed and that process's copy kept; on any exception (Ctrl-C
    included) it is removed. So a loader that finds ``root`` never sees a half-written data set.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=root.parent))
    try:
        yield tmp
        if root.exists():  # another process finished first: keep its copy
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` as JSON Lines, UTF-8, non-ASCII kept readable."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
