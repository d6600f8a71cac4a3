"""Targets: the target type (``auto`` guessed from the training rows), the class vocabulary fitted on the
training split, and each row's target value (a class index, a multi-hot list, a number, text or the
raw value) -- or the problem with it, naming row and column."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mmcore.labels import ClassIndex, class_number, fit_classes, is_missing, label_name, multilabel_names
from mmcore_plugins.datasets.manifest.errors import bad
from mmcore_plugins.datasets.manifest.source import Table

TARGET_TYPES = ("auto", "class", "multilabel", "regression", "text", "raw")


#: A cell with no value, by mmcore's one rule (:func:`mmcore.labels.is_missing`): None, NaN, a blank
#: string or a placeholder such as ``N/A``. The function itself, not a wrapper: it runs several times
#: for every row of a table (a million-row manifest: ~6 million calls).
is_empty = is_missing


def finite_number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    result = float(value)  # accepts numeric strings from CSV; raises ValueError otherwise
    if not math.isfinite(result):
        raise ValueError(f"expected a finite number, got {value!r}")
    return result


# ---------------------------------------------------------------------- labels
# Class labels follow mmcore's one rule (mmcore.labels): names as written, one class per value.
class_name = label_name  # the name this module has always exported


def _integral(value: float) -> bool:
    return math.isfinite(value) and value == int(value)


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


class Targets:
    """The target column(s) of one manifest: the fitted label vocabulary and each row's target value."""

    def __init__(self, opts: Any) -> None:
        self.opts = opts
        self.target = opts.target
        self.classes: list[str] | None = None
        self.index = ClassIndex([])
        #: ``num_classes`` with integer labels: the label is the class index (classes "0" .. "n-1")
        self.indices = False
        self.target_type = "none" if opts.target is None else opts.target_type
        #: a class target's text cells already looked up -> class index (a column repeats a few labels)
        self._class_of: dict[str, int] = {}

    def fit_targets(self, train_rows: Sequence[Mapping[str, Any]]) -> None:
        """Decide the target type (``auto``) and fit the class vocabulary on the training rows."""
        target = self.target
        self.fit_target_cells([row.get(target) for row in train_rows] if isinstance(target, str) else [])

    def fit_target_cells(self, cells: Iterable[Any]) -> None:
        """:meth:`fit_targets` from the training rows' target cells alone (a one-column target; ignored
        for a list of target columns): a table held as columns gives them without building its rows."""
        opts, target = self.opts, self.target
        if target is None:
            return
        if isinstance(target, list):
            if self.target_type == "auto":
                self.target_type = "raw"
            if self.target_type == "multilabel":
                self.classes = list(target)  # one 0/1 column per class
            return
        values = [cell for cell in cells if not is_empty(cell)]
        if self.target_type == "auto":
            self.target_type = _guess_target_type(values)
        if self.target_type not in ("class", "multilabel"):
            return
        if opts.classes is not None:
            try:
                self.index = ClassIndex(opts.classes)
            except ValueError as exc:
                raise ValueError(f"classes: {exc}") from exc
        else:
            labels = values if self.target_type == "class" else [
                name for value in values for name in self._names_or_none(value)]
            classes = fit_classes(labels, skip_invalid=True)  # an invalid label is reported with its row
            if opts.num_classes is not None and all(class_number(name) is not None for name in classes):
                self.indices = True
                classes = [str(i) for i in range(opts.num_classes)]  # the label is the class index
            self.index = ClassIndex(classes)
        self.classes = list(self.index)

    def _names_or_none(self, value: Any) -> list[str]:
        try:
            return multilabel_names(value, self.opts.label_delimiter)
        except ValueError:
            return []  # reported with its row

    def target_value(self, row: Mapping[str, Any], number: int, table: Table) -> Any:
        target = self.target
        if isinstance(target, list):
            return [self.one_number(row, number, table, column) if self.target_type in ("regression", "multilabel")
                    else self.raw(row, number, table, column) for column in target]
        value = row.get(target)
        if is_empty(value):
            if self.target_type == "multilabel" and self.opts.empty_labels == "none":
                return [0] * len(self.classes or [])  # "none of the labels": a negative example
            raise bad(table.name, number, target, "the target is empty"
                      + (" (empty_labels: none reads an empty multilabel cell as no label)"
                         if self.target_type == "multilabel" else ""))
        if self.target_type == "class":
            if type(value) is str:
                index = self._class_of.get(value)
                if index is None:  # not seen yet (or bad: an error is never remembered)
                    index = self._class_of[value] = self.class_index(value, number, table)
                return index
            return self.class_index(value, number, table)
        if self.target_type == "multilabel":
            try:
                names = multilabel_names(value, self.opts.label_delimiter)
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
            label_name(value)
        except ValueError as exc:
            raise bad(table.name, number, self.target, str(exc)) from exc
        return self.lookup(value, value, number, table)

    def lookup(self, label: Any, value: Any, number: int, table: Table) -> int:
        """The class index of ``label`` (one label of the cell ``value``), or the error naming the row."""
        index = self.index.get(label)
        if index is not None:
            return index
        column = self.target
        if self.indices and class_number(label) is not None:
            raise bad(table.name, number, column, f"expected a class index in [0, {self.opts.num_classes}), got {value!r}")
        where = "the classes option" if self.opts.classes is not None else "the labels of the training split"
        shown = self.classes if len(self.classes or []) <= 12 else [*self.classes[:12], "..."]
        raise bad(table.name, number, column, f"expected one of {where} {shown}, got {value!r}")

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

