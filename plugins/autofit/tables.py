"""A ``fit`` run's tables on the command line: ``mmcore predict RUN --data FILE`` and ``mmcore embed RUN
--data FILE`` (hook ``mmcore_table_inputs``) read a table the way :class:`~mmcore_plugins.autofit.predictor.Predictor`
does -- through the run's column plan, so that users name only their own columns (a ``"<column> missing"``
indicator or a text file's contents are derived again, never asked for), under the same rule: a column
the model reads is in the table or declared missing (``--missing``); a missing or unreadable file is a
missing modality of its row, noted in its line (``--strict``: the row's error)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import mmcore
from mmcore_plugins.autofit.fitting import PLAN_FILE
from mmcore_plugins.autofit.infer import ColumnError
from mmcore_plugins.autofit.prepare import Preparer, check_table_columns


@mmcore.hookimpl
def mmcore_table_inputs(path: Path, encoding: str, run_dir: Path | None, missing: list[str], strict: bool,
                        sep: str | None, decimal: str | None):
    # no defaults: pluggy passes a hook's arguments only to parameters without one
    """Each row of ``path`` as the fit run's model inputs (see the module docstring), streamed: the
    columns are checked against the header first (an error before any row is read), then the rows
    come batch by batch (:func:`~mmcore_plugins.io.tables.iter_table`), so memory follows one batch
    whatever the table's length. None for a run that ``fit`` did not write (the manifest plugin answers)."""
    if run_dir is None or not (Path(run_dir) / PLAN_FILE).is_file():
        return None
    from mmcore_plugins.autofit.predictor import read_identifier_columns, read_plan, read_table_options
    from mmcore_plugins.io.tables import recorded_encoding, table_columns

    plan = read_plan(run_dir)
    recorded = read_table_options(run_dir)  # the encoding, delimiter and decimal mark fit read its table with
    reading = {"encoding": encoding or recorded_encoding(path, recorded["encoding"]), "sep": sep or recorded["sep"],
               "decimal": decimal or recorded["decimal"]}
    header = table_columns(path, encoding=reading["encoding"], sep=reading["sep"])
    # the columns fit read with decimal commas: so again, whatever their share here (not under --decimal .)
    reading["decimal_columns"] = recorded["decimal_columns"] if reading["decimal"] != "." else []
    declared = check_table_columns(plan, header, list(missing or ()), where=str(path), option="--missing")
    preparer = Preparer(plan, Path(path).expanduser().resolve().parent, strict=strict, allow_outside_paths=True)  # the user named this table
    ids = [c for c in read_identifier_columns(run_dir) if c in header]  # carried into each line: predictions join back
    return _stream_inputs(path, reading, plan, preparer, declared, ids)


def _stream_inputs(path: Path, reading: dict[str, Any], plan: Any, preparer: Preparer, declared: list[str],
                   ids: list[str]):
    from mmcore_plugins.io.tables import iter_table

    i = -1
    for batch in iter_table(path, **reading):
        for row in batch:
            i += 1
            keys = {c: row.get(c) for c in ids}  # the row's identifiers, as written (the hook's 4th element)
            if declared:
                row = {**row, **dict.fromkeys(declared)}
            seen = len(preparer.dropped)
            try:
                inputs = preparer.sample(row, i)["inputs"]
            except ColumnError as exc:
                yield (None, str(exc), "", keys)
                continue
            if not preparer.has_input(row, inputs):  # no prediction, and the line says why (docs/data.md)
                notes = [f"column {column!r}: {why}" for _, column, why in preparer.dropped[seen:]]
                del preparer.dropped[seen:]
                yield (None, None, "; ".join(["no input in this row: every column the model reads "
                                              f"({', '.join(plan.input_columns)}) is empty", *notes]), keys)
                continue
            notes = [f"column {column!r}: {why} (a missing modality)" for _, column, why in preparer.dropped[seen:]]
            del preparer.dropped[seen:]  # noted in the row's line; kept, they would grow with the table
            yield (inputs, None, "; ".join(notes), keys)


