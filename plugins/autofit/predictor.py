"""``Predictor``: a model trained by ``fit``, used on new tables -- predict, predict_proba, evaluate,
embed -- and saved / loaded as its run directory.

A Predictor *is* its run directory: ``config.yaml``, the ``best/`` checkpoint, ``autofit.json``
(how columns become model inputs and how labels are encoded). New tables go through the same
preparation as training (file paths relative to the table's folder; for a DataFrame, the current
folder; missing cells are missing modalities; missing numbers get the training median).

A run of ``mmcore train`` from a fit run's ``config.yaml`` (edited or not) is such a run too: training
copied the fit's plan into it (:mod:`.contract`). Any other run of ``mmcore train`` loads too (no
``autofit.json``): its rows are ``{slot: raw value}``
(a file path, text, a table row), a missing or None slot a missing modality, and ``target`` the
label for :meth:`Predictor.evaluate`.

Every call works on the rows it is given, in batches of ``batch_size``: no data set or loader is
built, so one row costs its reading and one forward pass.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmcore.engine.atomic import UnsafePathError
from mmcore_plugins.autofit.fitting import PLAN_FILE, SUMMARY_FILE, read_rows
from mmcore_plugins.autofit.infer import ColumnError
from mmcore_plugins.autofit.prepare import Plan, Preparer, check_table_columns, decode_prediction
from mmcore_plugins.io.tables import decimal_comma_cells, recorded_encoding


def read_plan(run: str | Path) -> Plan:
    """The column plan ``fit`` saved in run directory ``run`` (``autofit.json``), read bounded and
    checked field by field (:meth:`Plan.from_json`). CheckpointError when damaged."""
    from mmcore.engine.artefacts import MAX_JSON_BYTES, CheckpointError
    from mmcore.engine.atomic import UnsafePathError, read_json

    plan_file = Path(run) / PLAN_FILE
    try:
        meta = read_json(plan_file, max_bytes=MAX_JSON_BYTES, what=PLAN_FILE)
        if not isinstance(meta, dict):
            raise ValueError(f"{plan_file} must hold a JSON object, got {type(meta).__name__}")
        return Plan.from_json(meta.get("plan"), where=f"{plan_file}: plan")
    except (ValueError, UnsafePathError) as exc:
        raise CheckpointError(str(exc)) from exc


def read_table_options(run: str | Path) -> dict[str, Any]:
    """``{encoding, sep, decimal, decimal_columns}``: how the fit run read its table, to read new tables the
    same way (``autofit.json``'s ``table.options``, and the columns it read with decimal commas, read so
    again whatever their share in the new table; a run written before fit recorded it: the defaults)."""
    from mmcore.engine.artefacts import MAX_JSON_BYTES
    from mmcore.engine.atomic import read_json

    options: dict[str, Any] = {"encoding": "utf-8-sig", "sep": None, "decimal": None}
    try:
        meta = read_json(Path(run) / PLAN_FILE, max_bytes=MAX_JSON_BYTES, what=PLAN_FILE)
    except (ValueError, UnsafePathError, OSError):
        return {**options, "decimal_columns": []}
    table = (meta.get("table") or {}) if isinstance(meta, dict) else {}
    columns = table.get("decimal_columns") if isinstance(table, dict) else None
    recorded = table.get("options") if isinstance(table, dict) else None
    if isinstance(recorded, dict):
        for key in options:
            value = recorded.get(key)
            if isinstance(value, str) and (key != "decimal" or value in (",", ".")) and (key != "sep" or len(value) == 1):
                options[key] = value
    names = [c for c in columns if isinstance(c, str)] if isinstance(columns, list) else []
    return {**options, "decimal_columns": names}


def read_table_record(run: str | Path) -> dict[str, Any] | None:
    """``autofit.json``'s ``table`` (how the fit run read its table: ``options`` given, ``sep`` found,
    ``decimal_columns``), None for a run written before fit recorded it; CheckpointError when damaged."""
    from mmcore.engine.artefacts import MAX_JSON_BYTES, CheckpointError
    from mmcore.engine.atomic import read_json

    plan_file = Path(run) / PLAN_FILE
    try:
        meta = read_json(plan_file, max_bytes=MAX_JSON_BYTES, what=PLAN_FILE)
        table = meta.get("table") if isinstance(meta, dict) else None
        if table is not None and not isinstance(table, dict):
            raise ValueError(f"{plan_file}: table must be an object {{options, sep, decimal_columns}}, got {type(table).__name__}")
        return table
    except (ValueError, UnsafePathError) as exc:
        raise CheckpointError(str(exc)) from exc


def read_table_columns(run: str | Path) -> list[str]:
    """Every column of the table ``fit`` trained on, in its order -- the ones the model reads, the target,
    and the ones fit ignored (ids, a split column) -- from ``autofit.json``'s ``columns``, read bounded and
    checked. ``mmcore serve`` accepts and ignores a record's cells of the columns the model does not read,
    as :meth:`Predictor.predict` ignores a table's. CheckpointError when damaged."""
    return list(dict.fromkeys(c["name"] for c in _read_columns(run)))


