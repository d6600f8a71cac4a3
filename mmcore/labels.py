"""Class labels: the one rule by which every reader of targets (the manifest data set, ``mmcore fit``,
the classification heads, ``mmcore predict`` and ``Predictor``) turns a label cell into a class.

A label cell is a ``str`` (CSV), or an ``int`` / ``float`` / ``bool`` (JSON Lines, Parquet, a
DataFrame; NumPy scalars are taken as their Python value).

* **Missing**: ``None``, a float NaN (pandas' missing value), a blank string, or a placeholder that
  spreadsheets and pandas write for "no value" (:data:`MISSING_PLACEHOLDERS`: ``N/A``, ``NA``, ``#N/A``,
  ``<NA>``, ``NaN``, ``null``, ``None``, any case, surrounding spaces ignored) -- no label, and for an
  input cell no value (a missing modality). Every command reads a cell by this rule.
* **Name**: the label as the user wrote it. A string is kept exactly (``"+1"``, ``"1e3"``,
  ``"True"``, ``" dog"``, ``"Ünïcode"`` stay what they are); a typed value is written the way
  Python (and JSON, pandas, pyarrow) print it: ``1`` -> ``"1"``, ``2.5`` -> ``"2.5"``, ``1.0`` ->
  ``"1.0"``, ``True`` -> ``"True"``. Class names are strings; :func:`label_name`.
* **Identity**: two labels are one class when their keys are equal (:func:`label_key`):
  numbers by their exact decimal value (``1``, ``1.0``, ``"1"``, ``"+1"``, ``"1.0"``, ``"1e0"`` --
  so a CSV's ``1`` and a JSON Lines file's ``1`` are one class), booleans by truth (``True``,
  ``"true"``, ``"TRUE"``), other strings by their text without surrounding whitespace (``" dog "``
  is ``"dog"``; case, inner spaces and Unicode are kept as they are). A non-finite number (``"nan"``,
  ``"inf"``, ``float("inf")``) or a value of any other type (a list, a dict) is not a class label:
  ValueError.
* **Vocabulary** (:func:`fit_classes`): one class per key, named by its most frequent spelling among
  the values (ties: one without surrounding whitespace, then the smallest in code-point order), in
  a fixed order: numbers ascending, then
  ``False``, ``True``, then strings in code-point order. The same labels in any row order give the
  same list.

:class:`ClassIndex` looks any spelling of a label up in a list of class names (index = class).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["MISSING_PLACEHOLDERS", "ClassIndex", "class_number", "fit_classes", "is_missing", "is_non_finite", "label_key",
           "label_name", "label_values", "multilabel_names"]

#: A label's identity: ``(0, Decimal)`` numbers, ``(1, bool)`` booleans, ``(2, str)`` other strings.
LabelKey = tuple[int, Any]

_NUMBER, _BOOLEAN, _STRING = 0, 1, 2
_BOOLEANS = {"true": True, "false": False}


def _plain(value: Any) -> Any:
    """A NumPy scalar as its Python value (pandas/pyarrow hand those out); anything else unchanged."""
    if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


#: Cell texts (compared lower-cased, without surrounding spaces) that mean "no value": what Excel writes
#: (``#N/A``), what pandas writes and reads as missing (``NaN``, ``<NA>``, ``None``, ``null``, ``NA``),
#: and the common ``N/A``. Other markers (``?``, ``-``) are values.
MISSING_PLACEHOLDERS = frozenset({"n/a", "na", "#n/a", "<na>", "nan", "null", "none"})
_LONGEST_PLACEHOLDER = max(map(len, MISSING_PLACEHOLDERS))


def is_missing(value: Any) -> bool:
    """Whether a cell holds no value: None, a float NaN, a blank string or a :data:`MISSING_PLACEHOLDERS` text."""
    if type(value) is str:  # the common cell (CSV), first: called several times for every row of a table
        text = value.strip()
        return not text or (len(text) <= _LONGEST_PLACEHOLDER and text.lower() in MISSING_PLACEHOLDERS)
    value = _plain(value)
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and (not value.strip() or value.strip().lower() in MISSING_PLACEHOLDERS)


def is_non_finite(value: Any) -> bool:
    """Whether a cell is an infinite number (``inf``, ``-Infinity``, ``float("inf")``): no label and no
    measurement. (NaN is :func:`is_missing`.)"""
    value = _plain(value)
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return isinstance(value, float) and math.isinf(value)
    if isinstance(value, str):
        try:
            return math.isinf(float(value.strip()))
        except ValueError:
            return False
    return False


def label_key(value: Any) -> LabelKey:
    """The identity of a label (see the module docstring): equal keys are one class.

    Raises ValueError (saying what was expected and what came) for a missing value, a non-finite
    number and anything that is not a str, int, float or bool.
    """
    value = _plain(value)
    if isinstance(value, bool):
        return (_BOOLEAN, value)
    if isinstance(value, int):
        return (_NUMBER, Decimal(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a class label, got {value!r} (not a finite number)")
        return (_NUMBER, Decimal(repr(value)))  # the printed value: 0.1 is Decimal("0.1"), as the CSV cell "0.1"
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ValueError(f"expected a class label, got {value!r} (an empty cell)")
        if text.lower() in _BOOLEANS:
            return (_BOOLEAN, _BOOLEANS[text.lower()])
        try:
            number = Decimal(text)
        except InvalidOperation:
            return (_STRING, text)
        if not number.is_finite():
            raise ValueError(f"expected a class label, got {value!r} (not a finite number)")
        return (_NUMBER, number)
    raise ValueError(f"expected a class label (a name, number or boolean), got {type(value).__name__} {value!r:.60}")


def label_name(value: Any) -> str:
    """A label's name: a string exactly as written, a typed value as Python prints it (``1`` ->
    ``"1"``, ``1.0`` -> ``"1.0"``, ``True`` -> ``"True"``). ValueError as :func:`label_key`."""
    value = _plain(value)
    label_key(value)  # the same checks for every reader
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    return str(value)


def class_number(value: Any) -> int | None:
    """The integer a label stands for when it is an integral number (``3``, ``"3"``, ``"3.0"``, ``"+3"``),
    else None -- for class *indices* (a head's ``num_classes`` without names)."""
    try:
        kind, key = label_key(value)
    except ValueError:
        return None
    return int(key) if kind == _NUMBER and key == key.to_integral_value() else None


def fit_classes(values: Iterable[Any], *, known: Sequence[Any] = (), skip_invalid: bool = False) -> list[str]:
    """The class names of ``values`` (missing ones skipped): one per key, named by its most frequent
    spelling (ties: one without surrounding whitespace, then the smallest in code-point order), ordered numbers, booleans, strings (see the
    module docstring). ``known`` names (e.g. the training split's classes) keep their spelling and
    join the list. Raises ValueError for an invalid label, unless ``skip_invalid``.
    """
    spellings: dict[LabelKey, Counter[str]] = {}
    fixed: dict[LabelKey, str] = {}
    for name in known:
        fixed.setdefault(label_key(name), label_name(name))
    # A column's cells repeat a few labels: each distinct text is keyed once (a million rows, ten classes)
    texts: Counter[str] = Counter()

    def count(value: Any, times: int) -> None:
        if is_missing(value):
            return
        try:
            key, name = label_key(value), label_name(value)
        except ValueError:
            if skip_invalid:
                return
            raise
        spellings.setdefault(key, Counter())[name] += times

    for value in values:
        if type(value) is str:
            texts[value] += 1
        else:
            count(value, 1)
    for value, times in texts.items():
        count(value, times)
    out = []
    for key in sorted({*fixed, *spellings}):  # (kind, value): numbers by value, False < True, strings by code point
        if key in fixed:
            out.append(fixed[key])
        else:
            counts = spellings[key]
            # the most frequent; on a tie, one without surrounding whitespace, then the smallest
            out.append(min(counts, key=lambda spelling: (-counts[spelling], spelling != spelling.strip(), spelling)))
    return out


def label_values(classes: Sequence[str], values: Iterable[Any]) -> list[Any]:
    """For each class name, the first of ``values`` written that way (its type kept: the ``1`` of a
    JSON Lines file, the ``"1"`` of a CSV), else the name itself: what a prediction gives back."""
    wanted = {name: i for i, name in enumerate(classes)}
    out: list[Any] = list(classes)
    found: set[int] = set()
    for value in values:
        if is_missing(value):
            continue
        try:
            i = wanted.get(label_name(value))
        except ValueError:
            continue
        if i is not None and i not in found:
            out[i] = _plain(value)
            found.add(i)
            if len(found) == len(out):
                break
    return out


def multilabel_names(value: Any, delimiter: str | None) -> list[str]:
    """The label names of one multilabel cell: a list (each item a label), or a string of labels joined
    by ``delimiter`` (each part without its surrounding spaces; ``None``: one label), or one label.
    Missing items and empty parts are skipped; a label given twice counts once. ValueError for an
    item that is not a label."""
    value = _plain(value)
    if isinstance(value, (list, tuple)):
        items = [item for item in value if not is_missing(item)]
    elif is_missing(value):
        items = []
    elif isinstance(value, str):
        items = [part.strip() for part in (value.split(delimiter) if delimiter else [value]) if not is_missing(part)]
    else:
        items = [value]
    names, seen = [], set()
    for item in items:
        key = label_key(item)
        if key not in seen:
            seen.add(key)
            names.append(label_name(item))
    return names


class ClassIndex(Sequence):
    """Class names (index = class) and the look-up of any spelling of a label among them.

    ``ClassIndex(["-1", "+1"]).get(1) == 1``; ``.get("cat") is None`` for a label that is no class.
    Raises ValueError when two names are one class (``["1", "+1"]``) or a name is not a label.
    """

    def __init__(self, classes: Iterable[Any]) -> None:
        self.names: list[str] = []
        self._index: dict[LabelKey, int] = {}
        repeated: dict[LabelKey, list[str]] = {}
        for item in classes:
            key, name = label_key(item), label_name(item)
            if key in self._index:
                repeated.setdefault(key, [self.names[self._index[key]]]).append(name)
                continue
            self._index[key] = len(self.names)
            self.names.append(name)
        if repeated:
            shown = "; ".join(" and ".join(repr(n) for n in names) for names in repeated.values())
            raise ValueError(f"one class named more than once: {shown}")

    def get(self, value: Any) -> int | None:
        """The index of the class ``value`` is a spelling of; None when it is none of them (or no label)."""
        try:
            return self._index.get(label_key(value))
        except ValueError:
            return None

    def __getitem__(self, i):  # type: ignore[override]
        return self.names[i]

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __repr__(self) -> str:
        return f"ClassIndex({self.names!r})"