@mmcore.hookimpl
def mmcore_table_options(run_dir: Path, path: Path):
    """How the fit run read its training table (``autofit.json``'s ``table.options``: the ``--encoding``,
    and the ``--sep``/``--decimal`` given or found), so that predict, eval, explain and embed read the
    user's next table alike -- a legacy encoding (cp1252) not for a file that is itself UTF-8
    (:func:`~mmcore_plugins.io.tables.recorded_encoding`). None for a run ``fit`` did not write."""
    if run_dir is None or not (Path(run_dir) / PLAN_FILE).is_file():
        return None
    from mmcore_plugins.autofit.predictor import read_table_options
    from mmcore_plugins.io.tables import recorded_encoding

    options = read_table_options(run_dir)
    return {**options, "encoding": recorded_encoding(path, options["encoding"])}


@mmcore.hookimpl
def mmcore_table_samples(path: Path, encoding: str, model: Any, run_dir: Path | None, missing: list[str], strict: bool,
                         sep: str | None, decimal: str | None):
    """``mmcore eval RUN --data TABLE`` on a fit run: each row prepared as :meth:`Predictor.evaluate`
    prepares it (columns derived again, the same cell and column rules), with its encoded target.
    None for a run ``fit`` did not write."""
    if run_dir is None or not (Path(run_dir) / PLAN_FILE).is_file():
        return None
    from mmcore_plugins.autofit.predictor import Predictor, read_plan

    predictor = Predictor(run_dir, model, read_plan(run_dir), {})
    samples, _, _, notes = predictor._prepare(Path(path), missing_columns=list(missing or ()), strict=strict,
                                              with_target=True, encoding=encoding, option="--missing",
                                              sep=sep, decimal=decimal)
    return samples, notes


def _bare_file_column(item: str, plan: Any) -> str | None:
    """``mmcore predict RUN photo.png`` on a fit run: the one column whose slot has the modality the file's
    extension names (the registry's map, as for a train run's bare paths), or None (no such file, an
    unknown extension, no column or several of that modality: the user names the column)."""
    if not Path(item).expanduser().is_file():
        return None
    from mmcore.plugin_manager import get_plugin_manager

    modality = get_plugin_manager().registry.extension_modalities().get(Path(item).suffix.lower())
    matches = [spec["column"] for spec in plan.slots.values() if "column" in spec and spec.get("kind") == modality
               and (modality != "text" or spec["column"] in plan.text_files)]  # a text column of text, not of files
    return matches[0] if modality is not None and len(matches) == 1 else None


#: The table-reading advice of infer._decimal_hint, which a served record has no option for.
_DECIMAL_OPTION = ", or read the table with --decimal , (decimal=',' from Python)"


@mmcore.hookimpl
def mmcore_table_slot(run_dir: Path | None, slot: str):
    """``mmcore serve`` of a fit run: the numbers-and-categories slot as the user's columns, derived as
    :class:`Predictor` derives a row (a missing number: the training median and its indicator). None for
    another slot or a run ``fit`` did not write."""
    if run_dir is None or not (Path(run_dir) / PLAN_FILE).is_file():
        return None
    from mmcore_plugins.autofit.predictor import read_plan

    plan = read_plan(run_dir)
    spec = plan.slots.get(slot)
    if spec is None or "column" in spec:
        return None
    from mmcore_plugins.autofit.predictor import read_table_options
    from mmcore_plugins.io.tables import decimal_comma_cells

    preparer = Preparer(plan, Path.cwd(), strict=True)  # no file is read: only this slot's cells are given
    # a string cell of a column fit read with decimal commas ("199,90") is read so again; a JSON number is a number
    decimals = read_table_options(run_dir)["decimal_columns"]

    def derive(values: dict[str, Any]) -> dict[str, Any]:
        try:
            return preparer.inputs(decimal_comma_cells([dict(values)], decimal_columns=decimals)[0], 0)[slot]
        except ColumnError as exc:  # serve has no --decimal: the hint keeps only "write it with a point"
            raise ValueError(str(exc).replace("row 1, ", "").replace(_DECIMAL_OPTION, "")) from None

    return list(spec["numeric"]), [*spec["categorical"], *spec.get("dates", [])], derive


