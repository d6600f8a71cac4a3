"""What ``mmcore serve`` runs: a run directory (the eager model and its processors) or an export
folder (its front end and graph), behind one interface.

A backend turns one record (``{slot: value}``; uploads as bytes) into a prepared item --
decoding, resizing, tokenising, each value checked -- and a list of prepared items into one
result per record, in one batched forward pass. Nothing here opens a path: image, audio and video
values are bytes of uploaded files, read by :mod:`mmcore_plugins.io` with the same checks and
limits as files (decompression bombs, absurd audio headers); text values are the text itself;
table values are numbers and categories.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Slot kinds whose values come as uploaded files (never as a JSON string, which could name a path).
FILE_MODALITIES = ("image", "audio", "video")


class FieldError(ValueError):
    """A request's field is missing, of the wrong type, or unreadable: ``field`` names it (a slot, a
    slot's column ``slot.column``, or ``records[i].slot``); the message says what was expected."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.reason = field, message


@dataclass
class SlotInfo:
    """One modality slot as the API and the page show it."""

    name: str
    modality: str
    kind: str  # "file" (image / audio: one upload), "frames" (video: several image uploads), "text", "table"
    columns: list[str]
    categorical: list[str]
    categories: dict[str, list[str]]
    accept: str
    #: For a slot whose columns a plugin derives from the user's own (a ``mmcore fit`` run's numbers and
    #: categories, hook ``mmcore_table_slot``): the user's row ``{column: value or None}`` -> the
    #: processor's row (missing numbers filled, their indicators set). ``columns``/``categorical`` are
    #: then the user's columns, and a number may be left out (a missing cell, as in the training table).
    derive: Any = field(default=None, repr=False)
    #: For a one-column slot whose plugin names it from the user's column (``mmcore fit``'s ``"Customer
    #: Review"`` -> slot ``customer_review``): that column, exactly as the training table wrote it. Requests
    #: name it (the slot's name stays accepted as an alias); the page, /metadata and errors show it.
    column: str | None = None
    #: A fit run's date/time columns of this table slot (a subset of ``categorical``, where requests are
    #: read): column -> the format fit read it with (``"iso8601"`` or a ``strptime`` format). /metadata
    #: and the page show them as date fields (kind "date", the accepted format as a hint), not categories.
    dates: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """What a user calls this slot: the user's column of a one-column slot named from it, else the slot."""
        return self.column if self.column is not None else self.name

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "modality": self.modality, "input": self.kind}
        if self.column is not None:
            out["column"] = self.column
        if self.kind == "table":
            out.update(numeric=self.columns, categorical=[c for c in self.categorical if c not in self.dates],
                       categories={c: v for c, v in self.categories.items() if c not in self.dates})
            if self.dates:
                out["dates"] = [{"column": c, "kind": "date", "format": fmt, "hint": date_hint(fmt)} for c, fmt in self.dates.items()]
            if self.derive is not None:
                out["missing_numbers"] = "allowed: a number left out (or null) is a missing cell"
        if self.accept:
            out["accept"] = self.accept
        return out


def date_hint(fmt: str) -> str:
    """What a date field accepts, in words: ``"iso8601"`` -> ISO 8601 with examples; a ``strptime``
    format -> the format and an example written with it."""
    import datetime as dt

    if fmt.lower() == "iso8601":
        return "ISO 8601, e.g. 2021-03-04 or 2021-03-04T10:30"
    try:
        example = dt.datetime(2021, 3, 4, 10, 30).strftime(fmt)
    except (ValueError, TypeError):
        return fmt
    return f"{fmt}, e.g. {example}"


def _slot_dates(plan: Any, slot: str) -> dict[str, str]:
    """A fit plan's (``autofit.json``'s, or an export's ``columns``) date columns of ``slot`` -> format."""
    slots = plan.get("slots") if isinstance(plan, Mapping) else None
    spec = slots.get(slot) if isinstance(slots, Mapping) else None
    dates = plan.get("dates") if isinstance(plan, Mapping) else None
    if not isinstance(spec, Mapping) or not isinstance(dates, Mapping):
        return {}
    return {c: str(dates[c].get("format", "iso8601")) for c in spec.get("dates", []) or []
            if isinstance(dates.get(c), Mapping)}