def read_identifier_columns(run: str | Path) -> list[str]:
    """The columns of the training table fit inferred as identifiers (ignored for training): ``mmcore
    predict --data`` carries their values into each output line, so that predictions join back to the
    user's rows. CheckpointError when ``autofit.json`` is damaged."""
    from mmcore_plugins.autofit.infer import identifier_columns

    return identifier_columns(_read_columns(run))


def _read_columns(run: str | Path) -> list[dict[str, Any]]:
    """``autofit.json``'s ``columns`` (one ``{name, kind, why, ...}`` per column of the training table),
    read bounded and checked; CheckpointError when damaged."""
    from mmcore.engine.artefacts import MAX_JSON_BYTES, CheckpointError
    from mmcore.engine.atomic import read_json

    plan_file = Path(run) / PLAN_FILE
    try:
        meta = read_json(plan_file, max_bytes=MAX_JSON_BYTES, what=PLAN_FILE)
        columns = meta.get("columns") if isinstance(meta, dict) else None
        if not isinstance(columns, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in columns):
            raise ValueError(f"{plan_file}: columns must be a list of objects {{name: the column's name, ...}}, "
                             f"got {type(columns).__name__}")
        return columns
    except (ValueError, UnsafePathError) as exc:
        raise CheckpointError(str(exc)) from exc


class MissingInputsWarning(UserWarning):
    """A Predictor method treated cells or rows of a table as missing (files that do not exist or cannot be
    read, placeholders, rows without input or target); the message names rows and columns."""


class UnseenCategoriesWarning(UserWarning):
    """A Predictor method met category values the training table never held: the rows were predicted, those
    values read as unknown; the message counts them per column (``mmcore predict``/``eval`` say the same)."""


class PartialRunWarning(UserWarning):
    """:meth:`Predictor.load` of a run whose training did not finish (Ctrl-C, a failure): its model is the
    best checkpoint so far; the message says how to continue the run."""


#: report.json statuses of a run whose training did not finish (its model is the best checkpoint so far)
PARTIAL_STATUSES = ("interrupted", "failed", "non_finite_loss")


def partial_reason(run: str | Path) -> str | None:
    """Why the run in ``run`` is partial (its training did not finish), or None when it finished."""
    report = Path(run) / "report.json"
    if not report.is_file():
        return "training never finished (no report.json: interrupted, or still running)"
    try:
        status = json.loads(report.read_text(encoding="utf-8")).get("status")
    except (ValueError, RecursionError, AttributeError, OSError):
        return "its report.json cannot be read"
    if status not in PARTIAL_STATUSES:
        return None
    return f"training {status if status != 'non_finite_loss' else 'stopped on a non-finite loss'}"


def _listed(rows: list[int], limit: int = 10) -> str:
    return ", ".join(map(str, rows[:limit])) + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


class SaveTargetExistsError(UnsafePathError, FileExistsError):
    """``Predictor.save(path)`` where ``path`` exists (a link included): a FileExistsError and an
    input error (a ``UserInputError``: exit 2 and one line on the command line)."""


