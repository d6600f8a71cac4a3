"""The tally behind predict's and eval's warning lines about values read as unknown (mmcore/engine/unseen.py):
per column, records counted once each, a few examples, the processor's reason; nothing for a clean table."""

from __future__ import annotations

from types import SimpleNamespace

from mmcore.engine.unseen import UnseenValues, record_warning


class _Categories:
    """A processor whose fitted vocabulary is {'red', 'green'} for column 'colour' (the rule of any processor's
    ``unseen``: the cells it reads as unknown)."""

    def unseen(self, raw):
        value = raw.get("colour")
        return {} if value is None or value in ("red", "green") else {"colour": str(value)}

    def unseen_reason(self, column):
        return "not seen in training"


def test_lines_count_records_per_column_with_examples():
    tally = UnseenValues(SimpleNamespace(processors={"tabular": _Categories(), "photo": object()}))  # photo: no unseen()
    for colour in ["red", "mauve", "teal", "mauve", None, "ochre", "puce"]:
        tally.add({"tabular": {"colour": colour}, "photo": "a.png" if colour else None})
    assert tally.add({"tabular": None}) == {}
    assert tally.lines() == ["column 'colour': 5 records had values not seen in training (e.g. 'mauve', 'teal', "
                             "'ochre'); they were treated as unknown"]
    one = UnseenValues(SimpleNamespace(processors={"tabular": _Categories()}))
    assert one.add({"tabular": {"colour": "Acme"}}) == {"colour": "Acme"}
    assert one.lines() == ["column 'colour': 1 record had a value not seen in training ('Acme'); it was treated as unknown"]
    clean = UnseenValues(SimpleNamespace(processors={"tabular": _Categories()}))
    clean.add({"tabular": {"colour": "red"}})
    assert clean.lines() == []


def test_record_warning_names_column_and_value():
    assert record_warning("brand", "Acme") == "column 'brand': 'Acme' was not seen in training; it was treated as unknown"
