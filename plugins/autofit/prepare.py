"""From inferred columns to model inputs: the :class:`Plan` (slots, target encoding, imputation) and
the two things made from it -- the prepared table that the run's config trains on (written into
the run directory, so ``mmcore train RUN/config.yaml`` reads exactly what ``fit`` did) and the raw
samples that :class:`~mmcore_plugins.autofit.predictor.Predictor` feeds the model.

One prepared row: file cells as absolute paths (a missing or unreadable file -> empty), text
cells as strings (text files read), numeric cells as numbers (a missing number -> the training
median, with a 0/1 ``"<column> missing"`` indicator column when the training split had any),
categorical cells as strings, the target as a class name / a list of label names / a number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mmcore.labels import ClassIndex, is_non_finite, multilabel_names
from mmcore_plugins.autofit.infer import (
    FILE_KINDS,
    ColumnError,
    ColumnInfo,
    _decimal_hint,
    as_number,
    cell_paths,
    is_missing,
    resolve_path,
)

#: The slot holding every numeric and categorical column.
TABULAR_SLOT = "tabular"


@dataclass
class Plan:
    """What ``fit`` decided about the table's columns; saved as ``autofit.json`` in the run directory.

    ``slots``: ``{slot: {"kind": modality, "column": name}}`` for image / audio / video / text
    columns and ``{"kind": "tabular", "numeric": [...], "categorical": [...]}`` for the table
    slot. ``fill``: numeric column -> training median used for a missing cell; ``indicators``:
    numeric column -> its 0/1 missing-indicator column. ``classes`` (classification) or
    ``labels`` + ``delimiter`` (multilabel) encode the target (names as the table writes them,
    :mod:`mmcore.labels`); ``class_values``: each class as the training table held it (``1``,
    ``"+1"``, ``True``), what predictions give back.
    """

    target: str
    task: str
    slots: dict[str, dict[str, Any]]
    classes: list[str] | None = None
    class_values: list[Any] | None = None
    labels: list[str] | None = None
    delimiter: str | None = None
    #: a multilabel target's empty cell: "none" of the labels (a negative example), or "missing" (no target)
    empty_labels: str = "none"
    fill: dict[str, float] = field(default_factory=dict)
    indicators: dict[str, str] = field(default_factory=dict)
    text_files: list[str] = field(default_factory=list)
    split_column: str = "split"
    #: date/time column -> what :mod:`.dates` derives from it: ``format``, ``origin``, ``with_time``,
    #: ``time_only`` and ``numeric`` / ``categorical`` ``{part: derived column}`` (in the table slot)
    dates: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "plan") -> Plan:
        """A plan read back (``autofit.json``'s ``plan``), every field checked first: a damaged or
        crafted file gives one ValueError naming the field (``where`` prefixes it), never a
        KeyError/IndexError later."""
        def fail(field: str, expected: str, got: Any) -> ValueError:
            shown = repr(got) if not isinstance(got, (dict, list)) else f"{type(got).__name__} of {len(got)}"
            return ValueError(f"{where}.{field} must be {expected}, got {shown[:80]}")

        def names(field: str, value: Any, *, unique: bool = False, empty: bool = True) -> list[str]:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or (not empty and not value):
                raise fail(field, "a list of strings" + ("" if empty else " (not empty)"), value)
            if unique and len(set(value)) != len(value):
                raise fail(field, "a list of distinct strings", value)
            return value

        if not isinstance(data, Mapping):
            raise ValueError(f"{where} must be an object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where} has unknown field(s) {unknown[:5]}; a plan has {sorted(known)}")
        target, task, slots = data.get("target"), data.get("task"), data.get("slots")
        if not isinstance(target, str):
            raise fail("target", "the target column's name", target)
        if task not in ("classification", "multilabel", "regression"):
            raise fail("task", "classification, multilabel or regression", task)
        if not isinstance(slots, Mapping) or not slots:
            raise fail("slots", "an object of slots", slots)
        for slot, spec in slots.items():
            kind = spec.get("kind") if isinstance(spec, Mapping) else None
            if not isinstance(slot, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", slot):
                raise fail("slots", "slot names of letters, digits and underscores", slot)
            if kind == TABULAR_SLOT:
                if not {"kind", "numeric", "categorical"} <= set(spec) <= {"kind", "numeric", "categorical", "dates"}:
                    raise fail(f"slots.{slot}", "{kind, numeric, categorical[, dates]}", sorted(spec))
                names(f"slots.{slot}.numeric", spec["numeric"])
                names(f"slots.{slot}.categorical", spec["categorical"])
                for column in names(f"slots.{slot}.dates", spec.get("dates", [])):
                    if column not in (data.get("dates") or {}):
                        raise fail(f"slots.{slot}.dates", "date columns described in dates", column)
            elif kind in (*FILE_KINDS, "text"):
                if set(spec) != {"kind", "column"} or not isinstance(spec["column"], str):
                    raise fail(f"slots.{slot}", "{kind, column: a column name}", dict(spec))
            else:
                raise fail(f"slots.{slot}.kind", f"one of {', '.join((*FILE_KINDS, 'text', TABULAR_SLOT))}", kind)
        classes, labels = data.get("classes"), data.get("labels")
        if task == "classification":
            names("classes", classes, unique=True, empty=False)
        elif classes is not None:
            raise fail("classes", f"null for a {task} plan", classes)
        if task == "multilabel":
            names("labels", labels, unique=True, empty=False)
        elif labels is not None:
            raise fail("labels", f"null for a {task} plan", labels)
        if data.get("delimiter") is not None and not isinstance(data.get("delimiter"), str):
            raise fail("delimiter", "null or a string", data.get("delimiter"))
        fill, indicators = data.get("fill", {}), data.get("indicators", {})
        if not isinstance(fill, Mapping) or not all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                                                     and math.isfinite(v) for k, v in fill.items()):
            raise fail("fill", "an object of finite numbers", fill)
        if not isinstance(indicators, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in indicators.items()):
            raise fail("indicators", "an object of column names", indicators)
        names("text_files", data.get("text_files", []))
        dated = data.get("dates", {})
        if not isinstance(dated, Mapping) or not all(
                isinstance(k, str) and isinstance(v, Mapping) and isinstance(v.get("format"), str)
                and isinstance(v.get("numeric", {}), Mapping) and isinstance(v.get("categorical", {}), Mapping)
                for k, v in dated.items()):
            raise fail("dates", "an object of date columns, each with its format and derived parts", dated)
        if not isinstance(data.get("split_column", "split"), str):
            raise fail("split_column", "a column name", data.get("split_column"))
        return cls(**dict(data))

    @property
    def file_columns(self) -> list[str]:
        return [s["column"] for s in self.slots.values() if s["kind"] in FILE_KINDS]

    @property
    def input_columns(self) -> list[str]:
        """The user's columns the model reads, in slot order (never a column ``fit`` derived, such as
        ``"<column> missing"``: those are derived again from these)."""
        out: list[str] = []
        for spec in self.slots.values():  # a date column is read too (its parts are derived from it)
            out += [spec["column"]] if "column" in spec else [*spec["numeric"], *spec["categorical"], *spec.get("dates", [])]
        return out

    def slot_columns(self) -> dict[str, str]:
        """``{slot: column}`` of the one-column slots (what an unreadable input's report names)."""
        return {slot: spec["column"] for slot, spec in self.slots.items() if "column" in spec}

    def manifest_columns(self) -> dict[str, Any]:
        """The manifest dataset's ``columns`` option: ``{slot: column | {numeric, categorical}}``."""
        out: dict[str, Any] = {}
        for slot, spec in self.slots.items():
            if spec["kind"] == TABULAR_SLOT:
                numeric, categorical = self.tabular_columns(spec)
                out[slot] = {k: v for k, v in (("numeric", numeric), ("categorical", categorical)) if v}
            else:
                out[slot] = spec["column"]
        return out

    def tabular_columns(self, spec: Mapping[str, Any]) -> tuple[list[str], list[str]]:
        """The prepared table's numeric and categorical columns of a table slot: the user's numbers
        and their missing indicators, the parts derived from date columns (and theirs), the categories."""
        numeric = [*spec["numeric"], *(self.indicators[c] for c in spec["numeric"] if c in self.indicators)]
        categorical = list(spec["categorical"])
        for column in spec.get("dates", []):
            derived = self.dates[column]
            numeric += [*derived["numeric"].values(), *([self.indicators[column]] if column in self.indicators else [])]
            categorical += list(derived["categorical"].values())
        return numeric, categorical


def check_table_columns(plan: Plan, header: Sequence[str], missing: Sequence[str] = (), *, target: bool = False,
                        where: str = "the table", option: str | None = "missing_columns") -> list[str]:
    """The rule for a table given to a trained model: every column the model reads is in ``header`` or
    declared in ``missing`` (its cells are then all empty: missing modalities, the training median for a
    number); with ``target``, the target column is in ``header``. Returns the declared columns. ``option``:
    how the message names the declaration (``--missing``); None where there is none (fit's --val/--test).

    Raises :class:`ColumnError` naming each absent column and the closest column the table has (a
    renamed header, a table with no shared column), and each declared column the model does not read.
    """
    import difflib

    present, needed = set(header), plan.input_columns
    declared = list(dict.fromkeys(missing))
    unknown = [c for c in declared if c not in needed]
    if unknown:
        raise ColumnError(f"{option}: {', '.join(repr(c) for c in unknown)} "
                          f"{'is not a column' if len(unknown) == 1 else 'are not columns'} the model reads "
                          f"(it reads {', '.join(repr(c) for c in needed)})")
    absent = [c for c in needed if c not in present and c not in declared]
    parts = []
    for column in absent + ([plan.target] if target and plan.target not in present else []):
        close = difflib.get_close_matches(column, sorted(present - set(needed), key=str), n=1)
        role = "the target" if column == plan.target and column not in needed else "trained on"
        parts.append(f"{column!r} ({role}" + (f"; did you mean {close[0]!r}?)" if close else ")"))
    if parts:
        # One line, whatever the count (the CLI's rule for an error in the user's input): every absent
        # column with the closest one the table has, then what to do and what the table holds.
        shared = [c for c in needed if c in present]
        shown = list(dict.fromkeys(header))
        columns = ", ".join(repr(c) for c in shown[:20]) + (f", ... ({len(shown) - 20} more)" if len(shown) > 20 else "")
        # --missing helps only with columns the model reads: the target cannot be declared missing
        inputs_absent = [c for c in absent if c != plan.target or c in needed]
        declare = f"; declare a column missing with {option} to predict without it" if option and inputs_absent else ""
        if target and plan.target not in present:
            declare += f"; evaluating needs the true values: a column {plan.target!r}"
        verb = "have" if where in ("the rows", "the records") else "has"
        its = "its" if where.startswith("row ") else "the table's"
        raise ColumnError(f"{where} {verb} no column{'s' if len(parts) > 1 else ''} {', '.join(parts)}{declare} "
                          f"({its} columns: {columns or 'none'}"
                          + ("" if shared else "; it shares no column with the model's") + ")")
    return declared


def slot_name(column: str, taken: set[str]) -> str:
    """A config-safe slot name for ``column`` (letters, digits, underscores), unique among ``taken``."""
    base = re.sub(r"\W+", "_", column).strip("_").lower() or "input"
    if base[0].isdigit():
        base = f"c_{base}"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def make_plan(infos: Sequence[ColumnInfo], train_rows: Sequence[Mapping[str, Any]]) -> Plan:
    """The plan for these columns; numeric fill values are fitted on ``train_rows``."""
    target = next(i for i in infos if i.role == "target")
    columns = {i.name for i in infos}
    taken: set[str] = set()
    slots: dict[str, dict[str, Any]] = {}
    numeric = [i.name for i in infos if i.role == "input" and i.kind == "numeric"]
    categorical = [i.name for i in infos if i.role == "input" and i.kind == "categorical"]
    date_infos = [i for i in infos if i.role == "input" and i.kind == "date"]
    text_files = []
    for info in infos:
        if info.role == "input" and info.kind in (*FILE_KINDS, "text"):
            slots[slot_name(info.name, taken)] = {"kind": info.kind, "column": info.name}
            if info.kind == "text" and info.details.get("files"):
                text_files.append(info.name)
    if numeric or categorical or date_infos:
        name = TABULAR_SLOT if TABULAR_SLOT not in taken else slot_name(TABULAR_SLOT, taken)
        slots[name] = {"kind": TABULAR_SLOT, "numeric": numeric, "categorical": categorical,
                       **({"dates": [i.name for i in date_infos]} if date_infos else {})}
    if not slots:
        raise ColumnError(f"no column is left to learn {target.name!r} from: every other column was ignored "
                          "(see the table above; --column NAME=KIND overrides)")
    fill, indicators = {}, {}

    def unique(name: str) -> str:
        candidate, k = name, 2
        while candidate in columns:
            candidate, k = f"{name} {k}", k + 1
        columns.add(candidate)
        return candidate

    for column in numeric:
        values = [as_number(r.get(column)) for r in train_rows]
        known = sorted(v for v in values if v is not None)
        fill[column] = known[len(known) // 2] if known else 0.0
        if len(known) < len(values):
            indicators[column] = unique(f"{column} missing")
    date_plans: dict[str, dict[str, Any]] = {}
    for info in date_infos:
        from mmcore_plugins.autofit import dates

        plan = {k: info.details[k] for k in ("format", "origin", "with_time", "time_only")}
        numeric_parts, categorical_parts = dates.parts_of(info.details)
        plan["numeric"] = {part: unique(f"{info.name} {part}") for part in numeric_parts}
        plan["categorical"] = {part: unique(f"{info.name} {part}") for part in categorical_parts}
        parts = [dates.date_parts(r.get(info.name), plan["format"], origin=plan["origin"], with_time=plan["with_time"])
                 for r in train_rows]
        for part, derived in plan["numeric"].items():
            known = sorted(p[part] for p in parts if p is not None)
            fill[derived] = known[len(known) // 2] if known else 0.0
        if any(p is None for p in parts):
            indicators[info.name] = unique(f"{info.name} missing")
        date_plans[info.name] = plan
    # The prepared table holds only the inputs, indicators and target: the user's own split column
    # (not an input) does not take the name.
    written = {target.name, *numeric, *categorical, *indicators.values(),
               *(spec["column"] for spec in slots.values() if "column" in spec),
               *(d for plan in date_plans.values() for part in ("numeric", "categorical") for d in plan[part].values())}
    split_column, k = "split", 2
    while split_column in written:
        split_column, k = f"split_{k}", k + 1
    return Plan(target=target.name, task=target.kind, slots=slots, classes=target.details.get("classes"),
                class_values=target.details.get("class_values"), labels=target.details.get("labels"), delimiter=target.details.get("delimiter"), fill=fill,
                indicators=indicators, text_files=text_files, split_column=split_column, dates=date_plans,
                empty_labels=target.details.get("empty_labels", "none"))


class Preparer:
    """Turns table rows into prepared rows (for the run's table) or raw samples (for the model).

    ``base``: the folder relative file paths in these rows start from. ``unusable``:
    ``{column: {row index: reason}}`` cells known to be missing/unreadable files, or stray cells of a
    number column that are not numbers (from inference: turned missing and noted, like a missing file);
    other file cells are checked here, and (``strict=False``) turned missing with a count in
    :attr:`dropped_files`, or (``strict=True``) raised as a :class:`ColumnError` naming row and column.
    ``allow_outside_paths``: let cells name files outside ``base`` (the rule of ``mmcore train``,
    :mod:`mmcore_plugins.io.paths`; a Predictor reads whatever its caller names, as ``mmcore predict`` does).
    """

    def __init__(self, plan: Plan, base: str | Path, *, unusable: Mapping[str, Mapping[int, str]] | None = None,
                 strict: bool = False, check_files: bool = True, allow_outside_paths: bool = False,
                 stray_numbers: bool = False) -> None:
        self.plan, self.base, self.strict, self.check_files = plan, Path(base).resolve(), strict, check_files
        #: a number column's cell that is not a number is a missing measurement, noted (fit's --val/--test
        #: tables: the rule inference applies to the training table's stray cells); strict=True: an error
        self.stray_numbers = stray_numbers and not strict
        self.allow_outside_paths = allow_outside_paths
        self._paths = cell_paths(self.base)  # each folder of the table resolved once (one lstat a cell)
        self.unusable = {c: dict(v) for c, v in (unusable or {}).items()}
        self.dropped_files: dict[str, int] = {}
        #: ``(row index, column, why)`` of every file cell turned missing (``strict=False``)
        self.dropped: list[tuple[int, str, str]] = []
        # any spelling of a class finds it (a JSON Lines 1 is the CSV's "1")
        self.classes = ClassIndex(plan.classes or [])
        self.labels = ClassIndex(plan.labels or [])

    def _file(self, column: str, kind: str, index: int, value: Any) -> str | None:
        if is_missing(value):
            return None
        if index in self.unusable.get(column, {}):
            self.dropped_files[column] = self.dropped_files.get(column, 0) + 1
            self.dropped.append((index, column, str(self.unusable[column][index])))
            return None
        from mmcore_plugins.io.paths import OutsidePathError

        try:
            path = resolve_path(value, self.base, allow_outside=self.allow_outside_paths, paths=self._paths)
        except OutsidePathError as exc:
            raise ColumnError(f"row {index + 1}, column {column!r}: {exc}") from exc
        problem = None if path is not None else f"file {value!r} does not exist (relative to {str(self.base)!r})"
        if path is not None and self.check_files:
            from mmcore_plugins.io import MediaError, check_media

            try:
                check_media(path, kind)
            except (MediaError, ValueError, OSError) as exc:
                problem = str(exc)
        if problem is not None:
            if self.strict:
                raise ColumnError(f"row {index + 1}, column {column!r}: {problem}")
            self.dropped_files[column] = self.dropped_files.get(column, 0) + 1
            self.dropped.append((index, column, problem))
            return None
        return str(path)  # resolved by resolve_path (links followed)

    def _text(self, column: str, index: int, value: Any) -> str | None:
        if is_missing(value):
            return None
        if column in self.plan.text_files:
            path = self._file(column, "text", index, value)
            if path is None:
                return None
            from mmcore_plugins.io import read_text

            return read_text(path)
        return str(value)

    def _number(self, column: str, index: int, value: Any) -> float | None:
        if is_missing(value) or is_non_finite(value):  # no measurement: the training median fills it
            return None
        number = as_number(value)
        if number is None and (self.stray_numbers or index in self.unusable.get(column, {})):  # missing, noted
            self.dropped_files[column] = self.dropped_files.get(column, 0) + 1
            self.dropped.append((index, column, f"expected a number, got {value!r}"))
            return None
        if number is None:
            raise ColumnError(f"row {index + 1}, column {column!r}: expected a number, got {value!r}"
                              + _decimal_hint([value]))
        return number

    def _date(self, column: str, index: int, value: Any) -> dict[str, Any]:
        """The parts a date cell gives (:mod:`.dates`); an empty one (or a placeholder such as ``n/a``):
        the training medians (numbers), no category, and its missing indicator set. A cell that does
        not read as a date is, like a number cell that is no number, a :class:`ColumnError` naming row
        and column -- unless inference listed it among the training table's unusable cells, or stray
        cells are notes here (``stray_numbers``: fit's --val/--test), where it is missing and noted."""
        from mmcore_plugins.autofit import dates

        plan = self.plan.dates[column]
        parts = None if is_missing(value) else dates.date_parts(value, plan["format"], origin=plan["origin"],
                                                                with_time=plan["with_time"])
        if parts is not None and not {*plan["numeric"], *plan["categorical"]} <= set(parts):
            parts = None  # a time of day in a date column (or the reverse) does not read as one: unreadable
        if parts is None and not is_missing(value):
            why = f"expected {dates.expected(plan['format'], time_only=bool(plan.get('time_only')))}, got {value!r}"
            if not (self.stray_numbers or index in self.unusable.get(column, {})):
                raise ColumnError(f"row {index + 1}, column {column!r}: {why}")
            self.dropped_files[column] = self.dropped_files.get(column, 0) + 1
            self.dropped.append((index, column, why))
        out: dict[str, Any] = {}
        for part, derived in plan["numeric"].items():
            out[derived] = self.plan.fill.get(derived, 0.0) if parts is None else float(parts[part])
        for part, derived in plan["categorical"].items():
            out[derived] = None if parts is None else parts[part]
        if column in self.plan.indicators:
            out[self.plan.indicators[column]] = float(parts is None)
        return out

    def inputs(self, row: Mapping[str, Any], index: int) -> dict[str, Any]:
        """``{slot: raw input or None}`` for one row (what the model's processors read)."""
        out: dict[str, Any] = {}
        for slot, spec in self.plan.slots.items():
            kind = spec["kind"]
            if kind in FILE_KINDS:
                out[slot] = self._file(spec["column"], kind, index, row.get(spec["column"]))
            elif kind == "text":
                out[slot] = self._text(spec["column"], index, row.get(spec["column"]))
            else:
                values: dict[str, Any] = {}
                for c in spec["numeric"]:
                    number = self._number(c, index, row.get(c))
                    values[c] = self.plan.fill.get(c, 0.0) if number is None else number
                    if c in self.plan.indicators:
                        values[self.plan.indicators[c]] = float(number is None)
                for c in spec["categorical"]:
                    value = row.get(c)
                    values[c] = None if is_missing(value) else str(value).strip()
                for c in spec.get("dates", []):
                    values.update(self._date(c, index, row.get(c)))
                out[slot] = values
        return out

    def target(self, row: Mapping[str, Any], index: int) -> Any:
        """The encoded target of one row; None when the cell is empty."""
        plan, value = self.plan, row.get(self.plan.target)
        if isinstance(value, list):
            pass
        elif is_missing(value) and plan.task == "multilabel" and plan.empty_labels == "none":
            return [0] * len(self.labels)  # "none of the labels": a negative example
        elif is_missing(value) or is_non_finite(value):  # no label: the row is left out (counted)
            return None
        if plan.task == "regression":
            number = as_number(value)
            if number is None:
                raise ColumnError(f"row {index + 1}, target {plan.target!r}: expected a number, got {value!r}")
            return number
        if plan.task == "multilabel":
            try:
                labels = multilabel_names(value, plan.delimiter)
            except ValueError as exc:
                raise ColumnError(f"row {index + 1}, target {plan.target!r}: {exc}") from exc
            found = [self.labels.get(label) for label in labels]
            unknown = [label for label, k in zip(labels, found, strict=True) if k is None]
            if unknown:
                raise ColumnError(f"row {index + 1}, target {plan.target!r}: label(s) {unknown} were not in the "
                                  f"training table (known: {', '.join(plan.labels or [])})")
            return [int(k in found) for k in range(len(self.labels))]
        found = self.classes.get(value)
        if found is None:
            known = plan.classes or []
            raise ColumnError(f"row {index + 1}, target {plan.target!r}: class {value!r} was not in the training table "
                              f"(known: {', '.join(known[:20])}{', ...' if len(known) > 20 else ''})")
        return found

    def target_label(self, row: Mapping[str, Any], index: int) -> Any:
        """The target as the prepared table stores it: the class name, the list of label names, or
        the number (the manifest maps names to indices with the plan's ``classes``/``labels``)."""
        encoded = self.target(row, index)
        if encoded is None or self.plan.task == "regression":
            return encoded
        if self.plan.task == "multilabel":
            return [label for label, on in zip(self.plan.labels or [], encoded, strict=True) if on]
        return self.plan.classes[encoded]

    def table_row(self, row: Mapping[str, Any], index: int, split: str) -> dict[str, Any]:
        """One row of the run's prepared table (the manifest the config trains on)."""
        out: dict[str, Any] = {}
        for slot, value in self.inputs(row, index).items():
            spec = self.plan.slots[slot]
            if spec["kind"] == TABULAR_SLOT:
                out.update(value)
            else:
                out[spec["column"]] = value
        out[self.plan.target] = self.target_label(row, index)
        out[self.plan.split_column] = split
        return out

    def has_input(self, row: Mapping[str, Any], inputs: Mapping[str, Any]) -> bool:
        """Whether a row gives the model any input at all, decided from the user's cells (``inputs``: the
        row's :meth:`inputs`): a file or text slot's input, or a cell of the table slot that holds a value --
        a number, a category, a date. The table slot's prepared row never tells: an empty number is
        filled with its training median, so an all-empty row would look present. The rule of ``predict
        --data``, :class:`Predictor` and ``mmcore serve``: a row without any input gets no prediction."""
        for slot, spec in self.plan.slots.items():
            if "column" in spec:
                if inputs.get(slot) is not None:
                    return True
                continue
            if any(not is_missing(row.get(c)) and not is_non_finite(row.get(c)) and as_number(row.get(c)) is not None
                   for c in spec["numeric"]):
                return True
            if any(not is_missing(row.get(c)) for c in [*spec["categorical"], *spec.get("dates", [])]):
                return True
        return False

    def sample(self, row: Mapping[str, Any], index: int, *, with_target: bool = False) -> dict[str, Any]:
        """A raw sample ``{"inputs": {slot: raw}, "target": encoded or None}`` as the manifest would give it."""
        inputs = self.inputs(row, index)
        for slot, spec in self.plan.slots.items():
            if spec["kind"] == TABULAR_SLOT and isinstance(inputs[slot], Mapping) and not spec["numeric"]:
                if all(v is None for v in inputs[slot].values()):
                    inputs[slot] = None  # an all-empty categorical row is a missing modality (as in the manifest)
        return {"inputs": inputs, "target": self.target(row, index) if with_target else None}


def decode_prediction(plan: Plan, value: Any) -> Any:
    """A head prediction -> the user's label: the class as the training table held it (``1`` from JSON
    Lines or a DataFrame, ``"+1"`` from a CSV), the list of label names, or the number."""
    if plan.task == "classification":
        values = plan.class_values or plan.classes  # runs written before class_values: the names
        return values[int(value)]
    if plan.task == "multilabel":
        return [label for label, on in zip(plan.labels or [], value, strict=True) if on]
    return float(value[0]) if isinstance(value, (list, tuple)) else float(value)