@mmcore.hookimpl
def mmcore_export_columns(run_dir: Path):
    """``mmcore export`` of a fit run: the column plan (``autofit.json``'s, checked as Predictor checks it)
    as plain JSON, so that the export's front end derives what fit derives. None for another run."""
    if run_dir is None or not (Path(run_dir) / PLAN_FILE).is_file():
        return None
    from mmcore_plugins.autofit.predictor import (
        read_identifier_columns,
        read_plan,
        read_table_columns,
        read_table_options,
    )

    plan = read_plan(run_dir)
    # id_columns: the columns fit inferred as ids -- serve echoes a record's values of them in its answer, as
    # predict --data writes them into each line, so that answers join back to the user's rows
    # decimal_columns: the number columns fit read with decimal commas, whose string cells the front end reads so
    # table_columns: the training table's whole header -- serve ignores a record's cells of the ones the model
    # does not read (the target, ids), as Predictor ignores a table's, and refuses only a key that is no column
    return {"derived_by": "mmcore fit", "input_columns": plan.input_columns,
            "table_columns": read_table_columns(run_dir), "id_columns": read_identifier_columns(run_dir),
            "decimal_columns": read_table_options(run_dir)["decimal_columns"],
            **plan.to_json()}


@mmcore.hookimpl
def mmcore_record_inputs(items: list[str], run_dir: Path | None):
    """``mmcore predict RUN column=value ...`` for a fit run: the user's columns (or a one-column slot's
    name, or ``slot={column: value}`` for the numbers-and-categories slot), prepared through the column
    plan as :class:`Predictor` prepares a row; a column left out is a missing cell. A column of the
    training table that the model does not read (the target, an id) is ignored with a warning, as
    Predictor and serve ignore it. A file that does not exist is an error (the user named it). None for a
    run ``fit`` did not write."""
    if run_dir is None or not (Path(run_dir) / PLAN_FILE).is_file():
        return None
    import difflib

    from mmcore.yamlio import load_yaml
    from mmcore_plugins.autofit.predictor import read_plan, read_table_columns

    plan = read_plan(run_dir)
    columns, by_slot = plan.input_columns, plan.slot_columns()
    unread = [c for c in read_table_columns(run_dir) if c not in columns]
    ignored: list[str] = []
    record: dict[str, Any] = {}
    given: dict[str, str] = {}  # column -> how the command line named it (itself, or its slot's alias)

    def put(column: str, value: Any, named: str) -> None:
        if column in record and record[column] != value:
            raise ValueError(f"{given[column]!r} and {named!r} name the same column {column!r} with different values "
                             f"({record[column]!r}, {value!r}); give it once, as {column!r}")
        record[column], given[column] = value, named

    for item in items:
        key, sep, value = item.partition("=")
        spec = plan.slots.get(key)
        if not sep:  # a bare file path: the column whose modality its extension names, when exactly one has it
            key, value = _bare_file_column(item, plan), item
            if key is None:
                raise ValueError(f"input {item!r} is not column=value, nor a file of a modality exactly one column has; "
                                 f"this model reads the columns {', '.join(columns)}")
        if spec is not None and "column" not in spec and key not in columns:  # a whole slot of numbers/categories
            mapping = load_yaml(value, source=key)
            if not isinstance(mapping, dict):
                raise ValueError(f"{key}: expected {{column: value, ...}} of {spec['numeric'] + spec['categorical']}, got {value!r}")
            for k, v in mapping.items():
                put(str(k), v, f"{key}.{k}")
        elif key in columns:  # the user's own column, exactly as the training table wrote it
            put(key, value, key)
        elif key in by_slot:  # a one-column slot's name: an alias of its column
            put(by_slot[key], value, key)
        elif key in unread:  # the target or an id: a whole training row is accepted, as Predictor and serve accept it
            ignored.append(key)
        else:
            lowered = {c.lower(): c for c in columns}
            close = difflib.get_close_matches(key, columns, n=1) or [lowered[c] for c in
                                                                      difflib.get_close_matches(key.lower(), lowered, n=1)]
            raise ValueError(f"{key!r} is not a column this model reads ({', '.join(repr(c) for c in columns)})"
                             + (f"; did you mean {close[0]!r}?" if close else ""))
    if ignored:
        # a note on stderr, not an error: the command line's record is the user's own row
        print(f"mmcore: ignored {', '.join(repr(k) for k in ignored)}: the training table's column(s) this model "
              "does not read (the target, ids)", file=sys.stderr)
    unknown = [k for k in record if k not in columns]
    if unknown:
        raise ValueError(f"{', '.join(repr(k) for k in unknown)}: not columns this model reads "
                         f"({', '.join(repr(c) for c in columns)})")
    try:
        inputs = Preparer(plan, Path.cwd(), strict=True, allow_outside_paths=True).sample(record, 0)["inputs"]
    except ColumnError as exc:
        raise ValueError(str(exc).replace("row 1, ", "")) from None
    return {slot: raw for slot, raw in inputs.items() if raw is not None}
