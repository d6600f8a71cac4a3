"""A ``fit`` run's tables on the command line: ``mmcore predict RUN --data FILE`` and ``mmcore embed RUN
--data FILE`` (hook ``mmcore_table_inputs``) read a table the way :class:`~mmcore_plugins.autofit.predictor.Predictor`
does -- through the run's column plan, so that users name only their own columns (a ``"<column> missing"``
indicator or a text file's contents are derived again, never asked for), under the same rule: a column
the model reads is in the table or declared missing (``--missing``); a missing or unreadable file is a
missing modality of its row, noted in its line (``--strict``: the row's error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mmcore
from mmcore_plugins.autofit.fitting import PLAN_FILE
from mmcore_plugins.autofit.infer import ColumnError
from mmcore_plugins.autofit.prepare import Preparer, check_table_columns


@mmcore.hookimpl
def mmcore_table_inputs(path: Path, encoding: str, run_dir: Path | None, missing: list[str], strict: bool):
    # no defaults: pluggy passes a hook's arguments only to parameters without one
    """Each row of ``path`` as the fit run's model inputs (see the module docstring); None for a run
    that ``fit`` did not write (the manifest plugin answers)."""
    if run_dir is None or not (Path(run_dir) / PLAN_FILE).is_file():
        return None
    from mmcore_plugins.autofit.predictor import read_plan
    from mmcore_plugins.io.tables import read_table

    plan = read_plan(run_dir)
    rows = read_table(path, encoding=encoding)
    header = list(dict.fromkeys(key for row in rows for key in row))
    declared = check_table_columns(plan, header, list(missing or ()), where=str(path), option="--missing")
    preparer = Preparer(plan, Path(path).expanduser().resolve().parent, strict=strict)
    out: list[tuple[Any, ...]] = []
    for i, row in enumerate(rows):
        if declared:
            row = {**row, **dict.fromkeys(declared)}
        seen = len(preparer.dropped)
        try:
            inputs = preparer.sample(row, i)["inputs"]
        except ColumnError as exc:
            out.append((None, str(exc)))
            continue
        if all(value is None for value in inputs.values()):
            out.append((None, f"row {i + 1}: no input: every column the model reads ({', '.join(plan.input_columns)}) is empty"))
            continue
        notes = [f"column {column!r}: {why} (a missing modality)" for _, column, why in preparer.dropped[seen:]]
        out.append((inputs, None, "; ".join(notes)) if notes else (inputs, None))
    return out
