"""The manifest's options, normalised (:class:`Options`), and the ``columns`` option (``{slot: column |
[numeric columns] | {numeric: [...], categorical: [...]}}``): its shape checked, the columns it names
listed, and every named column looked for in the table."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def columns_spec(columns: Any) -> dict[str, Any]:
    if not isinstance(columns, Mapping) or not columns:
        raise ValueError(f"columns must be a non-empty mapping {{slot: column | [columns] | {{numeric: [...], categorical: [...]}}}}, got {columns!r}")
    for slot, spec in columns.items():
        if isinstance(spec, str):
            continue
        if isinstance(spec, list) and spec and all(isinstance(c, str) for c in spec):
            continue
        if isinstance(spec, Mapping) and set(spec) <= {"numeric", "categorical"} and spec and all(
            isinstance(cols, list) and all(isinstance(c, str) for c in cols) for cols in spec.values()
        ):
            continue
        raise ValueError(f"columns.{slot}: expected a column name, a list of numeric columns, or "
                         f"{{numeric: [...], categorical: [...]}}, got {spec!r}")
    return dict(columns)


def named_columns(columns: Mapping[str, Any], target: str | list[str] | None, path_columns: list[str] | None) -> list[tuple[str, str]]:
    """``(option, column)`` for every column the options name."""
    named = []
    for slot, spec in columns.items():
        if isinstance(spec, str):
            named.append((f"columns.{slot}", spec))
        elif isinstance(spec, list):
            named += [(f"columns.{slot}", c) for c in spec]
        else:
            named += [(f"columns.{slot}.{kind}", c) for kind, cols in spec.items() for c in cols]
    targets = [target] if isinstance(target, str) else list(target or [])
    named += [("target", t) for t in targets] + [("path_columns", c) for c in path_columns or []]
    return named


def check_columns(manifest: Path, rows: list[dict[str, Any]], named: list[tuple[str, str]]) -> None:
    """Every named column must occur in the manifest: a misspelt one would otherwise make a whole
    modality silently missing (or every target "empty")."""
    if not rows:
        return
    present = set().union(*(row.keys() for row in rows))
    missing = [(option, column) for option, column in named if column not in present]
    if missing:
        lines = []
        for option, column in missing:
            close = difflib.get_close_matches(column, sorted(present), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"{option}: manifest {str(manifest)!r} has no column {column!r}{hint}")
        # One problem, one line (the CLI's rule); several: one line each, the columns on the last.
        shown = sorted(present)
        lines[-1] += (f" (its columns: {', '.join(shown[:20])}" + (f", ... ({len(shown) - 20} more)" if len(shown) > 20 else "")
                      + ")")
        raise ValueError("\n".join(lines))


class Options:
    """The options of one manifest, normalised and checked (what :func:`~mmcore_plugins.datasets.manifest.dataset.parse` needs)."""

    def __init__(self, **options: Any) -> None:
        self.__dict__.update(options)

    def cache_key(self, tables: Sequence[Any]) -> Any:
        keys = [t.key() for t in tables]
        if any(k is None for k in keys):
            return None
        plain = {k: v for k, v in self.__dict__.items() if k not in ("path", "val_path", "test_path")}
        return (tuple(keys), json.dumps(plain, sort_keys=True, default=str))
