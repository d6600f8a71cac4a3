"""Targets: the target type (``auto`` guessed from the training rows), the class vocabulary fitted on the
training split, and each row's target value (a class index, a multi-hot list, a number, text or the
raw value) -- or the problem with it, naming row and column."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mmcore_plugins.datasets.manifest.errors import bad
from mmcore_plugins.datasets.manifest.source import Table

TARGET_TYPES = ("auto", "class", "multilabel", "regression", "text", "raw")


def is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def finite_number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    result = float(value)  # accepts numeric strings from CSV; raises ValueError otherwise
    if not math.isfinite(result):
        raise ValueError(f"expected a finite number, got {value!r}")
    return result


# ---------------------------------------------------------------------- labels
def _integral(value: float) -> bool:
    return math.isfinite(value) and value == int(value)


def class_name(value: Any) -> str:
    """A class label as its vocabulary name: stripped strings; integers and integral floats (``1``,
    ``1.0``, ``"1.0"``) as ``"1"``. ValueError (saying what was expected) for anything else."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a class label, got {value!r}")
        if not _integral(value):
            raise ValueError(f"expected a class name or an integral class number, got {value!r} "
                             "(for numeric targets use a regression head / target_type: regression)")
        return str(int(value))
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return text
        try:
            return class_name(number)
        except ValueError as exc:  # say what the cell held, not the number it was read as
            raise ValueError(str(exc).replace(repr(number), repr(value), 1)) from None
    raise ValueError(f"expected a class label (a name or an integer), got {type(value).__name__} {value!r:.60}")


def _sorted_names(names: set[str]) -> list[str]:
    """Numerically when every name is an integer (``2`` before ``10``), else alphabetically."""
    try:
        return [str(n) for n in sorted(int(n) for n in names)]
    except ValueError:
        return sorted(names)


def _multilabel_names(value: Any, delimiter: str) -> list[str]:
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str):
        items = [part for part in value.split(delimiter) if part.strip()]
    else:
        items = [value]
    return [class_name(item) for item in items]


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _guess_target_type(values: list[Any]) -> str:
    """``auto``: list cells -> multilabel; all numbers, some non-integral -> regression; else class."""
    if any(isinstance(v, (list, tuple)) for v in values):
        return "multilabel"
    numbers = [float(v) for v in values if _is_number(v)]
    if values and len(numbers) == len(values) and not all(_integral(n) for n in numbers if math.isfinite(n)):
        return "regression"
    return "class"


def _is_int_name(name: str) -> bool:
    try:
        int(name)
    except ValueError:
        return False
    return True


class Targets:
    """The target column(s) of one manifest: the fitted label vocabulary and each row's target value."""

    def __init__(self, opts: Any) -> None:
        self.opts = opts
        self.target = opts.target
        self.classes: list[str] | None = None
        self.index: dict[str, int] = {}
        self.target_type = "none" if opts.target is None else opts.target_type

    def fit_targets(self, train_rows: Sequence[Mapping[str, Any]]) -> None:
        """Decide the target type (``auto``) and fit the class vocabulary on the training rows."""
        opts, target = self.opts, self.target
        if target is None:
            return
        if isinstance(target, list):
            if self.target_type == "auto":
                self.target_type = "raw"
            if self.target_type == "multilabel":
                self.classes = list(target)  # one 0/1 column per class
            return
        values = [row.get(target) for row in train_rows if not is_empty(row.get(target))]
        if self.target_type == "auto":
            self.target_type = _guess_target_type(values)
        if self.target_type not in ("class", "multilabel"):
            return
        if opts.classes is not None:
            names = []
            for c in opts.classes:
                try:
                    names.append(class_name(c))
                except ValueError as exc:
                    raise ValueError(f"classes: {exc}") from exc
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"classes: {duplicates} given more than once")
            self.classes = names
        else:
            seen: set[str] = set()
            for value in values:
                try:
                    seen.update([class_name(value)] if self.target_type == "class" else _multilabel_names(value, opts.label_delimiter))
                except ValueError:
                    continue  # reported with its row
            integers = all(_is_int_name(n) for n in seen)
            if opts.num_classes is not None and integers:
                self.classes = [str(i) for i in range(opts.num_classes)]  # the label is the class index
            else:
                self.classes = _sorted_names(seen)
        self.index = {name: i for i, name in enumerate(self.classes)}

    def target_value(self, row: Mapping[str, Any], number: int, table: Table) -> Any:
        target = self.target
        if isinstance(target, list):
            return [self.one_number(row, number, table, column) if self.target_type in ("regression", "multilabel")
                    else self.raw(row, number, table, column) for column in target]
        value = row.get(target)
        if is_empty(value):
            raise bad(table.name, number, target, "the target is empty")
        if self.target_type == "class":
            return self.class_index(value, number, table)
        if self.target_type == "multilabel":
            try:
                names = _multilabel_names(value, self.opts.label_delimiter)
            except ValueError as exc:
                raise bad(table.name, number, target, str(exc)) from exc
            hot = [0] * len(self.classes or [])
            for name in names:
                hot[self.lookup(name, value, number, table)] = 1
            return hot
        if self.target_type == "regression":
            return self.one_number(row, number, table, target)
        if self.target_type == "text":
            if not isinstance(value, str):
                raise bad(table.name, number, target, f"expected text (a string), got {type(value).__name__} {value!r:.40}")
            return value
        return self.raw(row, number, table, target)

    def class_index(self, value: Any, number: int, table: Table) -> int:
        try:
            name = class_name(value)
        except ValueError as exc:
            raise bad(table.name, number, self.target, str(exc)) from exc
        return self.lookup(name, value, number, table)

    def lookup(self, name: str, value: Any, number: int, table: Table) -> int:
        if name in self.index:
            return self.index[name]
        column = self.target
        if self.opts.num_classes is not None and _is_int_name(name) and self.classes == [str(i) for i in range(self.opts.num_classes)]:
            raise bad(table.name, number, column, f"expected a class index in [0, {self.opts.num_classes}), got {value!r}")
        where = "the classes option" if self.opts.classes is not None else "the labels of the training split"
        shown = self.classes if len(self.classes or []) <= 12 else [*self.classes[:12], "..."]
        raise bad(table.name, number, column, f"expected one of {where} {shown}, got {value!r}"
                                              + (f" (read as {name!r})" if str(value) != name else ""))

    def one_number(self, row: Mapping[str, Any], number: int, table: Table, column: str) -> float | int:
        value = row.get(column)
        if is_empty(value):
            raise bad(table.name, number, column, "the target is empty")
        if self.target_type == "multilabel":
            if not _is_number(value) or float(value) not in (0.0, 1.0):
                raise bad(table.name, number, column, f"expected 0 or 1 (a multilabel target column), got {value!r}")
            return int(float(value))
        try:
            return finite_number(value)
        except (TypeError, ValueError):
            raise bad(table.name, number, column, f"expected a finite number (a regression target), got {value!r}") from None

    def raw(self, row: Mapping[str, Any], number: int, table: Table, column: str) -> Any:
        value = row.get(column)
        if is_empty(value):
            raise bad(table.name, number, column, "the target is empty")
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    return value  # a string target (e.g. a caption)
        if isinstance(value, float) and not math.isfinite(value):
            raise bad(table.name, number, column, f"the target must be a finite number, got {value!r}")
        return value

