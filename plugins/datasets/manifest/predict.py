"""The manifest's part of ``mmcore predict --data FILE`` (hook ``mmcore_table_inputs``): a table's rows
-> model inputs, built and checked the way the manifest builds training samples (:func:`inputs_from_rows`),
with the run's own column mapping when it was trained on a manifest, else one column per slot named
after it (a tabular slot whose name is not a column: its processor's named columns)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mmcore
from mmcore_plugins.datasets.manifest.rows import inputs_from_rows

#: Modalities whose cells are file paths (relative to the table's folder).
FILE_MODALITIES = ("image", "audio", "video")


def data_columns(data: Mapping[str, Any], model: Any, header: set[str]) -> tuple[dict[str, Any], list[str]]:
    """``(columns, path_columns)`` for a --data table: the run's manifest mapping, else one column per
    slot named after it (a tabular slot with named columns: those columns)."""
    if data.get("name") == "manifest" and isinstance(data.get("columns"), Mapping):
        return dict(data["columns"]), list(data.get("path_columns") or [])
    columns: dict[str, Any] = {}
    path_columns: list[str] = []
    for slot in model.slots:
        processor = model.processors.get(slot)
        numeric, categorical = processor.columns, processor.categorical  # a row reader's (Processor)
        if slot not in header and (numeric or categorical):
            columns[slot] = {k: list(v) for k, v in (("numeric", numeric), ("categorical", categorical)) if v}
        else:
            columns[slot] = slot
            if model.encoders[slot].modality in FILE_MODALITIES and slot in header:
                path_columns.append(slot)  # a file path (a text column holds the text itself)
    return columns, path_columns


@mmcore.hookimpl(trylast=True)  # a dataset plugin that knows its own config better answers first
def mmcore_table_inputs(path: Path, encoding: str, model: Any, data: Mapping[str, Any], missing: list[str],
                        sep: str | None, decimal: str | None):
    # no defaults: pluggy passes a hook's arguments only to parameters without one
    """Each row of ``path`` as model inputs, or the row's problems (see :func:`inputs_from_rows`).
    File paths resolve against the table's folder and may lie outside it (the user named this table).
    A missing file is the row's problem, as it is the training manifest's (strict either way).

    Streamed: the columns are checked against the table's header before any row is read, then the
    rows are built batch by batch (:func:`~mmcore_plugins.io.tables.iter_table`), so memory follows
    one batch whatever the table's length."""
    from mmcore_plugins.datasets.manifest.source import DECIMAL
    from mmcore_plugins.io.tables import table_columns

    header = table_columns(path, encoding=encoding, sep=sep)
    columns, path_columns = data_columns(data, model, set(header))
    modalities = {slot: model.encoders[slot].modality for slot in model.slots}
    options = dict(path_columns=path_columns, root=Path(path).parent, name=str(path), modalities=modalities,
                   validate="exists", allow_outside_paths=True, missing_columns=list(missing or ()))
    inputs_from_rows([], columns, header=header, **options)  # the columns, checked before any row is read
    # cells as written unless --decimal says otherwise, as the training manifest was read (source.DECIMAL)
    reading = {"encoding": encoding, "sep": sep, "decimal": DECIMAL if decimal is None else decimal}
    return _stream(path, reading, columns, header, options)


def _stream(path: Path, reading: dict[str, Any], columns: Mapping[str, Any], header: list[str], options: dict[str, Any]):
    from mmcore_plugins.io.tables import iter_table

    first = 1
    for batch in iter_table(path, **reading):
        yield from inputs_from_rows(batch, columns, header=header, first_row=first, **options)
        first += len(batch)