def _slot_info(name: str, modality: str, columns: Sequence[str] | None = None, categorical: Sequence[str] = (),
               num_features: int = 0, vocabularies: Mapping[str, Any] | None = None) -> SlotInfo:
    accept = {"image": "image/*", "audio": "audio/*,.wav,.flac,.ogg,.mp3", "video": "image/*"}.get(modality, "")
    if modality in ("image", "audio"):
        return SlotInfo(name, modality, "file", [], [], {}, accept)
    if modality == "video":
        return SlotInfo(name, modality, "frames", [], [], {}, accept)
    if modality == "tabular" or columns or categorical or num_features:
        numeric = list(columns) if columns else [f"#{i}" for i in range(num_features)]
        categories = {c: sorted(v, key=lambda x: v[x]) if isinstance(v, Mapping) else list(v) for c, v in (vocabularies or {}).items()}
        return SlotInfo(name, modality, "table", numeric, list(categorical), categories, "")
    return SlotInfo(name, modality, "text", [], [], {}, "")


def _field(where: str, key: str) -> str:
    """A request field's name: ``key`` inside ``where`` (``records[0]``), or ``key`` alone."""
    return f"{where}.{key}" if where else str(key)


def by_column(slots: Sequence[SlotInfo]) -> bool:
    """Whether records name the user's columns (every slot maps from them: a ``mmcore fit`` run)."""
    return any(getattr(s, "column", None) is not None or getattr(s, "derive", None) is not None for s in slots)


def user_columns(slots: Sequence[SlotInfo]) -> list[str] | None:
    """The user's columns the model reads, in slot order (None: records name the slots)."""
    if not by_column(slots):
        return None
    return [c for s in slots for c in ([s.label] if s.kind != "table" else s.columns + s.categorical)]


def resolve_key(slots: Sequence[SlotInfo], key: str, *, dotted: bool = True) -> tuple[SlotInfo, str | None] | None:
    """What a record's key (or a form's field) names: ``(slot, None)`` for a slot (its user's column, or its
    name), ``(slot, column)`` for a table slot's column (``column`` alone on a fit run, ``slot.column`` where
    ``dotted``); None for neither. A user's column wins over a slot's name that happens to spell it."""
    if by_column(slots):
        for s in slots:
            if s.kind == "table" and s.derive is not None and key in s.columns + s.categorical:
                return s, key
            if s.column == key:
                return s, None
    for s in slots:
        if s.name == key:
            return s, None
        if dotted and s.kind == "table" and key.startswith(f"{s.name}.") and key[len(s.name) + 1:] in s.columns + s.categorical:
            return s, key[len(s.name) + 1:]
    return None


def unknown_key(slots: Sequence[SlotInfo], key: str, where: str = "") -> FieldError:
    """The error of a record key (or form field) that names nothing the model reads: the closest of the
    user's columns (or the slots; case aside) and the full list."""
    import difflib

    names = user_columns(slots) or [s.name for s in slots]
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(str(key), names, n=1) or [
        lowered[c] for c in difflib.get_close_matches(str(key).lower(), list(lowered), n=1)]
    kind = "column" if by_column(slots) else "slot"
    hint = f"did you mean {close[0]!r}? " if close else ""
    return FieldError(_field(where, key), f"not a {kind} of this model; {hint}its {kind}s are {names}")


#: The keys of a record's answer -- and ``mmcore predict --data``'s ``row`` -- that an id column of the same
#: name must not overwrite: it is echoed as ``"<name> (id)"``, the name predict's line gives it.
ANSWER_KEYS = ("row", "prediction", "probabilities", "modalities", "missing", "warnings", "error")


