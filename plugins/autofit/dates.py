"""Dates and times in a table: recognised from content, turned into numbers a tabular model can use.

A column is a date/time column when its cells are ``datetime`` / ``date`` / ``time`` values (what
Parquet, Arrow and pandas hand over for timestamp, date and time types) or when at least
:data:`MIN_PARSED` of its non-empty strings parse with one format: ISO 8601 (``2021-03-04``,
``2021-03-04T10:30:00Z``, ``2021-03-04 10:30:00.5+02:00``; :meth:`datetime.fromisoformat`) or one
of :data:`FORMATS` (``03/04/2021`` month or day first -- the format that reads every cell wins, month
first on a tie --, ``04.03.2021``, ``Mar 4, 2021``, ``4 March 2021``, ``10:30``, ...; the standard
library's :func:`time.strptime` directives). Strings of digits alone are numbers, never dates.

Such a column is not text for a sentence encoder (a ``created_at`` column made MiniLM an expert
at chance): :func:`date_parts` gives, per cell, the features that go to the tabular encoder --
``days`` since the training table's earliest date (fractional: the trend), ``year``, ``hour`` (with
minutes as a fraction; only when the column holds times of day) as numbers, and ``month`` and
``weekday`` as categories (their effects are seldom monotone). A time-of-day column gives
``hour`` alone. Time zones: an aware value is converted to UTC (naive values are taken as they
are written).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

#: Share of a column's non-empty cells that must parse (with one format) for it to be a date column.
MIN_PARSED = 0.9
#: How many cells the format is chosen on (the chosen format then reads every cell).
SAMPLE = 200
#: ``strptime`` formats tried after ISO 8601, in order of preference (month-first before
#: day-first: on cells that both read, such as 03/04/2021, the US order is taken).
FORMATS = (
    "%Y/%m/%d", "%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M:%S",
    "%m/%d/%Y", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %I:%M %p", "%m/%d/%y",
    "%d/%m/%Y", "%d/%m/%Y %H:%M", "%d/%m/%Y %H:%M:%S", "%d/%m/%y",
    "%d.%m.%Y", "%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%d-%m-%Y", "%m-%d-%Y",
    "%b %d, %Y", "%B %d, %Y", "%d %b %Y", "%d %B %Y", "%b %d %Y", "%d-%b-%Y", "%a, %d %b %Y %H:%M:%S",
    "%H:%M", "%H:%M:%S", "%I:%M %p",
)
ISO = "iso8601"
#: The derived features, in the order they are listed in the plan.
NUMERIC_PARTS = ("days", "year", "hour")
CATEGORICAL_PARTS = ("month", "weekday")
_EPOCH = dt.datetime(1970, 1, 1)


def _parse_iso(text: str) -> dt.datetime | dt.time | None:
    if len(text) < 8 or not text[:4].isdigit() or text[4] != "-":
        return None
    try:
        value = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        return None
    return value


def parse(value: Any, fmt: str) -> dt.datetime | dt.time | None:
    """One cell with format ``fmt`` (:data:`ISO` or a ``strptime`` format) -> a naive UTC ``datetime``
    (a ``time`` for time-of-day formats), or None when it does not read. Typed values (``datetime``,
    ``date``, ``time``, pandas ``Timestamp``) are taken as they are, whatever ``fmt``."""
    if isinstance(value, dt.datetime):
        out: Any = value
    elif isinstance(value, dt.date):
        out = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, dt.time):
        return value.replace(tzinfo=None)
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if fmt == ISO:
            out = _parse_iso(text)
        else:
            try:
                out = dt.datetime.strptime(text, fmt)
            except ValueError:
                return None
            if "%Y" not in fmt and "%y" not in fmt and "%d" not in fmt:
                return out.time()
        if out is None:
            return None
    else:
        return None
    if out.tzinfo is not None:
        out = out.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return out


def _is_typed(value: Any) -> bool:
    return isinstance(value, (dt.datetime, dt.date, dt.time))


def detect(values: Sequence[Any]) -> tuple[str, int] | None:
    """The format that reads ``values`` (non-empty cells) as dates/times, and how many it reads;
    None when the column is not one (fewer than :data:`MIN_PARSED` of the cells read).

    Cells that are numbers, or strings of digits, are never dates (``20210304`` is a number)."""
    if not values:
        return None
    typed = sum(_is_typed(v) for v in values)
    if typed:
        return (ISO, typed) if typed >= MIN_PARSED * len(values) else None
    strings = [v.strip() for v in values if isinstance(v, str)]
    if len(strings) < MIN_PARSED * len(values) or not any(any(c.isdigit() for c in s) for s in strings[:SAMPLE]):
        return None
    sample = [s for s in strings[:SAMPLE] if not s.replace(".", "", 1).lstrip("+-").isdigit()]
    if len(sample) < MIN_PARSED * min(len(strings), SAMPLE):
        return None
    best, best_count = None, 0
    for fmt in (ISO, *FORMATS):
        count = sum(parse(s, fmt) is not None for s in sample)
        if count > best_count:
            best, best_count = fmt, count
        if count == len(sample):
            break
    if best is None or best_count < MIN_PARSED * len(sample):
        return None
    read = sum(parse(s, best) is not None for s in strings)
    return (best, read) if read >= MIN_PARSED * len(values) else None


def ordinal_days(value: dt.datetime) -> float:
    """Days since 1970-01-01 (fractional)."""
    return (value - _EPOCH).total_seconds() / 86400.0


def date_parts(value: Any, fmt: str, *, origin: float, with_time: bool) -> dict[str, Any] | None:
    """One cell -> ``{part: value}`` (numbers for :data:`NUMERIC_PARTS`, strings for
    :data:`CATEGORICAL_PARTS`; see the module docstring), or None when the cell does not read.
    ``origin``: the training table's earliest date (:func:`ordinal_days`); ``with_time``: whether
    the column holds times of day (gives ``hour``)."""
    parsed = parse(value, fmt)
    if parsed is None:
        return None
    if isinstance(parsed, dt.time):
        return {"hour": parsed.hour + parsed.minute / 60 + parsed.second / 3600}
    out: dict[str, Any] = {"days": ordinal_days(parsed) - origin, "year": float(parsed.year),
                           "month": str(parsed.month), "weekday": str(parsed.isoweekday())}
    if with_time:
        out["hour"] = parsed.hour + parsed.minute / 60 + parsed.second / 3600
    return out


def expected(fmt: str, *, time_only: bool = False) -> str:
    """What a cell of a date column read with ``fmt`` must look like, in words with an example (for the
    error that names a cell which does not read: ``"a date in ISO 8601 (e.g. 2021-03-04 or
    2021-03-04T10:30)"``, ``"a date as %d.%m.%Y (e.g. 04.03.2021)"``)."""
    what = "a time of day" if time_only else "a date"
    if fmt == ISO:
        return f"{what} in ISO 8601 (e.g. {'10:30' if time_only else '2021-03-04 or 2021-03-04T10:30'})"
    try:
        example = dt.datetime(2021, 3, 4, 10, 30).strftime(fmt)
    except ValueError:
        return f"{what} as {fmt}"
    return f"{what} as {fmt} (e.g. {example})"


