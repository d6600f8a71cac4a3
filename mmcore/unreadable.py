"""Inputs a processor could not read while a model trained, evaluated or predicted, and the one way they
are reported.

A table is validated before training (headers, the start of each file); what only reading finds -- NaN
samples after the first second of a WAV, a file truncated or replaced since validation -- is met by
:meth:`mmcore.MultimodalModel.collate`. Under ``unreadable_inputs: missing`` (the trainer's default) such
an input becomes a missing modality of its sample, exactly as an empty cell, and is recorded here; under
``"error"`` the :class:`~mmcore.errors.InputReadError` is raised, naming the same things.

Each record names the table and row the sample came from (``sample["origin"]``: ``{"file", "row",
"columns": {slot: column}}``, which the manifest data set sets), the column (else the slot), and the
reader's message, which names the media file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: What ``unreadable_inputs`` may be.
POLICIES = ("missing", "error")
#: Records listed in a report (the rest are counted).
MAX_LISTED = 20


def check_policy(value: Any, option: str = "unreadable_inputs") -> str:
    """``value`` when it is one of :data:`POLICIES`; ValueError naming ``option`` otherwise."""
    if value not in POLICIES:
        raise ValueError(f"{option} must be one of {', '.join(POLICIES)}, got {value!r}")
    return value


def record(slot: str, sample: Mapping[str, Any] | None, error: BaseException) -> dict[str, Any]:
    """One unreadable input: ``{"file", "row", "column", "error"}`` (file and row None when the sample
    carries no ``origin``; the column falls back to the slot)."""
    origin = sample.get("origin") if isinstance(sample, Mapping) else None
    origin = origin if isinstance(origin, Mapping) else {}
    columns = origin.get("columns") if isinstance(origin.get("columns"), Mapping) else {}
    return {"file": origin.get("file"), "row": origin.get("row"), "column": str(columns.get(slot, slot)),
            "error": str(error)}


def describe(entry: Mapping[str, Any]) -> str:
    """``"<table>: row N, column 'c': <reader's message>"`` (what is known of it)."""
    where = [str(entry["file"])] if entry.get("file") else []
    if entry.get("row") is not None:
        where.append(f"row {entry['row']}")
    where.append(f"column {entry['column']!r}")
    head = ", ".join(where[1:])
    return f"{where[0]}: {head}: {entry['error']}" if entry.get("file") else f"{head}: {entry['error']}"


class UnreadableInputs:
    """The unreadable inputs met so far, once each (by table, row and column), in the order met."""

    def __init__(self) -> None:
        self.entries: dict[tuple[Any, Any, str], dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, records: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
        """Record ``records`` (a batch's ``"unreadable"`` list); returns those not seen before."""
        new = []
        for item in records or ():
            key = (item.get("file"), item.get("row"), item.get("column"), item.get("error") if item.get("row") is None else None)
            if key not in self.entries:
                self.entries[key] = dict(item)
                new.append(self.entries[key])
        return new

    def by_column(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.entries.values():
            counts[entry["column"]] = counts.get(entry["column"], 0) + 1
        return counts

    def to_json(self, limit: int = MAX_LISTED) -> dict[str, Any]:
        """``{"count", "columns": {column: n}, "listed": [first ``limit`` described]}`` for a report."""
        return {"count": len(self), "columns": self.by_column(),
                "listed": [describe(e) for e in list(self.entries.values())[:limit]]}

    def summary(self, what: str = "treated as missing") -> str:
        """One line: how many, by column, and the first of them."""
        first = describe(next(iter(self.entries.values()))) if self.entries else ""
        columns = ", ".join(f"{c} {n}" for c, n in self.by_column().items())
        return f"{len(self)} input(s) could not be read and were {what} ({columns}); first: {first}"