class Backend:
    """Common parts: validating a record's values against the slots before any decoding.

    A record of a run whose plugin names its inputs from the user's own columns (a ``mmcore fit`` run:
    :attr:`by_column`) is the user's row ``{column: value}``, the columns exactly as the training table
    wrote them; each slot's name is still accepted as an alias (``{"customer_review": ...}``, ``{"tabular":
    {column: value}}``), but a record naming a column both ways with different values is refused."""

    slots: list[SlotInfo]
    head: dict[str, Any]
    description: dict[str, Any]
    #: A fit run's training-table columns that the model does not read (its target, ids, a split column): a
    #: record may hold them (a whole row of the training table), and they are ignored, as Predictor ignores a
    #: table's. A key that is no column of the training table stays an error (:meth:`unknown_key`: with an
    #: absent column read as a missing cell, that refusal is the only guard against a misspelt one).
    ignored: frozenset[str] = frozenset()
    #: Those of them that ``mmcore fit`` inferred as ids (``sku``, ``Kundennr``): a record's values of them are
    #: echoed in its answer (:meth:`ids`), as ``mmcore predict --data`` writes them into each line.
    id_columns: tuple[str, ...] = ()
    #: Whether :meth:`predict` may run on several threads at once, each on part of a batch (the server splits
    #: large batches so: :class:`mmcore_plugins.deploy.serve.MicroBatcher`). False unless a backend says so.
    parallel_parts: bool = False

    @property
    def by_column(self) -> bool:
        """Whether records name the user's columns (every slot maps from them: a ``mmcore fit`` run)."""
        return by_column(self.slots)

    @property
    def columns(self) -> list[str] | None:
        """The user's columns the model reads, in slot order (None: records name the slots)."""
        return user_columns(self.slots)

    def resolve_key(self, key: str, *, dotted: bool = True) -> tuple[SlotInfo, str | None] | None:
        return resolve_key(self.slots, key, dotted=dotted)

    def unknown_key(self, key: str, where: str = "") -> FieldError:
        return unknown_key(self.slots, key, where)

    def by_slot(self, record: Mapping[str, Any], where: str = "", *, dotted: bool | None = None
                ) -> tuple[dict[str, Any], dict[str, str]]:
        """A record -> ``{slot: value}`` and, per slot, the field its errors name (the user's column of a
        one-column slot; for a table slot given column by column, the record itself, so that a cell's
        error names ``records[0].column``). FieldError for a key naming nothing, or a column given both as
        itself and by its slot's alias with different values (naming both). ``dotted``: whether
        ``slot.column`` keys are read (a form's; default: on a fit run)."""
        out: dict[str, Any] = {}
        given: dict[str, str] = {}  # slot -> the key it was given under
        cells: dict[str, dict[str, tuple[str, Any]]] = {}  # table slot -> column -> (key, value)
        for key, value in record.items():
            if str(key) in self.ignored:  # the user's own column, which the model does not read
                continue
            found = self.resolve_key(str(key), dotted=self.by_column if dotted is None else dotted)
            if found is None:
                raise self.unknown_key(str(key), where)
            s, column = found
            if column is not None:
                cells.setdefault(s.name, {})
                if column in cells[s.name] and cells[s.name][column][1] != value:
                    raise _conflict(where, cells[s.name][column][0], str(key))
                cells[s.name][column] = (str(key), value)
                continue
            if s.name in given and out[s.name] != value:
                raise _conflict(where, given[s.name], str(key))
            out[s.name], given[s.name] = value, str(key)
        fields = {s.name: _field(where, s.label) for s in self.slots if s.kind != "table"}
        for s in self.slots:
            if s.kind != "table":
                continue
            fields[s.name] = _field(where, s.name)
            if s.name not in cells:
                continue
            whole = out.get(s.name)
            if whole is not None and not isinstance(whole, Mapping):
                first = next(iter(cells[s.name].values()))[0]
                raise FieldError(_field(where, first), f"the slot {s.name!r} is given whole too ({given[s.name]!r}); "
                                                       "give its columns one way")
            merged = dict(whole or {})
            for column, (key, value) in cells[s.name].items():
                if column in merged and merged[column] != value:
                    raise _conflict(where, f"{s.name}.{column}", key)
                merged[column] = value
            out[s.name] = merged
            fields[s.name] = where
        return out, fields

    def check(self, record: Mapping[str, Any], where: str = "", *, dotted: bool | None = None) -> dict[str, Any]:
        """The record's values by slot (None = missing), each of the type its slot takes; FieldError otherwise
        (keys as :meth:`by_slot` reads them)."""
        if not isinstance(record, Mapping):
            kind = "column" if self.by_column else "slot"
            raise FieldError(where or "record", f"expected an object {{{kind}: value}}, got {type(record).__name__}")
        values, fields = self.by_slot(record, where, dotted=dotted)
        out: dict[str, Any] = {}
        for s in self.slots:
            value = values.get(s.name)
            field = fields[s.name]
            if value is None:
                out[s.name] = None
            elif s.kind == "file":
                if not isinstance(value, (bytes, bytearray)):
                    raise FieldError(field, f"{s.modality} {'columns' if s.column else 'slots'} take an uploaded file "
                                            f"(multipart/form-data), not {type(value).__name__} (a path is never opened)")
                out[s.name] = bytes(value)
            elif s.kind == "frames":
                if not isinstance(value, list) or not value or not all(isinstance(v, (bytes, bytearray)) for v in value):
                    raise FieldError(field, "video slots take one or more uploaded frame images (multipart/form-data)")
                out[s.name] = [bytes(v) for v in value]
            elif s.kind == "text":
                if not isinstance(value, str):
                    raise FieldError(field, f"expected text (a string), got {type(value).__name__}")
                out[s.name] = value if value.strip() else None
            else:
                out[s.name] = self._table_value(s, value, field)
        if not self.by_column and all(v is None for v in out.values()):  # a train run's record, as Predictor's
            raise FieldError(where or "record", f"needs at least one of the slots {[s.name for s in self.slots]}")
        return out  # a fit run's record with no input at all (:meth:`has_input`) gets no prediction, as its row does

    def has_input(self, record: Mapping[str, Any], where: str = "") -> bool:
        """Whether a record gives the model any input at all, decided from the user's own values (a
        :meth:`check`-ed record is not enough: a fit run's table slot fills an empty number with its training
        median). A record without any (``{}``, every cell empty, null or a placeholder, only columns the
        model ignores) gets no prediction -- ``{"prediction": null, "missing": "no input in this record"}``
        -- as ``Predictor`` and ``mmcore predict --data`` give a row of a fit run without input none
        (docs/data.md). A ``mmcore train`` run's record (slots) without any is refused by :meth:`check`
        (422), as ``Predictor`` refuses such a row of that run."""
        from mmcore_plugins.deploy.frontend import is_missing, is_non_finite

        values, _ = self.by_slot(record, where)
        for value in values.values():
            cells = list(value.values()) if isinstance(value, Mapping) else value if isinstance(value, list) else [value]
            if any(not is_missing(v) and not is_non_finite(v) for v in cells):
                return True
        return False

    def ids(self, record: Any) -> dict[str, Any]:
        """A raw record's identifiers ``{column: value}`` for its answer, under the names ``mmcore predict --data``
        writes them with (:func:`mmcore.cli_predict.row_ids`: ``"row"`` becomes ``"row (id)"``), each value as the
        request gave it; none for a record that does not hold an id column (or is no object)."""
        from mmcore.cli_predict import row_ids

        if not isinstance(record, Mapping):
            return {}
        return row_ids((None, None, None, {c: record[c] for c in self.id_columns if c in record}), ANSWER_KEYS)

    def no_input_note(self) -> str:
        """The ``"missing"`` note of a record without any input (:meth:`has_input`)."""
        return f"no input in this record: every column the model reads ({', '.join(map(str, self.columns or []))}) is empty"

    @staticmethod
    def _table_value(s: SlotInfo, value: Any, field: str) -> Any:
        """A table slot's value checked: numbers and categories of the slot's columns. A fit run's slot
        (``derive``) reads each number cell by the rule of the table reader (what ``Predictor`` and ``mmcore
        predict --data`` apply to a CSV cell: ``"0.75"``, ``" 3 "``, ``"1e3"`` are numbers; empty, null,
        ``"N/A"`` and non-finite cells are missing), since ``derive`` *is* that rule; else a finite number."""
        if isinstance(value, list) and not s.categorical:
            bad = [i for i, v in enumerate(value) if isinstance(v, bool) or not isinstance(v, (int, float))]
            if bad:
                raise FieldError(f"{field}[{bad[0]}]", f"expected a number, got {value[bad[0]]!r}")
            if len(value) != len(s.columns):
                raise FieldError(field, f"expected {len(s.columns)} numbers, got {len(value)}")
            return value
        if not isinstance(value, Mapping):
            raise FieldError(field or s.name, f"expected an object {{column: value}} with columns {s.columns + s.categorical}, got "
                                    f"{type(value).__name__}")
        unknown = [k for k in value if k not in s.columns and k not in s.categorical]
        if unknown:
            raise FieldError(_field(field, unknown[0]), f"not a column of this slot; its columns are {s.columns + s.categorical}")
        row: dict[str, Any] = {}
        for c in s.columns:
            v = value.get(c)
            if s.derive is not None:  # read (or refused, below) by the plugin's rule, as the training table was
                row[c] = v
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise FieldError(_field(field, c), f"expected a finite number, got {v!r}")
            row[c] = v
        for c in s.categorical:
            v = value.get(c)
            if v is not None and not isinstance(v, (str, int, float)):
                raise FieldError(_field(field, c), f"expected a category (a string), got {type(v).__name__}")
            row[c] = v
        if s.derive is not None:
            _derivable(s, row, field)
        return row if s.columns and s.columns[0] != "#0" else [row[c] for c in s.columns]

    def warnings(self, record: Mapping[str, Any]) -> list[str]:
        """A checked record's notes for its answer (``"warnings"`` beside the prediction): each category cell
        whose value the training split never held (:data:`SlotInfo.categories`, the vocabulary the model
        encodes by: the run's processor's, or the export's manifest's) -- predicted all the same, as
        "unknown" (index 0), but the user is told. The lookup is the processor's (``str(value)``); a fit
        run's row is derived first, as :meth:`prepare` derives it. Empty when there is nothing to say."""
        from mmcore.engine.unseen import record_warning

        out = []
        for s in self.slots:
            row = record.get(s.name)
            if s.kind != "table" or not isinstance(row, Mapping) or not s.categories:
                continue
            if s.derive is not None:
                try:
                    row = s.derive(dict(row))
                except (ValueError, TypeError):  # prepare names the cell at fault
                    continue
            for column, values in s.categories.items():
                value = row.get(column) if isinstance(row, Mapping) else None
                if value is not None and str(value) not in values:
                    out.append(record_warning(column, str(value)))
        return out

    # To implement: prepare(checked record) -> item; predict(items) -> results.
    def prepare(self, record: Mapping[str, Any]) -> Any:
        raise NotImplementedError

    def predict(self, items: Sequence[Any]) -> list[dict[str, Any]]:
        raise NotImplementedError