def reads(value: Any, details: dict[str, Any]) -> bool:
    """Whether a non-empty cell reads as the date column described by :func:`describe` (``details``:
    its ``format`` and ``time_only``) reads its cells: with its format, and a time of day only in a
    time-of-day column (it gives none of the parts a date column derives; a date gives ``hour``)."""
    parsed = parse(value, details["format"])
    return parsed is not None and (bool(details.get("time_only")) or isinstance(parsed, dt.datetime))


def describe(values: Sequence[Any], fmt: str) -> dict[str, Any]:
    """What the plan needs of a date column: its format, the earliest date (``origin``, days), whether
    it holds times of day, whether it is time of day only, and its first and last value as text."""
    parsed = [p for p in (parse(v, fmt) for v in values) if p is not None]
    times = [p for p in parsed if isinstance(p, dt.time)]
    dates = [p for p in parsed if isinstance(p, dt.datetime)]
    if times and not dates:
        return {"format": fmt, "origin": 0.0, "with_time": True, "time_only": True,
                "first": min(times).isoformat(), "last": max(times).isoformat()}
    with_time = any(p.hour or p.minute or p.second for p in dates)
    first, last = min(dates), max(dates)
    return {"format": fmt, "origin": ordinal_days(first), "with_time": with_time, "time_only": False,
            "first": first.isoformat(sep=" "), "last": last.isoformat(sep=" ")}


def parts_of(details: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The numeric and categorical parts a date column described by :func:`describe` gives."""
    if details.get("time_only"):
        return ["hour"], []
    numeric = ["days", "year", *(["hour"] if details.get("with_time") else [])]
    return numeric, list(CATEGORICAL_PARTS)
