"""Values a trained model reads as unknown (a category not seen in training), counted so users are told.

Real data has new categories: a value the training split never held is encoded as "unknown" (the
tabular processor's index 0) and the record is still predicted -- nothing fails. But the user must
know: ``mmcore predict`` / ``eval`` print one warning line per column (:class:`UnseenValues`), and
``mmcore serve`` notes each record's values in its answer (:func:`record_warning`). Which values are
unknown is the processor's to say (:meth:`mmcore.Processor.unseen`), so every surface applies one rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Values quoted per column in a warning line.
EXAMPLES = 3


def record_warning(column: str, value: str, reason: str = "not seen in training") -> str:
    """One record's note about one cell: ``"column 'brand': 'Acme' was not seen in training; it was treated
    as unknown"``."""
    return f"column {column!r}: {value!r} was {reason}; it was treated as unknown"


class UnseenValues:
    """A tally, per column, of the records whose cells ``model``'s processors read as unknown.

    ``add({slot: raw})`` for each predicted record (raw as the slot's processor takes it; None: missing);
    :meth:`lines` then gives one line per column: ``"column 'brand': 3 records had values not seen in
    training (e.g. 'Acme'); they were treated as unknown"``.
    """

    def __init__(self, model: Any) -> None:
        self.processors = dict(getattr(model, "processors", {}) or {})
        self.records: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}
        self.reasons: dict[str, str] = {}

    def add(self, inputs: Mapping[str, Any]) -> dict[str, str]:
        """Count one record; returns its unknown values ``{column: value}``."""
        found: dict[str, str] = {}
        for slot, raw in inputs.items():
            processor = self.processors.get(slot)
            unseen = getattr(processor, "unseen", None)  # a processor not derived from mmcore.Processor: none
            if raw is None or not callable(unseen):
                continue
            for column, value in unseen(raw).items():
                found[column] = value
                self.records[column] = self.records.get(column, 0) + 1
                examples = self.examples.setdefault(column, [])
                if value not in examples and len(examples) < EXAMPLES:
                    examples.append(value)
                if column not in self.reasons:
                    reason = getattr(processor, "unseen_reason", None)
                    self.reasons[column] = reason(column) if callable(reason) else "not seen in training"
        return found

    def lines(self) -> list[str]:
        """One warning line per column with unknown values, in the order they were first met."""
        out = []
        for column, count in self.records.items():
            shown = ", ".join(repr(v) for v in self.examples[column])
            if count == 1:
                out.append(f"column {column!r}: 1 record had a value {self.reasons[column]} ({shown}); it was "
                           "treated as unknown")
            else:
                out.append(f"column {column!r}: {count} records had values {self.reasons[column]} (e.g. {shown}); "
                           "they were treated as unknown")
        return out