def _derivable(s: SlotInfo, row: Mapping[str, Any], field: str) -> None:
    """FieldError naming ``field.column`` (``records[0].price``) for the first cell of ``row`` that the slot's
    ``derive`` refuses (a number cell that is no number: ``"abc"``, ``true``), with derive's words (what was
    expected and what came). One call for a good row; the cells are tried one by one only to name a bad one."""
    try:
        s.derive(dict(row))
    except ValueError as exc:
        for column in s.columns + s.categorical:
            if row.get(column) is None:
                continue
            try:
                s.derive({column: row[column]})
            except ValueError as cell:
                raise FieldError(_field(field, column), str(cell)) from None
        raise FieldError(field or s.name, str(exc)) from None


def _conflict(where: str, first: str, second: str) -> FieldError:
    return FieldError(_field(where, second), f"given both as {first!r} and as {second!r}, with different values; "
                                             "they name the same column: give it once")


def _decode_error(field: str, exc: Exception) -> FieldError:
    """The reader's message about an upload, worded for one (no stream object's repr, no "file")."""
    import re

    message = str(exc).replace("image (the given stream)", "the uploaded image").replace("audio from the given stream",
                                                                                        "the uploaded audio")
    return FieldError(field, re.sub(r"Error opening <[^>]*>: ", "", message))