class Predictor:
    """A trained ``fit`` model. Build with :func:`mmcore.fit` or :meth:`Predictor.load`.

    Methods take one record (a dict ``{column: value}``) or many: a list of such dicts, a pandas
    DataFrame, a pyarrow Table, or a CSV / JSONL / Parquet path (file paths in cells relative to the
    table's folder; for records and DataFrames, the current folder). ``batch_size`` rows are processed
    at a time, on ``device`` (default CPU).

    What comes back follows one rule, the same for every kind of input (:meth:`predict` and the others
    say their types): **one record in, one answer out** -- the prediction itself, ``{class: probability}``,
    one vector; **many records in, the same collection every time** -- a pandas Series (``predict``) or
    DataFrame (``predict_proba``, ``explain``) indexed like the DataFrame given, else ``0..N-1`` in row
    order, whether the rows came as a list, a DataFrame, a pyarrow Table or a file; ``embed`` an array
    ``[N, D]``. (Without pandas installed: a list, and a list of dicts.) ``list(predictions)`` is a plain list.
    """

    def __init__(self, run_dir: str | Path, model: Any, plan: Plan, config: Mapping[str, Any], *,
                 device: str | torch.device = "cpu", batch_size: int = 128) -> None:
        self.run_dir, self.model, self.plan, self.config = Path(run_dir), model, plan, dict(config)
        self.device, self.batch_size = torch.device(device), batch_size
        self.model.to(self.device).eval()
        #: why this run is partial (its training did not finish; the model is the best checkpoint so far), else None
        self.partial: str | None = None

    def __repr__(self) -> str:
        slots = ", ".join(f"{s}: {e['name']}" for s, e in self.config["model"]["encoders"].items())
        if self.plan is None:
            return f"Predictor({str(self.run_dir)!r}, mmcore train run, [{slots}])"
        return f"Predictor({str(self.run_dir)!r}, target={self.plan.target!r}, task={self.plan.task}, [{slots}])"

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, path: str | Path, *, manager=None, device: str | torch.device = "cpu") -> Predictor:
        """The Predictor saved in run directory ``path`` (by ``fit`` or :meth:`save`).

        Everything read is checked before it is used: ``autofit.json`` is bounded, strict JSON whose
        plan has every field of the right kind (:meth:`Plan.from_json`), and the plan must fit the
        model (the same slots; the same classes or labels, in the same order), which is checked as
        ``model.json`` and the weights are (:func:`mmcore.engine.checkpoint.load_model`).

        Raises :class:`ColumnError` (a ValueError) when ``path`` is not a ``fit`` run directory,
        :class:`~mmcore.engine.artefacts.CheckpointError` when one of its files is damaged, crafted,
        or from another fit than the others.

        A run whose training did not finish (Ctrl-C; ``report.json`` status ``interrupted``) loads with a
        :class:`PartialRunWarning` saying how to continue it, and ``partial`` set to why.
        """
        from mmcore.engine.checkpoint import load_model
        from mmcore.engine.rundir import RunDir
        from mmcore.plugin_manager import get_plugin_manager

        run = Path(path)
        plan_file, config_file = run / PLAN_FILE, run / "config.yaml"
        manager = manager or get_plugin_manager()
        if not os.path.lexists(plan_file):  # a `mmcore train` run: rows are {slot: raw} (a FIFO or link there is a fit run's damaged plan)
            from mmcore.cli import load_run

            model, config = load_run(run, manager)
            return cls._loaded(run, model, None, config, device)
        if not config_file.is_file() or not (run / "best").is_dir():
            raise ColumnError(f"{str(path)!r} is not a run directory written by `mmcore fit` (expected {PLAN_FILE}, "
                              "config.yaml and best/)")
        plan = read_plan(run)
        config = RunDir(run).read_config()  # safe, bounded; paths taken where the run is now (a copy reads itself)
        model, _ = load_model(run / "best", manager.registry)
        _check_plan_fits(plan, model, plan_file)
        return cls._loaded(run, model, plan, config, device)

    @classmethod
    def _loaded(cls, run: Path, model: Any, plan: Plan | None, config: Mapping[str, Any], device: Any) -> Predictor:
        predictor = cls(run, model, plan, config, device=device)
        predictor.partial = partial_reason(run)
        if predictor.partial is not None:  # a partial run is usable, never silently taken for a finished one
            warnings.warn(PartialRunWarning(
                f"{run} is a partial run: {predictor.partial}; its model is the best checkpoint so far. Continue it "
                f"with: mmcore train {run}/config.yaml --resume {run}"), stacklevel=3)
        return predictor

    def save(self, path: str | Path) -> Path:
        """Copy the run directory to ``path`` (a new folder); returns it. ``Predictor.load(path)`` reads it back.

        The run's own files only: a symbolic link inside the run is refused, never followed (it
        would copy whatever it points to), and the copy is made under a temporary name beside
        ``path`` and renamed into place, so a failed save leaves nothing under the name.

        Raises :class:`SaveTargetExistsError` (a ``FileExistsError`` and a
        :class:`~mmcore.errors.UserInputError`) when ``path`` exists (a link included);
        UnsafePathError for a link inside the run.
        """
        import os
        import tempfile

        from mmcore.engine.atomic import UnsafePathError

        target = Path(path)
        if os.path.lexists(target):
            raise SaveTargetExistsError(f"{str(target)!r} exists; save into a new folder")
        skip = {".mmcore-lock", "feature_cache", "tensorboard"}
        for folder, dirs, files in os.walk(self.run_dir):
            for name in dirs + files:
                item = Path(folder) / name
                if item.is_symlink() and not (Path(folder) == self.run_dir and name in skip):
                    raise UnsafePathError(f"{item} is a symbolic link (to {os.readlink(item)}); a saved run holds its own "
                                          "files only and a link is never followed: remove it, then save")
            dirs[:] = [d for d in dirs if not (Path(folder) == self.run_dir and d in skip)]
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            shutil.copytree(self.run_dir, staging / "run", symlinks=True, ignore=shutil.ignore_patterns(*skip))
            os.rename(staging / "run", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    @property
    def classes(self) -> list[Any] | None:
        """Class names (classification), label names (multilabel), or None (regression)."""
        if self.plan is None:
            return getattr(self.model.head, "classes", None)
        if self.plan.task == "classification":
            return [decode_prediction(self.plan, i) for i in range(len(self.plan.classes or []))]
        return list(self.plan.labels) if self.plan.task == "multilabel" else None

    # ------------------------------------------------------------------ inference
    # One rule for a table, in every method and as ``fit`` applied it to its own tables: every column the
    # model reads is in the table or declared in ``missing_columns``; an empty cell, a placeholder such as
    # "N/A", a missing or unreadable file, or an input that fails when read, is a missing cell (a missing
    # modality; a missing number gets the training median) -- counted, and reported in one warning naming
    # rows and columns; ``strict=True`` raises instead. A row with no input at all gets no prediction
    # (None); ``evaluate`` leaves out rows without a usable target or input and counts them.
    def _rows(self, data: Any, encoding: str | None = None, sep: str | None = None,
              decimal: str | None = None) -> tuple[list[dict[str, Any]], Path, Any, str, list[str]]:
        """``(rows, folder file paths start from, pandas index or None, name for messages, header)``.
        ``encoding``/``sep``/``decimal`` None: as the fit run read its table (:func:`read_table_options`)."""
        if isinstance(data, Sequence) and not isinstance(data, (str, bytes)) and all(isinstance(r, Mapping) for r in data):
            recorded = read_table_options(self.run_dir)
            decimal = decimal or recorded["decimal"]  # records' string cells read as a table's (decimal commas)
            rows = decimal_comma_cells([dict(r) for r in data], decimal=decimal,
                                       decimal_columns=recorded["decimal_columns"] if decimal != "." else ())
            return rows, Path.cwd(), None, "the rows", list(dict.fromkeys(k for r in rows for k in r))
        if not isinstance(data, (str, os.PathLike)) and not type(data).__module__.startswith(("pandas", "pyarrow")):
            raise TypeError("expected one record (a dict of column: value), a list of them, a pandas DataFrame, a "
                            f"pyarrow Table or a CSV/JSONL/Parquet path; got {type(data).__name__}")
        recorded = read_table_options(self.run_dir)
        decimal = decimal or recorded["decimal"]
        rows, base = read_rows(data, encoding=encoding or recorded_encoding(data, recorded["encoding"]), sep=sep or recorded["sep"],
                               decimal=decimal, decimal_columns=recorded["decimal_columns"] if decimal != "." else ())
        frame = type(data).__module__.startswith("pandas")
        index = getattr(data, "index", None) if frame else None
        if frame:
            name, header = "the DataFrame", [str(c) for c in data.columns]
        else:
            name, header = str(data), list(dict.fromkeys(k for r in rows for k in r))
        return rows, base, index, name, header

    def _prepare(self, data: Any, *, missing_columns: Sequence[str] = (), strict: bool = False,
                 with_target: bool = False, encoding: str | None = None, sep: str | None = None,
                 decimal: str | None = None,
                 option: str = "missing_columns") -> tuple[list[dict[str, Any] | None], Any, str, list[str]]:
        """Each row's raw sample (None: a row with no input, or no target with ``with_target``), the
        pandas index, the table's name and the notes of what was treated as missing. ``option``: how
        messages name the declaration of missing columns (``--missing`` on the command line)."""
        rows, base, index, name, header = self._rows(data, encoding, sep, decimal)
        if not rows:
            raise ColumnError(f"{name} has no rows")
        if self.plan is None:  # a `mmcore train` run: {slot: raw} rows
            samples = [self._slot_sample(r, i, with_target) for i, r in enumerate(rows)]
            if with_target:
                missing = [i + 1 for i, s in enumerate(samples) if s["target"] is None]
                if missing:
                    raise ColumnError(f"evaluate: rows {missing[:10]} have no {self._target_name!r} value")
            return samples, index, name, []
        if isinstance(missing_columns, str):
            missing_columns = [missing_columns]
        if name == "the rows":  # records are each their own row: each has every column the model reads, or declares it
            for i, row in enumerate(rows):
                declared = check_table_columns(self.plan, list(row), missing_columns, target=with_target,
                                               where=f"row {i + 1}", option=option)
        else:
            declared = check_table_columns(self.plan, header, missing_columns, target=with_target, where=name, option=option)
        if declared:
            rows = [{**row, **dict.fromkeys(declared)} for row in rows]
        preparer = Preparer(self.plan, base, strict=strict, allow_outside_paths=True)  # the user named this table
        columns = self.plan.slot_columns()
        samples: list[dict[str, Any] | None] = []
        no_input, no_target = [], []
        for i, row in enumerate(rows):
            try:
                sample = preparer.sample(row, i, with_target=with_target)
            except ColumnError as exc:
                raise ColumnError(f"{name}: {exc}") from None
            if not preparer.has_input(row, sample["inputs"]):  # from the user's cells (a filled median is none)
                no_input.append(i + 1)
                sample = None
            elif with_target and sample["target"] is None:
                no_target.append(i + 1)
                sample = None
            else:
                sample["origin"] = {"file": name, "row": i + 1, "columns": columns}
            samples.append(sample)
        if strict and (no_input or no_target):
            what = (f"rows {_listed(no_input)} have no input (every column the model reads is empty)" if no_input
                    else f"rows {_listed(no_target)} have no usable {self.plan.target!r} value (empty or not a finite number)")
            raise ColumnError(f"{name}: {what}")
        notes = [f"row {i + 1}, column {column!r}: {why}" for i, column, why in preparer.dropped]
        if no_input:
            notes.append(f"rows {_listed(no_input)}: no input at all ({'left out' if with_target else 'no prediction'})")
        if no_target:
            notes.append(f"rows {_listed(no_target)}: no usable {self.plan.target!r} value (left out)")
        return samples, index, name, notes

    def _batches(self, data: Any, *, with_target: bool = False):
        """``(samples, index)`` for a method that needs every row to have an input (``explain``)."""
        samples, index, name, notes = self._prepare(data, with_target=with_target)
        empty = [i + 1 for i, s in enumerate(samples) if s is None]
        if empty:
            raise ColumnError(f"{name}: rows {_listed(empty)} have no input (every column the model reads is empty)")
        self._warn("explain", name, notes)
        return samples, index

    @property
    def _target_name(self) -> str:
        return "target" if self.plan is None else self.plan.target

    def _slot_sample(self, row: Mapping[str, Any], index: int, with_target: bool) -> dict[str, Any]:
        """A ``mmcore train`` run's row ``{slot: raw, "target": label}`` -> a raw sample."""
        unknown = sorted(set(row) - set(self.model.slots) - {"target"})
        if unknown:
            raise ColumnError(f"row {index + 1}: {unknown} are not slots of this model ({self.model.slots})")
        inputs = {slot: row.get(slot) for slot in self.model.slots}
        if all(v is None for v in inputs.values()):
            raise ColumnError(f"row {index + 1}: needs at least one of the slots {self.model.slots}")
        return {"inputs": inputs, "target": row.get("target") if with_target else None}

    def _decode(self, out: Any) -> list[Any]:
        if self.plan is None:
            return self.model.head.format_predictions(out)
        return [decode_prediction(self.plan, p) for p in out.predictions.cpu().tolist()]

    @torch.no_grad()
    def _outputs(self, samples: list[dict[str, Any]], *, fused: bool = False, strict: bool = False,
                 notes: list[str] | None = None):
        from mmcore.engine.evaluation import to_device
        from mmcore.unreadable import describe

        if self.model.training:
            self.model.eval()
        self.model.unreadable_inputs = "error" if strict else "missing"  # an input that fails when read
        seen = len(self.model.unreadable)
        for start in range(0, len(samples), self.batch_size):
            chunk = samples[start:start + self.batch_size]
            batch = self.model.collate([{"inputs": s["inputs"], "origin": s.get("origin")} for s in chunk])
            inputs, _ = to_device(batch, self.device)
            if fused:
                features = self.model.encode(inputs)
                experts = getattr(self.model.head, "experts", None)
                if experts is not None and len(experts):  # a per-modality ensemble reads each slot's features
                    yield torch.cat([features[slot].pooled for slot in experts], dim=-1)
                    continue
                out = self.model.fusion(features) if self.model.fusion is not None else next(iter(features.values()))
                yield out.pooled
            else:
                yield self.model(inputs)
        if notes is not None:
            notes += [describe(e) for e in list(self.model.unreadable.entries.values())[seen:]]

    def _warn(self, what: str, name: str, notes: list[str]) -> None:
        if notes:
            shown = "; ".join(notes[:5]) + (f"; ... ({len(notes) - 5} more)" if len(notes) > 5 else "")
            warnings.warn(MissingInputsWarning(f"{what} on {name}: {len(notes)} cell(s) or row(s) treated as missing "
                                               f"(strict=True refuses them): {shown}"), stacklevel=3)

    def _warn_unseen(self, what: str, name: str, samples: Sequence[Any]) -> None:
        from mmcore.engine.unseen import UnseenValues

        unseen = UnseenValues(self.model)
        for sample in samples:
            if isinstance(sample, Mapping) and isinstance(sample.get("inputs"), Mapping):
                unseen.add(sample["inputs"])
        lines = unseen.lines()
        if lines:
            warnings.warn(UnseenCategoriesWarning(f"{what} on {name}: " + "; ".join(lines)), stacklevel=3)

    def _series(self, values: list[Any], index: Any, name: str):
        """Many rows' predictions: a pandas Series named after the target, indexed like the DataFrame given
        (else ``0..N-1``): float64 for a fit run's regression (a row without input NaN), else the values as
        they are (object: a row without input None, never read as NaN); a list without pandas installed."""
        try:
            import pandas as pd
        except ImportError:
            return values
        regression = self.plan is not None and self.plan.task == "regression"
        return pd.Series(values, index=index, name=name, dtype="float64" if regression else object)

    def predict(self, data: Any, *, missing_columns: Sequence[str] = (), strict: bool = False, encoding: str | None = None,
                   sep: str | None = None, decimal: str | None = None) -> Any:
        """Predictions: class names (classification), lists of labels (multilabel) or numbers
        (regression); None for a row with no input at all.

        One record (a dict ``{column: value}``) gives its one prediction. Many records -- a list of dicts,
        a DataFrame, a pyarrow Table or a CSV/JSONL/Parquet path -- give a pandas Series named after the
        target, one value per row in row order, indexed like ``data`` when it is a DataFrame and ``0..N-1``
        otherwise: dtype object holding the labels as typed (None for a row with no input), float64 for
        regression (NaN for a row with no input); a list without pandas.

        ``missing_columns``: columns the model reads that this table lacks on purpose (every cell of
        them missing). ``strict``: raise instead of treating a missing or unreadable file, or a row
        with no input, as missing. ``encoding``, ``sep``, ``decimal``: how a CSV/JSONL file is read
        (:func:`~mmcore_plugins.io.tables.read_table`); None: as ``fit`` read its table (recorded in
        ``autofit.json``: the encoding and delimiter given, decimal commas once it read them). Raises
        :class:`ColumnError` naming the column (and the closest one the
        table has) when a column the model reads is absent and not declared missing.
        """
        one = _is_record(data)
        samples, index, name, notes = self._prepare([data] if one else data, missing_columns=missing_columns,
                                                    strict=strict, encoding=encoding, sep=sep, decimal=decimal)
        present = [s for s in samples if s is not None]
        decoded = []
        for out in self._outputs(present, strict=strict, notes=notes):
            decoded += self._decode(out)
        values, found = [], iter(decoded)
        for sample in samples:
            values.append(None if sample is None else next(found))
        self._warn("predict", name, notes)
        self._warn_unseen("predict", name, present)
        return values[0] if one else self._series(values, index, self._target_name)

    def predict_proba(self, data: Any, *, missing_columns: Sequence[str] = (), strict: bool = False, encoding: str | None = None,
                         sep: str | None = None, decimal: str | None = None) -> Any:
        """Class (or per-label) probabilities, float (NaN for a row with no input). One record gives its
        ``{class: probability}``; many records (as for :meth:`predict`) a pandas DataFrame ``[N, classes]``
        with the class names as columns, indexed like :meth:`predict`'s Series (a list of
        ``{class: probability}`` without pandas). ColumnError (a ValueError) for a regression model.
        Options as :meth:`predict`."""
        if self.plan is not None and self.plan.task == "regression" or self.plan is None and self.classes is None:
            raise ColumnError("predict_proba: this is a regression model; use predict")
        one = _is_record(data)
        samples, index, name, notes = self._prepare([data] if one else data, missing_columns=missing_columns,
                                                    strict=strict, encoding=encoding, sep=sep, decimal=decimal)
        present = [s for s in samples if s is not None]
        found = []
        for out in self._outputs(present, strict=strict, notes=notes):
            probabilities = out.extras.get("probabilities")
            if probabilities is None:
                multilabel = self.plan.task == "multilabel" if self.plan is not None else out.predictions.dim() == 2
                probabilities = out.logits.sigmoid() if multilabel else out.logits.softmax(-1)
            found += probabilities.float().cpu().tolist()
        names = self.classes or []
        rows, it = [], iter(found)
        for sample in samples:
            rows.append([float("nan")] * len(names) if sample is None else next(it))
        self._warn("predict_proba", name, notes)
        self._warn_unseen("predict_proba", name, present)
        if one:
            return dict(zip(names, rows[0], strict=True))
        try:
            import pandas as pd
        except ImportError:
            return [dict(zip(names, r, strict=True)) for r in rows]
        return pd.DataFrame(rows, columns=names, index=index)

    def evaluate(self, data: Any, *, missing_columns: Sequence[str] = (), strict: bool = False, encoding: str | None = None,
                    sep: str | None = None, decimal: str | None = None) -> dict[str, float]:
        """The head's metrics on a table holding the target column (accuracy and macro F1; or MSE,
        MAE and R^2 for regression), plus ``rows`` (rows evaluated) and ``rows_left_out`` (rows without a
        usable target or without any input, left out as ``fit`` left them out of its test table).
        Options as :meth:`predict` (one record, or many); with ``strict`` such a row is an error."""
        prepared, _, table, notes = self._prepare([data] if _is_record(data) else data, missing_columns=missing_columns,
                                                  strict=strict, with_target=True, encoding=encoding, sep=sep,
                                                  decimal=decimal)
        samples = [s for s in prepared if s is not None]
        if not samples:
            raise ColumnError(f"evaluate: no row of {table} has both an input and a usable {self._target_name!r} value")
        metrics = {name: m.to(self.device) for name, m in self.model.head.metrics().items()}
        predictions, targets = [], []
        outputs = self._outputs(samples, strict=strict, notes=notes)
        for start, out in zip(range(0, len(samples), self.batch_size), outputs, strict=True):
            target = self.model.head.collate_targets([s["target"] for s in samples[start:start + self.batch_size]])
            target = target.to(self.device)
            for metric in metrics.values():
                metric.update(out.predictions, target)
            predictions.append(out.predictions.float().cpu())
            targets.append(target.float().cpu())
        result = {name: float(m.compute().float().mean()) for name, m in metrics.items()}
        if self.plan is not None and self.plan.task == "regression":
            y, p = torch.cat(targets).flatten(), torch.cat(predictions).flatten()
            total = float(((y - y.mean()) ** 2).sum())
            result["r2"] = 1.0 - float(((y - p) ** 2).sum()) / total if total > 0 else float("nan")
        result["rows"] = len(samples)
        result["rows_left_out"] = len(prepared) - len(samples)
        self._warn("evaluate", table, notes)
        self._warn_unseen("evaluate", table, samples)
        return result

    def embed(self, data: Any, *, missing_columns: Sequence[str] = (), strict: bool = False):
        """The representation the head reads, per row: a float32 numpy array ``[N, D]`` -- the fused vector,
        or, for a per-modality ensemble head, every slot's pooled features side by side (zeros where absent);
        NaN for a row with no input. One record gives its vector ``[D]``. Options as :meth:`predict`."""
        one = _is_record(data)
        samples, _, name, notes = self._prepare([data] if one else data, missing_columns=missing_columns, strict=strict)
        present = [s for s in samples if s is not None]
        found = torch.cat([f.float().cpu() for f in self._outputs(present, fused=True, strict=strict, notes=notes)]) \
            if present else torch.zeros(0, 0)
        out = torch.full((len(samples), found.shape[-1] if present else 0), float("nan"))
        rows = [i for i, s in enumerate(samples) if s is not None]
        if rows:
            out[rows] = found
        self._warn("embed", name, notes)
        return out[0].numpy() if one else out.numpy()

    def explain(self, data: Any, *, plots: str | Path | None = None) -> Any:
        """Exact Shapley values of each modality slot for each row's prediction (``mmcore explain``;
        :mod:`mmcore_plugins.explain.attribution`): the predicted class's log-probability (a
        regression: the predicted value) split over the slots, from no slot (``empty``) to all the
        row has (``full``); the values sum to ``full - empty``; a slot the row lacks gets 0.

        Returns a pandas DataFrame indexed like ``data`` (a list of dicts without pandas): columns
        ``prediction``, ``full``, ``empty`` and one per slot (named by the user's column it reads: an image,
        audio, video or text column; the numbers and categories together as ``tabular``); ``.attrs["summary"]``
        holds the mean |value| per slot. ``plots``: a folder that gets a waterfall PNG per row (the first 20) and
        ``summary.png``. One record gives its row as a dict (``prediction``, ``full``, ``empty``, a value per slot).
        """
        from mmcore_plugins.explain.attribution import explain_samples, summarise

        one = _is_record(data)
        samples, index = self._batches([data] if one else data)
        records = explain_samples(self.model, [s["inputs"] for s in samples], batch_size=self.batch_size, device=self.device,
                                  decode=lambda index: decode_prediction(self.plan, index),
                                  names=self.plan.slot_columns() if self.plan is not None else None)
        summary = summarise(records)
        if plots is not None:
            from mmcore.engine.plots import plot_attribution_summary, plot_waterfall

            for i, record in enumerate(records[:20], start=1):
                plot_waterfall(record, Path(plots) / f"record_{i}.png", title=f"row {i}: prediction {record['prediction']}")
            plot_attribution_summary(summary, Path(plots) / "summary.png")
        rows = [{"prediction": r["prediction"], "full": r["full"], "empty": r["empty"], **r["shapley"]} for r in records]
        if one:
            return rows[0]
        try:
            import pandas as pd
        except ImportError:
            return rows
        frame = pd.DataFrame(rows, index=index)
        frame.attrs["summary"] = summary
        return frame

    def summary(self) -> dict[str, Any]:
        """What ``fit`` reported (``fit_summary.json``): test metrics, epochs, time, cached slots
        ({} when there is none). CheckpointError when the file is damaged or not an object."""
        from mmcore.engine.artefacts import MAX_JSON_BYTES, CheckpointError
        from mmcore.engine.atomic import UnsafePathError, read_json

        file = self.run_dir / SUMMARY_FILE
        if not file.exists():
            return {}
        try:
            summary = read_json(file, max_bytes=MAX_JSON_BYTES, what=SUMMARY_FILE)
        except (ValueError, UnsafePathError) as exc:
            raise CheckpointError(str(exc)) from exc
        if not isinstance(summary, dict):
            raise CheckpointError(f"{file} must hold a JSON object, got {type(summary).__name__}")
        return summary


def _is_record(data: Any) -> bool:
    """Whether ``data`` is one record (a ``{column: value}`` mapping) rather than a table of them."""
    return isinstance(data, Mapping)


def _check_plan_fits(plan: Plan, model: Any, plan_file: Path) -> None:
    """The plan must describe this model: its slots, and its classes or labels in the head's order
    (files of two different fits in one folder would otherwise predict the wrong names)."""
    from mmcore.engine.artefacts import CheckpointError

    if set(plan.slots) != set(model.slots):
        raise CheckpointError(f"{plan_file}: the plan's slots {sorted(plan.slots)} are not the model's {sorted(model.slots)}; "
                              "the run's files come from different fits")
    names = plan.classes if plan.task == "classification" else plan.labels if plan.task == "multilabel" else None
    head = model.head
    count = getattr(head, "num_classes", None) if plan.task == "classification" else getattr(head, "num_labels", None)
    if names is None:
        if count is not None or getattr(head, "classes", None):
            raise CheckpointError(f"{plan_file}: a {plan.task} plan for a model whose head predicts classes")
        return
    classes = getattr(head, "classes", None)
    if count != len(names) or (classes is not None and list(classes) != list(names)):
        shown = list(classes) if classes is not None else f"{count} of them"
        raise CheckpointError(f"{plan_file}: the plan's {'classes' if plan.task == 'classification' else 'labels'} "
                              f"{list(names)[:10]} are not the model's {shown if isinstance(shown, str) else shown[:10]} "
                              "(same names in the same order); the run's files come from different fits")
