"""What a run was trained on -- rows per split, the class names, and each source file's digest, rows and
columns -- recorded in the run when it starts (``data_summary.json``) and compared when it is resumed.

``--resume`` continues a run exactly as if it had never stopped, which only holds on the data it started
with. The rule: when the data changed (rows added or removed, labels renamed, columns added or removed, or
cells edited), the resume is refused before anything is built, with a message that names each changed file
and says what changed; the user puts the data back, or starts a new run on the new data. A run written
before this record existed is resumed unchecked.

A data set describes its sources in ``metadata["sources"]``: ``[{"file", "sha256", "rows", "columns"}]``
(the manifest data set does); any data set gives its rows per split and ``metadata["classes"]``.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmcore.errors import UserInputError

#: Names listed in one part of a message (the rest are counted).
_SHOWN = 8


class DataChangedError(UserInputError):
    """``--resume`` on a run whose data changed since it started; the message says what changed, by file."""


def file_digest(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes (hex), read in ``chunk``-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _name(file: str, run_dir: str | Path | None) -> str:
    """A source's name in the record: relative to the run when inside it (a ``fit`` run's data.jsonl),
    so that a copied or moved run still names its own file; else as the data set gave it."""
    if run_dir is None:
        return file
    root, path = Path(os.path.abspath(run_dir)), Path(os.path.abspath(file))
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else file


def summarize(datasets: Mapping[str, Any], run_dir: str | Path | None = None) -> dict[str, Any]:
    """The record of ``datasets`` (``{split: dataset}``): rows per split, classes, sources (a file inside
    ``run_dir`` named relative to it)."""
    metadata = [getattr(d, "metadata", {}) or {} for d in datasets.values()]
    classes = next((m["classes"] for m in metadata if isinstance(m.get("classes"), list)), None)
    sources: dict[str, dict[str, Any]] = {}
    for m in metadata:
        for source in m.get("sources") or ():
            if isinstance(source, Mapping) and isinstance(source.get("file"), str):
                sources.setdefault(_name(source["file"], run_dir), {k: source.get(k) for k in ("sha256", "rows", "columns")})
    return {"rows": {split: len(d) for split, d in datasets.items()}, "classes": classes, "sources": sources}


def _names(items: list[str]) -> str:
    shown = ", ".join(repr(i) for i in items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _count(n: int, was: int, what: str = "rows") -> str:
    change = n - was
    return f"{n} {what}, was {was} ({abs(change)} {'added' if change > 0 else 'removed'})"


def differences(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What changed from ``recorded`` to ``now`` (two :func:`summarize` records), one line per finding."""
    lines: list[str] = []
    old_sources, new_sources = dict(recorded.get("sources") or {}), dict(now.get("sources") or {})
    for name in sorted(set(old_sources) | set(new_sources)):
        old, new = old_sources.get(name), new_sources.get(name)
        if old is None or new is None:
            lines.append(f"{name}: {'read now, not when the run started' if old is None else 'read when the run started, not now'}")
            continue
        parts = []
        if isinstance(old.get("rows"), int) and isinstance(new.get("rows"), int) and old["rows"] != new["rows"]:
            parts.append(_count(new["rows"], old["rows"]))
        if isinstance(old.get("columns"), list) and isinstance(new.get("columns"), list) and old["columns"] != new["columns"]:
            added = [c for c in new["columns"] if c not in old["columns"]]
            removed = [c for c in old["columns"] if c not in new["columns"]]
            if added or removed:
                renamed = [f"{r!r} -> {m[0]!r}" for r in removed if (m := difflib.get_close_matches(r, added, n=1))]
                parts.append("columns " + "; ".join(p for p in (
                    f"added {_names(added)}" if added else "", f"removed {_names(removed)}" if removed else "") if p)
                    + (f" (renamed? {', '.join(renamed)})" if renamed else ""))
            else:
                parts.append("columns reordered")
        if not parts and old.get("sha256") and new.get("sha256") and old["sha256"] != new["sha256"]:
            parts.append("cells edited (the same rows and columns; its content differs)")
        if parts:
            lines.append(f"{name}: {'; '.join(parts)}")
    old_rows, new_rows = dict(recorded.get("rows") or {}), dict(now.get("rows") or {})
    splits = [f"{s} {_count(new_rows[s], old_rows[s])}" for s in old_rows
              if s in new_rows and isinstance(old_rows[s], int) and old_rows[s] != new_rows[s]]
    if splits:
        lines.append("splits: " + "; ".join(splits))
    old_classes, new_classes = recorded.get("classes"), now.get("classes")
    if isinstance(old_classes, list) and isinstance(new_classes, list) and old_classes != new_classes:
        gone = [c for c in old_classes if c not in new_classes]
        new = [c for c in new_classes if c not in old_classes]
        if gone or new:
            renamed = [f"{g!r} -> {m[0]!r}" for g in gone
                       if (m := difflib.get_close_matches(str(g), [str(n) for n in new], n=1, cutoff=0.5))]
            lines.append("labels: " + "; ".join(p for p in (
                f"{_names(gone)} no longer present" if gone else "", f"{_names(new)} new" if new else "") if p)
                + (f" (renamed? {', '.join(renamed)})" if renamed else ""))
        else:
            lines.append(f"labels: the same names in another order ({_names(new_classes)})")
    return lines


_ADVICE = "put the data back as it was, or start a new run on the changed data (trainer.run_dir=NEW)"


def changed_files(recorded: Mapping[str, Any] | None, run_dir: str | Path | None = None) -> list[str]:
    """The recorded source files whose bytes differ now (or that are gone); relative names are inside ``run_dir``."""
    out = []
    for name, source in dict((recorded or {}).get("sources") or {}).items():
        digest = source.get("sha256") if isinstance(source, Mapping) else None
        path = Path(run_dir) / name if run_dir is not None and not Path(name).is_absolute() else Path(name)
        if digest and (not path.is_file() or file_digest(path) != digest):
            out.append(name)
    return out


def unreadable_now(recorded: Mapping[str, Any] | None, error: BaseException, run_dir: str | Path) -> BaseException:
    """A resumed run's data that no longer reads (a column renamed, a file gone): a
    :class:`DataChangedError` naming the files that changed since the run started, with the reader's
    message; ``error`` itself when no recorded file changed (the fault lies elsewhere)."""
    changed = changed_files(recorded, run_dir)
    if not changed:
        return error
    return DataChangedError(f"--resume {run_dir}: the data changed since the run started ({_names(changed)} "
                            f"{'differs' if len(changed) == 1 else 'differ'} from what it read), and reading it now "
                            f"fails: {error}\n{_ADVICE}")


def check_unchanged(recorded: Mapping[str, Any] | None, now: Mapping[str, Any], run_dir: str | Path) -> None:
    """Raise :class:`DataChangedError` when ``now`` differs from the run's ``recorded`` data (None: a run
    written before the record existed, not checked)."""
    if recorded is None:
        return
    lines = differences(recorded, now)
    if lines:
        raise DataChangedError(
            f"--resume {run_dir}: the data changed since the run started, and a resumed run continues on the data it "
            "started with:\n" + "\n".join(f"  {line}" for line in lines)
            + f"\n{_ADVICE}")