class RunBackend(Backend):
    """A run directory's best checkpoint, eager, with its processors."""

    #: The eager forward pass keeps no state between calls (eval mode; ``torch.no_grad`` is per thread) and
    #: each thread runs its own torch operations: parts of a batch may run at once.
    parallel_parts = True

    def __init__(self, run_dir: str | Path, manager: Any, checkpoint: str = "best") -> None:
        import torch

        from mmcore.cli import load_run

        self.model, self.config = load_run(run_dir, manager, checkpoint)
        self.model.eval()
        self.torch = torch
        self.slots = []
        for name in self.model.slots:
            p = self.model.processors[name]
            modality = getattr(self.model.encoders[name], "modality", "unknown")
            self.slots.append(_slot_info(name, modality, getattr(p, "columns", None), getattr(p, "categorical", None) or (),
                                         getattr(p, "num_features", 0) if modality == "tabular" else 0,
                                         getattr(p, "vocabularies", None)))
        classes = getattr(self.model.head, "classes", None)
        self.head = {"name": (self.model.spec or {}).get("head", {}).get("name"), "classes": classes}
        self.description = {"kind": "run", "path": str(Path(run_dir).resolve()), "checkpoint": checkpoint}
        for s in self.slots:  # a run whose plugin derives columns from the user's own: the user's columns
            answer = manager.hook.mmcore_table_slot(run_dir=Path(run_dir), slot=s.name) if s.kind == "table" else None
            if answer is not None:
                numeric, categorical, s.derive = answer
                s.columns, s.categorical = list(numeric), list(categorical)
                s.categories = {c: v for c, v in s.categories.items() if c in s.categorical}
        plan = manager.hook.mmcore_export_columns(run_dir=Path(run_dir))  # a fit run: slots named from the user's columns
        for s in self.slots:
            column = ((plan or {}).get("slots") or {}).get(s.name, {}).get("column")
            if s.kind != "table" and isinstance(column, str):
                s.column = column
            elif s.kind == "table":
                s.dates = {c: f for c, f in _slot_dates(plan, s.name).items() if c in s.categorical}
        if isinstance(plan, Mapping) and self.by_column:  # the training table's other columns (hook's table_columns)
            table = plan.get("table_columns") if isinstance(plan.get("table_columns"), list) else []
            read = set(self.columns or ())
            self.ignored = frozenset(c for c in [*table, plan.get("target")] if isinstance(c, str) and c not in read)
            ids = plan.get("id_columns") if isinstance(plan.get("id_columns"), list) else []
            self.id_columns = tuple(c for c in ids if isinstance(c, str) and c in self.ignored)
        # Uploads whose processor splits its work (``batch_steps``: the file decoded per record, the rest -- the
        # log-mel spectrogram, the image normalisation -- computed for a whole batch in the model thread): the
        # per-record work that micro-batching cannot share shrinks to the file's decoding.
        self.steps: dict[str, tuple[Any, Any]] = {}
        for s in self.slots:
            split = getattr(self.model.processors[s.name], "batch_steps", None)
            steps = split() if s.kind == "file" and callable(split) else None
            if steps is not None:
                self.steps[s.name] = steps

    def prepare(self, record: Mapping[str, Any]) -> dict[str, Any]:
        item = {}
        for s in self.slots:
            value = record.get(s.name)
            if value is None:
                item[s.name] = None
                continue
            processor = self.model.processors[s.name]
            try:
                if s.name in self.steps:
                    item[s.name] = self.steps[s.name][0](io.BytesIO(value))
                elif s.kind == "file":
                    item[s.name] = processor(io.BytesIO(value))
                elif s.kind == "frames":
                    item[s.name] = processor([io.BytesIO(v) for v in value])
                elif s.derive is not None:
                    item[s.name] = processor(s.derive(value))
                else:
                    item[s.name] = processor(value)
            except (ValueError, TypeError) as exc:
                raise _decode_error(s.label, exc) from exc
        return item

    def predict(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        from mmcore_plugins.deploy.frontend import json_safe

        torch = self.torch
        with torch.no_grad():
            inputs = {s.name: (self.steps[s.name][1] if s.name in self.steps else self.model.processors[s.name].collate)(
                [i[s.name] for i in items]) for s in self.slots}
            out = self.model(inputs)
        predictions = self.model.head.format_predictions(out)
        probabilities = out.extras.get("probabilities") if isinstance(out.extras, dict) else None
        rows = probabilities.tolist() if isinstance(probabilities, torch.Tensor) and probabilities.dim() == 2 else None
        classes = self.head.get("classes")
        results = []
        for row, item in enumerate(items):
            result: dict[str, Any] = {"prediction": json_safe(predictions[row])}
            if rows is not None:
                values = [round(p, 6) for p in rows[row]]
                result["probabilities"] = dict(zip(classes, values, strict=True)) if classes and len(classes) == len(values) else values
            result["modalities"] = [s.label for s in self.slots if item[s.name] is not None and self._reads(s.name, item[s.name])]
            results.append(result)
        return results


    def _reads(self, slot: str, item: Any) -> bool:
        """Whether the model reads ``item`` as present (a processor may say no: text_ngram's text of no known unit)."""
        reads = getattr(self.model.processors[slot], "reads", None)
        return not callable(reads) or bool(reads(item))


class ExportBackend(Backend):
    """An export folder (``mmcore export``): its front end and graph (onnxruntime or torch)."""

    def __init__(self, folder: str | Path, graph: str | None = None, threads: int | None = None,
                 spinning: bool = True) -> None:
        from mmcore_plugins.deploy import frontend

        self.artefact = frontend.load(folder, graph=graph, threads=threads, spinning=spinning)
        manifest = self.artefact.manifest
        self.slots = []
        for name, spec in manifest["slots"].items():
            self.slots.append(_slot_info(name, spec["modality"] if spec["kind"] != "tabular" else "tabular",
                                         spec.get("columns"), spec.get("categorical") or (), spec.get("num_features", 0),
                                         spec.get("vocabularies")))
        columns = self.artefact.columns
        for s in self.slots:  # a fit run's export: the table slot takes the user's columns, derived as fit derives them
            if columns is not None and s.kind == "table":
                s.columns = list(columns.slots[s.name]["numeric"])
                s.categorical = [*columns.slots[s.name]["categorical"], *columns.slots[s.name].get("dates", [])]
                s.categories = {c: v for c, v in s.categories.items() if c in s.categorical}
                s.dates = {c: str(columns.dates[c].get("format", "iso8601")) for c in columns.slots[s.name].get("dates", [])}
                s.derive = lambda values, slot=s.name, numeric=list(s.columns): columns.table_row(
                    slot, values if isinstance(values, Mapping) else dict(zip(numeric, values, strict=True)))  # a list of the numbers
            elif columns is not None:
                s.column = columns.slots[s.name]["column"]
        if columns is not None:
            self.ignored = frozenset(columns.ignored_columns)
            self.id_columns = tuple(c for c in columns.id_columns if c in self.ignored)
        self.head = dict(manifest["head"])
        self.description = {"kind": "export", "path": str(Path(folder).resolve()), "graph": self.artefact.graph_file,
                            "format": manifest["graph"]["format"], "int8": self.artefact.graph_file.endswith(".int8.onnx"),
                            "source": manifest.get("source", {}), "verification": manifest.get("verification", {})}

    def _decode(self, s: SlotInfo, value: Any) -> Any:
        from mmcore_plugins.io import read_audio, read_image

        spec = self.artefact.slots[s.name].spec
        if s.kind == "file" and s.modality == "image" or s.kind == "frames":
            frame = spec if s.kind == "file" else spec["frame"]
            read = lambda data: read_image(io.BytesIO(data), channels=frame["channels"], background=frame["background"]).numpy()
            return read(value) if s.kind == "file" else [read(v) for v in value]
        if s.kind == "file":
            return read_audio(io.BytesIO(value), sample_rate=spec["sample_rate"], max_seconds=spec["max_seconds"]).numpy()
        return value

    def prepare(self, record: Mapping[str, Any]) -> dict[str, Any]:
        from mmcore_plugins.deploy.frontend import FrontEndError

        item = {}
        for s in self.slots:
            value = record.get(s.name)
            try:
                if value is not None and s.derive is not None:
                    value = s.derive(value)
                item[s.name] = None if value is None else self.artefact.slots[s.name].prepare(self._decode(s, value))
            except FrontEndError as exc:
                raise FieldError(s.label, exc.reason) from exc
            except (ValueError, TypeError) as exc:
                raise _decode_error(s.label, exc) from exc
        return item

    def predict(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        # one record a graph call where a record's answer would depend on its batch-mates (dynamic int8)
        return self.artefact.predict_prepared(items)  # a fit run's modalities by the user's columns


def open_backend(path: str | Path, manager: Any = None, *, graph: str | None = None, threads: int | None = None,
                 spinning: bool = True) -> Backend:
    """A run directory or an export folder (told apart by the export's manifest.json); ``threads`` and
    ``spinning``: the export's onnxruntime session (see :func:`mmcore_plugins.deploy.frontend.load`)."""
    from mmcore_plugins.deploy.frontend import MANIFEST

    folder = Path(path)
    if (folder / MANIFEST).is_file():
        return ExportBackend(folder, graph=graph, threads=threads, spinning=spinning)
    if graph is not None:
        raise FieldError("--graph", f"{str(folder)!r} is a run directory; --graph picks a graph file of an export folder")
    if manager is None:
        from mmcore.plugin_manager import get_plugin_manager

        manager = get_plugin_manager()
    return RunBackend(folder, manager)
