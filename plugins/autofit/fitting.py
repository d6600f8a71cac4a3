"""``fit``: a table -> inferred columns -> a prepared table + a complete config in a run directory ->
pretrained candidates measured against from-scratch ones (:mod:`.candidates`) -> measured costs ->
a plan of every remaining phase within the time limit (:mod:`.budget`) -> the trainer, stopped
within an epoch at the limit and grown when its epochs are faster than planned (:mod:`.progress`) ->
the ensemble's experts chosen on val before the one test pass (:mod:`.experts`) -> a :class:`Predictor`.

Everything ``fit`` decides is written into the run directory: ``config.yaml`` (``mmcore train
RUN/config.yaml`` reproduces the run; editing it is how to go further, and a run trained from it, edited or
not, takes the user's own columns as this one does: :mod:`.contract`), ``data.jsonl`` (the
prepared table the config reads, with its ``split`` column), ``autofit.json`` (the column
inference, the plan, the choices, the measured times) and ``fit_summary.json`` (the results).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mmcore
from mmcore.errors import RunInterrupted
from mmcore.labels import is_non_finite
from mmcore_plugins.autofit.budget import (
    FINAL_SECONDS,
    RUN_SECONDS,
    Costs,
    Phases,
    TimeLimitError,
    apply_threads,
    choose_threads,
    cpu_count,
    duration_text,
    epochs_text,
    plan_schedule,
    refusal,
)
from mmcore_plugins.autofit.choose import (
    MAX_EPOCHS,
    Choice,
    build_config,
    cached_slots,
    parse_duration,
)
from mmcore_plugins.autofit.infer import (
    LISTED_UNUSABLE,
    SPLIT_NAMES,
    ColumnError,
    ColumnInfo,
    format_table,
    infer_columns,
    is_missing,
    note_table_format,
    split_warnings,
    strict_error,
    table_format_lines,
    unusable_json,
    unusable_lines,
)
from mmcore_plugins.autofit.prepare import Preparer, check_table_columns, make_plan
from mmcore_plugins.autofit.progress import FitProgress

#: Fraction of the training rows carved out for validation when no val split is given.
VAL_FRACTION = 0.15
#: Batches timed by the step-time probe (each pass; the first step of a pass is not counted).
PROBE_BATCHES = 5
#: With a frozen encoder (every probe row's features computed once; the steps themselves are cheap).
FROZEN_PROBE_BATCHES = 3
#: Rows whose frozen features are computed again, per slot, to measure each slot's cost alone.
FEATURE_PROBE_ROWS = 16
#: Frozen image encoders are probed at no more than this size; their cost at the size used is
#: planned from it by the pixels ((size / PROBE_IMAGE_SIZE) ** 2, :func:`~.budget.plan_schedule`).
PROBE_IMAGE_SIZE = 96
#: Seconds an epoch spends on its own files beyond the checkpoint (metrics, hooks, fsync), measured
#: on this machine at a few tens of ms; planned, then re-planned from the epochs' actual times.
EPOCH_BOOKKEEPING = 0.05
#: Share of the time left that comparing pretrained and from-scratch candidates may take.
CANDIDATE_SHARE = 0.12
#: A pretrained candidate whose frozen features of every row would take more than this share of the
#: time left (by its pace measured while comparing) is not taken: the rest is for training.
FEATURE_SHARE = 0.5
#: Plans of at least this many epochs get one more (see where it is used).
EXTRA_EPOCH_FROM = 3
#: The from-scratch fallback is probed only while at least this share of the limit is left.
MIN_LEFT_FOR_PROBE = 0.25
DATA_FILE = "data.jsonl"
PLAN_FILE = "autofit.json"
SUMMARY_FILE = "fit_summary.json"


def stopping_text(patience: int, epochs: int, steps: int) -> str:
    """The plan's early-stopping words: after ``patience`` epochs without improvement, or said to be off when
    that is not less than the run's ``epochs`` (a small table's patience counts optimiser steps)."""
    if patience < epochs:
        return f"early stopping after {patience} epochs without improvement"
    return (f"no early stopping: its patience, {patience} epochs ({patience * steps} steps) without improvement, "
            "is not shorter than the run; the best epoch on validation is kept")


def read_rows(source: Any, *, encoding: str = "utf-8-sig", sep: str | None = None,
              decimal: str | None = None, decimal_columns: Sequence[str] = ()) -> tuple[list[dict[str, Any]], Path]:
    """A table (path or DataFrame) -> its rows and the folder its relative file paths start from
    (``encoding``: of a CSV / JSON Lines file; ``sep``, ``decimal``: a CSV's delimiter and decimal
    mark, None to find them; ``decimal_columns``: read with decimal commas whatever their share --
    :func:`~mmcore_plugins.io.tables.read_table`)."""
    rows, base, _ = read_rows_format(source, encoding=encoding, sep=sep, decimal=decimal, decimal_columns=decimal_columns)
    return rows, base


def read_rows_format(source: Any, *, encoding: str = "utf-8-sig", sep: str | None = None,
                     decimal: str | None = None, decimal_columns: Sequence[str] = ()) -> tuple[list[dict[str, Any]], Path, Any]:
    """:func:`read_rows` and the :class:`~mmcore_plugins.io.tables.TableFormat` the table was read with."""
    from mmcore_plugins.io.tables import read_table_format

    rows, fmt = read_table_format(source, encoding=encoding, sep=sep, decimal=decimal, decimal_columns=decimal_columns)
    base = Path(source).expanduser().resolve().parent if isinstance(source, (str, os.PathLike)) else Path.cwd()
    return rows, base, fmt


def default_run_dir(root: str | Path = "runs") -> Path:
    """``runs/fit``, or ``runs/fit-2``, ``runs/fit-3``, ... -- the first that does not exist."""
    root = Path(root)
    candidate, k = root / "fit", 2
    while candidate.exists():
        candidate, k = root / f"fit-{k}", k + 1
    return candidate


def carve_val(indices: list[int], targets: list[Any], *, fraction: float = VAL_FRACTION, seed: int = 0) -> set[int]:
    """A seeded, stratified ``fraction`` of ``indices`` for validation (at least one row; classes
    with a single row stay in training). ``targets`` are hashable labels (or None: not stratified)."""
    rng = random.Random(seed)
    groups: dict[Any, list[int]] = {}
    for index, target in zip(indices, targets, strict=True):
        groups.setdefault(target if isinstance(target, (int, str)) else None, []).append(index)
    chosen: set[int] = set()
    for key in sorted(groups, key=str):
        members = groups[key]
        rng.shuffle(members)
        take = int(round(fraction * len(members))) if len(members) > 1 else 0
        chosen.update(members[:take])
    if not chosen and len(indices) > 1:
        chosen.add(sorted(indices)[-1])
    return chosen


def _log(verbose: bool, *lines: str) -> None:
    if verbose:
        for line in lines:
            print(line, flush=True)


def fit(data: Any, target: str, *, val: Any = None, test: Any = None, time_limit: str | float = "10m",
        preset: str = "best", columns: Mapping[str, str] | None = None, run_dir: str | Path | None = None,
        overwrite: bool = False, verbose: bool = True, manager=None, allow_outside_paths: bool = False,
        empty_labels: str = "none", strict: bool = False, max_epochs: int | None = None, spent: float = 0.0,
        encoding: str = "utf-8-sig", sep: str | None = None, decimal: str | None = None) -> Any:
    """Train a model for column ``target`` of ``data`` without a config; returns a :class:`Predictor`.

    ``data``, ``val``, ``test``: CSV / JSONL / Parquet paths or pandas DataFrames (file paths in
    cells are relative to the table's folder; for a DataFrame, to the current folder). Without
    ``val`` the table's split column (values train / val / test) is used when it has one, else a
    stratified 15% of the training rows. ``time_limit``: ``"10m"``, ``"90s"``, ... or seconds --
    the whole fit, inference to test evaluation. ``preset``: ``best`` (pretrained encoders where
    they help) or ``fast``. ``columns``: ``{column: kind}`` overrides of the inference. ``run_dir``:
    where everything goes (default ``runs/fit``, ``runs/fit-2``, ...); it is locked for the whole
    fit, and ``overwrite`` lets it be a folder of yours that is not a run (your files stay; one
    named like fit's own ``data.jsonl``/``autofit.json``/``fit_summary.json`` is refused, never
    replaced). ``allow_outside_paths``: let file cells name files outside their table's folder
    (``mmcore train``'s rule and opt-in, :mod:`mmcore_plugins.io.paths`); refused by default.
    ``empty_labels`` (a multilabel target's empty cell): ``"none"`` of the labels, a negative example
    (default), or ``"missing"``, an unlabelled row left out. ``strict``: a cell naming a missing or
    unreadable file, in any of the tables, or an input that fails when training reads it, is an error
    naming row and column, instead of a missing modality (counted, as are rows whose target is empty or
    an infinite number, which are left out -- as :class:`Predictor` does with the tables it is given).
    ``max_epochs``: at most this many epochs (default: the preset's cap); fewer when the time limit
    says so. ``spent``: seconds already spent on this fit before the call (``mmcore fit``: the
    process's start-up), counted against the limit. ``encoding`` (of CSV / JSON Lines files; default
    UTF-8, ``cp1252`` for a CSV Excel saved on Windows), ``sep`` (a CSV's delimiter) and ``decimal``
    (``","`` or ``"."``): how the tables are read; ``sep``/``decimal`` None are found from the file
    (:func:`~mmcore_plugins.io.tables.read_table`); what was used is recorded in ``autofit.json``
    (``table``), and :class:`Predictor` reads new tables the same way.

    The time limit is a promise: every phase counts against it (reading, inference, the step-time
    probe, the frozen features of train/val/test, training, test evaluation, saving); frozen image
    features, training rows and epochs are scaled down to fit (:func:`~.budget.plan_schedule`), and
    training stops within an epoch at the limit (the best checkpoint is kept and tested).

    Raises :class:`ColumnError` (a ValueError naming the column) for a column that cannot be
    used -- before anything is trained; ValueError for a bad option; :class:`~.budget.TimeLimitError`
    when even the smallest plan cannot fit the time limit (with the estimate and the limit that would).
    """
    import torch

    from mmcore.plugin_manager import get_plugin_manager
    from mmcore_plugins.autofit.choose import PRESETS

    started = time.perf_counter() - max(0.0, float(spent))
    limit = parse_duration(time_limit)
    if preset not in PRESETS:
        raise ColumnError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if max_epochs is not None and (isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1):
        raise ColumnError(f"--max-epochs must be a positive whole number, got {max_epochs!r}")
    if empty_labels not in ("none", "missing"):
        raise ColumnError(f"--empty-labels must be 'none' or 'missing', got {empty_labels!r}")
    clock = Phases(limit=limit, started=started)
    if spent > 0:
        clock.add("start-up", float(spent), note="the command's interpreter, PyTorch and plugins")
    clock.sample_load("start")
    threads, threads_why = choose_threads()
    previous_threads = torch.get_num_threads()
    apply_threads(threads)
    from mmcore.engine.rundir import RunDir

    try:
        # a refused folder is named as the caller named it: run_dir= here, --run-dir under `mmcore fit`
        with RunDir.named_by("run_dir", unless_named=True):
            return _fit(data, target, val=val, test=test, limit=limit, preset=preset, columns=columns, run_dir=run_dir,
                        overwrite=overwrite, verbose=verbose, manager=manager or get_plugin_manager(),
                        allow_outside_paths=allow_outside_paths, empty_labels=empty_labels, strict=strict,
                        clock=clock, threads=(threads, threads_why), table_options={"encoding": encoding, "sep": sep,
                                                                                   "decimal": decimal},
                        max_epochs=min(MAX_EPOCHS[preset], max_epochs or MAX_EPOCHS[preset]))
    finally:
        torch.set_num_threads(previous_threads)  # the caller's process as it was (fit's choice was for the fit)


def _fit(data: Any, target: str, *, val: Any, test: Any, limit: float, preset: str, columns: Mapping[str, str] | None,
         run_dir: str | Path | None, overwrite: bool, verbose: bool, manager, allow_outside_paths: bool,
         empty_labels: str, strict: bool, clock: Phases, threads: tuple[int, str], max_epochs: int,
         table_options: Mapping[str, Any] | None = None) -> Any:
    from mmcore.engine.atomic import write_file
    from mmcore_plugins.autofit.predictor import Predictor

    threads, threads_why = threads
    read_started = clock.clock()
    table_options = dict(table_options or {})
    rows, base, table_format = read_rows_format(data, **table_options)
    # An infinite target (a price of inf) is no label, as an infinite number in an input column is no
    # measurement: the row is left out and counted, never made a class of its own.
    infinite = [i for i, r in enumerate(rows) if is_non_finite(r.get(target))]
    for i in infinite:
        rows[i] = {**rows[i], target: None}
    infos = infer_columns(rows, target=target, base=base, overrides=columns, allow_outside_paths=allow_outside_paths)
    note_table_format(infos, table_format)
    refused = strict_error(infos) if strict else None
    if refused is not None:  # missing/unreadable files are errors, not missing cells -- before any write or "treated as missing"
        raise refused
    extra = {name: read_rows(source, **table_options) for name, source in (("val", val), ("test", test)) if source is not None}
    target_info = next(i for i in infos if i.role == "target")
    _merge_target_vocabulary(target_info, [r for table, _ in extra.values() for r in table])
    empty_as_none = target_info.kind == "multilabel" and empty_labels == "none"
    target_info.details["empty_labels"] = empty_labels
    empties = sum(is_missing(r.get(target)) for i, r in enumerate(rows) if i not in set(infinite))
    if target_info.kind == "multilabel" and empties:  # the column table says what an empty cell became
        target_info.why += (f"; {empties} empty cells read as no label (negative examples; --empty-labels missing "
                            "leaves them out)" if empty_as_none else f"; {empties} empty cells: rows left out (--empty-labels missing)")
    if infinite:
        target_info.why += f"; {len(infinite)} infinite values (rows {', '.join(str(i + 1) for i in infinite[:10])}) left out"
    clock.add("read + infer", clock.clock() - read_started, note=f"{len(rows)} rows, {len(infos)} columns")
    _check_left(clock, f"reading and inferring {len(rows)} rows")
    prepare_started = clock.clock()
    _log(verbose, format_table(infos), *table_format_lines(table_format), "")

    # ---- splits: the user's tables, else the split column, else carved from train
    split_info = next((i for i in infos if i.kind == "split"), None)
    labelled = [i for i, r in enumerate(rows) if empty_as_none or not is_missing(r.get(target)) or isinstance(r.get(target), list)]
    unlabelled = len(rows) - len(labelled)
    assignment: dict[int, str] = {}
    for i in labelled:
        name = str(rows[i].get(split_info.name) or "").strip().lower() if split_info else ""
        assignment[i] = SPLIT_NAMES.get(name, "train")
    if "val" not in extra and "val" not in assignment.values():
        train = [i for i in labelled if assignment[i] == "train"]
        from mmcore.labels import ClassIndex

        classes = ClassIndex(target_info.details["classes"]) if target_info.kind == "classification" else None
        keys = [classes.get(rows[i][target]) if classes is not None else None for i in train]  # stratified by class
        for i in carve_val(train, keys):
            assignment[i] = "val"
        val_source = f"carved from train ({VAL_FRACTION:.0%}, stratified, seed 0)"
    else:
        val_source = " + ".join(([f"split column {split_info.name!r}"] if "val" in assignment.values() else [])
                                + (["--val"] if "val" in extra else []))
    train_rows = [rows[i] for i in labelled if assignment[i] == "train"]
    if not train_rows:
        raise ColumnError(f"no training rows: every row with a {target!r} value went to val/test")
    plan = make_plan(infos, train_rows)

    # ---- the prepared table: every table checked and read (its columns, files, target values) before
    # the run directory is claimed -- a bad --val/--test table leaves nothing behind
    unusable = {i.name: i.details.get("unusable", {}) for i in infos}
    preparer = Preparer(plan, base, unusable=unusable, check_files=False, allow_outside_paths=allow_outside_paths,
                        strict=strict)
    # A row whose every input cell is empty teaches nothing about the target -- decided from the user's cells
    # (Preparer.has_input, the Predictor's rule), never from the prepared row, whose empty numbers hold the
    # training median and would look present: left out of every table fit reads, listed by row number.
    no_input: dict[str, list[int]] = {}

    def prepared(check: Preparer, row: Mapping[str, Any], index: int, split: str, where: str) -> dict[str, Any] | None:
        out = check.table_row(row, index, split)
        files = {slot: out.get(spec["column"]) for slot, spec in plan.slots.items() if "column" in spec}
        if check.has_input(row, files):
            return out
        no_input.setdefault(where, []).append(index + 1)
        return None

    main_where = f"{str(data)!r}" if isinstance(data, (str, os.PathLike)) else "the table"
    table = [r for i in labelled if (r := prepared(preparer, rows[i], i, assignment[i], main_where)) is not None]
    dropped = dict(preparer.dropped_files)
    extra_lines: list[str] = []
    extra_unusable: dict[str, dict[str, Any]] = {}  # --val/--test: {split: {column: {count, listed}}}
    for name, (extra_rows, extra_base) in extra.items():
        source = {"val": val, "test": test}[name]
        where = f"--{name} {str(source)!r}" if isinstance(source, (str, os.PathLike)) else f"the --{name} table"
        check_table_columns(plan, list(dict.fromkeys(k for r in extra_rows for k in r)), target=True, where=where, option=None)
        extra_preparer = Preparer(plan, extra_base, allow_outside_paths=allow_outside_paths, strict=strict,
                                  stray_numbers=True)
        try:
            table += [t for i, r in enumerate(extra_rows) if extra_preparer.target(r, i) is not None
                      and (t := prepared(extra_preparer, r, i, name, where)) is not None]
        except ColumnError as exc:
            raise ColumnError(f"{where}: {exc}") from None
        for column, count in extra_preparer.dropped_files.items():
            dropped[f"{column} ({name})"] = count
        # listed as the training table's are (row, file, why; bounded): counted alone, they could not be found
        extra_lines += unusable_lines(where, extra_preparer.dropped)
        extra_unusable[name] = {column: unusable_json({i: why for i, c, why in extra_preparer.dropped if c == column})
                                for column in dict.fromkeys(c for _, c, _ in extra_preparer.dropped)}
    empty = sum(len(listed) for listed in no_input.values())
    if empty:  # a sample needs at least one modality; such rows teach nothing
        dropped["rows without any input"] = empty
    no_input_lines = [f"{where}: {_rows_text(listed)} no input at all (every column the model reads is empty) -> left out"
                      for where, listed in no_input.items()]

    # ---- the run directory
    run = Path(run_dir) if run_dir is not None else default_run_dir()
    with _claim_run_dir(run, overwrite, sources=[data, val, test]):  # locked until the summary is written
        run = run.resolve()
        data_path = run / DATA_FILE
        _write_jsonl(data_path, table)
        counts = {s: sum(r[plan.split_column] == s for r in table) for s in ("train", "val", "test")}
        _log(verbose, f"rows: {counts['train']} train, {counts['val']} val ({val_source}), {counts['test']} test"
             + (f"; {unlabelled} without a {target!r} value left out" if unlabelled else "")
             + (f" ({len(infinite)} of them infinite)" if infinite else "")
             + (f"; {empty} with no input at all left out" if empty else ""))
        _log(verbose, *no_input_lines, *extra_lines)
        # a class too rare to land in every split is said (and kept in autofit.json), never silently unmeasured
        rare = split_warnings(table, plan.target, plan.split_column) if plan.task == "classification" else []
        _log(verbose, *rare)

        # ---- the config
        config, choices = build_config(plan, infos, n_train=counts["train"], n_val=counts["val"], data_path=str(data_path),
                                       run_dir=str(run), preset=preset)
        clock.add("prepare", clock.clock() - prepare_started, note="splits, prepared table, config")

        # ---- candidates: a pretrained encoder is kept only where it measurably beats the from-scratch one
        compared: dict[str, Any] = {}
        scratch_why: dict[str, str] = {}
        if any(enc.get("freeze") is True for enc in config["model"]["encoders"].values()):
            from mmcore_plugins.autofit.candidates import Pace, compare_candidates

            # The phase's share is wall time on this machine as it is now: each candidate is estimated
            # at the pace measured in this fit, and one that would pass the share is skipped.
            candidates_s = CANDIDATE_SHARE * max(0.0, clock.left())
            pace = Pace()
            with clock.phase("candidates", candidates_s, note="linear probes on a sample, val split") as record:
                compared = compare_candidates(config, table, plan=plan, infos=infos, base=run, budget_s=candidates_s,
                                              manager=manager, clock=clock.clock, pace=pace)
                skipped = [s for s, c in compared.items() if c.skipped]
                if pace.nominal:
                    record.note += f"; machine at {pace.factor:.1f}x a quiet one's time"
                if skipped:
                    record.note += f"; skipped (estimate over the time left): {', '.join(skipped)}"
            scratch_why = {slot: c.why if c.skipped else f"measured: {c.why}" for slot, c in compared.items()
                           if c.chosen == "scratch"}
            scratch_why.update(_features_too_slow(compared, config, rows=sum(counts.values()), left=clock.left()))
            if scratch_why:
                config, choices = build_config(plan, infos, n_train=counts["train"], n_val=counts["val"],
                                               data_path=str(data_path), run_dir=str(run), preset=preset, scratch=scratch_why)
            for slot, c in compared.items():
                if c.chosen == "pretrained" and slot not in scratch_why:
                    choices.append(Choice(slot, "pretrained kept", f"measured: {c.why}"))
        if not counts["test"]:
            config["data"]["test_fraction"] = 0.0  # no test rows: none are carved from train either
        if strict:  # an input that fails only when training reads it is an error too
            config["trainer"]["unreadable_inputs"] = "error"
        _log(verbose, "", "choices:", *(f"  {c.slot:<12} {c.what}  -- {c.why}" for c in choices))

        _check_left(clock, "reading, preparing and comparing candidates")
        # ---- time: measure the costs, then plan every remaining phase into what is left of the limit
        with clock.phase("probe", note="a few training batches twice, validation twice"):
            costs = measure_costs(config, [r for r in table if r[plan.split_column] == "train"],
                                  [r for r in table if r[plan.split_column] == "val"], manager=manager)
        frozen_images = [slot for slot, enc in config["model"]["encoders"].items()
                         if enc.get("freeze") is True and "image_size" in enc]
        image_size = config["model"]["encoders"][frozen_images[0]]["image_size"] if frozen_images else None
        batch = config["trainer"]["batch_size"]
        schedule = plan_schedule(clock.left(), costs, train_rows=counts["train"], val_rows=counts["val"],
                                 test_rows=counts["test"], batch_size=batch, max_epochs=max_epochs, image_size=image_size)
        frozen = [slot for slot, enc in config["model"]["encoders"].items() if enc.get("freeze") is True]
        if frozen and (not schedule.fits or schedule.train_rows < counts["train"]) and clock.left() > MIN_LEFT_FOR_PROBE * limit:
            # The frozen features do not fit the limit (or only on fewer rows): the from-scratch
            # encoders need none; measured and taken when they keep more of the table.
            why = (f"the time limit: frozen features of {counts['train'] + counts['val'] + counts['test']} rows "
                   f"need about {schedule.planned['features'] + schedule.planned['test']:.0f} s")
            alt_config, alt_choices = build_config(plan, infos, n_train=counts["train"], n_val=counts["val"],
                                                   data_path=str(data_path), run_dir=str(run), preset=preset,
                                                   scratch={**{slot: why for slot in frozen}, **scratch_why})
            if not counts["test"]:
                alt_config["data"]["test_fraction"] = 0.0
            if strict:
                alt_config["trainer"]["unreadable_inputs"] = "error"
            with clock.phase("probe (from scratch)", note="the frozen features did not fit"):
                alt_costs = measure_costs(alt_config, [r for r in table if r[plan.split_column] == "train"],
                                          [r for r in table if r[plan.split_column] == "val"], manager=manager)
            alt = plan_schedule(clock.left(), alt_costs, train_rows=counts["train"], val_rows=counts["val"],
                                test_rows=counts["test"], batch_size=alt_config["trainer"]["batch_size"], max_epochs=max_epochs)
            if alt.fits and (not schedule.fits or alt.train_rows > schedule.train_rows):
                config, choices, costs, schedule, image_size, frozen_images = alt_config, alt_choices, alt_costs, alt, None, []
                _log(verbose, *(f"  {c.slot:<12} {c.what}  -- {c.why}" for c in choices if c.slot in frozen))
        if not schedule.fits:
            raise TimeLimitError(refusal(schedule, limit, clock.elapsed(), frozen=bool(costs.feature_row), preset=preset))
        batch = config["trainer"]["batch_size"]
        if schedule.image_size != image_size:
            for slot in frozen_images:
                config["model"]["encoders"][slot]["image_size"] = schedule.image_size
        if schedule.train_rows < counts["train"] or schedule.val_rows < counts["val"]:
            table = _subsample(table, plan, target_info, train=schedule.train_rows, val=schedule.val_rows)
            _write_jsonl(data_path, table)
            counts = {s: sum(r[plan.split_column] == s for r in table) for s in ("train", "val", "test")}
        config["trainer"]["epochs"] = epochs = planned_epochs(schedule.epochs, max_epochs)
        extra_epoch = epochs > schedule.epochs
        steps = math.ceil(counts["train"] / batch)
        time_note = (f"measured {1000 * costs.warm_step:.0f} ms/step ({1000 * costs.cold_step:.0f} ms reading inputs the first "
                     f"time), {steps} steps + validation = {schedule.per_epoch:.1f} s/epoch; "
                     f"{clock.left():.0f} s of the {limit:.0f} s limit left -> {epochs_text(schedule.epochs)}"
                     + (" + 1 (ended within it at the limit if the estimate was right)" if extra_epoch else "")
                     + f" (at most {max_epochs}; " + stopping_text(config["trainer"]["early_stopping"], epochs, steps) + ")")
        choices.append(Choice("epochs", str(epochs), time_note))
        if schedule.scaled:
            choices.append(Choice("budget", "; ".join(schedule.scaled),
                                  f"the table as it is needs more than the {clock.left():.0f} s left of --time-limit"))
        cached = cached_slots(config)
        _log(verbose, f"  {'epochs':<12} {time_note}",
             *([f"  {'budget':<12} scaled down to fit: {'; '.join(schedule.scaled)}"] if schedule.scaled else []),
             f"  {'threads':<12} {threads} intra-op ({threads_why})",
             f"  {'cached':<12} {', '.join(f'{s} ({how})' for s, how in cached.items()) or 'none (every slot is augmented)'}", "")

        autofit = {"target": target, "preset": preset, "time_limit_s": limit, "columns": [_info_json(i) for i in infos],
                   "plan": plan.to_json(), "choices": [c.__dict__ for c in choices], "costs": asdict(costs),
                   "schedule": {"epochs": epochs, "train_rows": schedule.train_rows, "val_rows": schedule.val_rows,
                                "image_size": schedule.image_size, "planned_s": schedule.planned, "scaled": schedule.scaled},
                   "threads": {"intra_op": threads, "why": threads_why},
                   "candidates": [c.to_json() for c in compared.values()],
                   "cached_slots": cached, "dropped_files": dropped, "unusable_files": extra_unusable,
                   "rows_without_input": {where: {"count": len(listed), "rows": listed[:LISTED_UNUSABLE]}
                                          for where, listed in no_input.items()}, "rows": counts, "val_source": val_source,
                   "infinite_targets": [i + 1 for i in infinite], "strict": strict, "table": table_format.to_json(),
                   "split_warnings": rare}
        write_file(run / PLAN_FILE, json.dumps(autofit, indent=2))

        # ---- train (setup and frozen features of train + val, epochs), test (its features included)
        from mmcore.engine.trainer import Trainer

        clock.sample_load("training")
        # fit's measured choice, not trainer.threads' default (auto): the summary reports what ran
        config["trainer"]["threads"] = threads
        trainer = Trainer(config, manager=manager)
        # fit draws its own display (FitProgress): the trainer's bar is off for this call only -- set on the
        # options, not in config.yaml, so that `mmcore train RUN/config.yaml` is watched like any training
        trainer.options.progress = False
        # Choosing the ensemble's experts between training and the test pass reads the val rows once more
        # (their inputs cached): reserved. The one test pass then scores the choice.
        experts_planned = counts["val"] * costs.eval_sample if _has_experts(config, plan) else 0.0
        chooser = ExpertChoice(run, clock=clock.clock, verbose=verbose) if experts_planned and counts["val"] else None
        reserve = schedule.planned["test"] + schedule.planned["final"] + experts_planned
        feature_pace = _feature_budget(trainer, schedule, counts, deadline=clock.started + limit, clock=clock.clock,
                                       reserve=schedule.planned["final"] + experts_planned)
        progress = FitProgress(deadline=clock.started + limit, reserve=reserve, clock=clock.clock,
                               val_seconds=counts["val"] * costs.eval_sample, planned_step=costs.warm_step,
                               max_epochs=max_epochs, log=(lambda line: print(line, flush=True)) if verbose else None)
        began = clock.clock()
        try:
            with mmcore.register_plugin(progress, name=f"autofit-progress#{id(progress)}", manager=manager), \
                    _registered(chooser, manager):  # this run only
                report = trainer.fit()
        except RunInterrupted as exc:  # Ctrl-C: the run is marked partial (report.json too) and says how to go on
            write_file(run / SUMMARY_FILE, json.dumps({"run_dir": str(run), "task": plan.task, "status": "interrupted",
                                                       "epochs_run": exc.epochs_done, "epochs_planned": epochs, "epochs_final": trainer.options.epochs,
                                                       "resume": exc.resume_hint(), "time": clock.to_json()}, indent=2))
            raise
        ended = clock.clock()
        trained = progress.train_started if progress.train_started is not None else ended
        last_epoch = progress.epoch_started if progress.epoch_started is not None else trained
        clock.add("setup + features", trained - began, schedule.planned["setup"] + schedule.planned["features"],
                  note=f"train + val rows; images at {schedule.image_size} px" if schedule.image_size else "")
        final_epochs = trainer.options.epochs  # more than planned when the epochs turned out faster (progress.grown)
        clock.add("training", last_epoch - trained, schedule.planned["training"],
                  note=f"{report.get('epochs_run')} of {epochs_text(final_epochs)}"
                  + (f" (planned {epochs}, grown after epoch {', '.join(str(g['after_epoch']) for g in progress.grown)})"
                     if progress.grown else ""))
        experts = chooser.out if chooser is not None else None
        if experts is not None:
            clock.add("experts", chooser.seconds, experts_planned, note="each expert alone on val, before the test pass; "
                      "at-chance ones left out, under-confident ones sharpened" + chooser.note)
        clock.add("test", ended - last_epoch - (chooser.seconds if experts is not None else 0.0), schedule.planned["test"],
                  note=f"{counts['test']} rows, best checkpoint")
        with clock.phase("saving", schedule.planned["final"]):
            clock.sample_load("end")
            cache_bytes = _cache_bytes(config)
            summary = {"run_dir": str(run), "task": plan.task, "status": report.get("status"), "best_epoch": report.get("best_epoch"),
                       "epochs_run": report.get("epochs_run"), "epochs_planned": epochs, "epochs_final": final_epochs,
                       "epochs_grown": progress.grown, "monitor": report.get("monitor"),
                       "best_val": report.get("best_value"), "test": report.get("test", {}), "train_seconds": report.get("seconds"),
                       "seconds": clock.elapsed(), "time_limit_s": limit, "cached_slots": cached, "rows": counts,
                       "feature_cache_bytes": cache_bytes, "threads": {"intra_op": threads, "why": threads_why,
                                                                       "dropped_to_one_after_epoch": progress.threads_dropped_after},
                       "scaled_to_fit": schedule.scaled, "epochs": progress.epochs,
                       "candidates": [c.to_json() for c in compared.values()],
                       "experts": experts,
                       "stop_reason": report.get("stop_reason"), "stopped_by_time_limit_after_epoch": progress.stopped_after,
                       "stopped_within_epoch": progress.stopped_within_epoch,
                       "unreadable_inputs": report.get("unreadable_inputs")}
            if trainer.feature_rows is not None:  # the machine slowed down while the frozen features were computed
                done, total = trainer.feature_rows
                cut = (f"frozen features of {done} of {total} training rows (a random sample): computing them took "
                       f"{1000 * feature_pace['seen']:.0f} ms a row against {1000 * feature_pace['planned']:.0f} planned "
                       "(the machine slowed down), and the rest would have left no time to train")
                summary["scaled_to_fit"] = [*schedule.scaled, cut]
                summary["rows"] = {**counts, "train": done}
                _log(verbose, f"  {'budget':<12} {cut}")
            summary["time"] = clock.to_json()
            write_file(run / SUMMARY_FILE, json.dumps(summary, indent=2))
            predictor = Predictor.load(run, manager=manager)
        summary["seconds"], summary["time"] = clock.elapsed(), clock.to_json()
        write_file(run / SUMMARY_FILE, json.dumps(summary, indent=2))
        if verbose:
            test_part = ", ".join(f"{k} {v:.4f}" for k, v in summary["test"].items()) or "no test split"
            print(f"\nbest epoch {summary['best_epoch']} of {summary['epochs_run']} ({summary['status']}); "
                  f"val {summary['monitor']} {summary['best_val']:.4f}; test: {test_part}", flush=True)
            print(f"cached across epochs: {', '.join(f'{s} ({how})' for s, how in cached.items()) or 'nothing'}"
                  + (f"; feature cache {cache_bytes / 2**20:.1f} MiB on disk" if cache_bytes else ""))
            unreadable = summary["unreadable_inputs"] or {}
            if unreadable.get("count"):  # found only when training read them: missing modalities, as above
                print(f"{unreadable['count']} input(s) could not be read when training read them and were missing "
                      f"modalities ({', '.join(f'{c} {n}' for c, n in unreadable['columns'].items())}); first: "
                      f"{unreadable['listed'][0]} (fit_summary.json lists them)")
            loads = ", ".join(f"{w} {v:.1f}" for w, v in clock.loads if v is not None)
            print(f"time (planned / actual; load average {loads or 'unknown'} on {cpu_count()} CPUs):", clock.table(), sep="\n")
            print(f"run directory {run}")
            head = config["model"]["head"]
            # the ensemble's experts read each slot's own features: a fusion edit alone would change nothing
            fusion_note = ("; another fusion counts only with model.head.joint_weight above 0"
                           if head.get("name") == "unimodal_ensemble" and not head.get("joint_weight") else "")
            print(f"  reproduce: mmcore train {run / 'config.yaml'} trainer.run_dir={run.parent / (run.name + '-again')}"
                  f"   (edit it to go further: the new run still takes your own columns{fusion_note})")
            print(f"  predict:   mmcore predict {_shell(run)} --data TABLE --out predictions.jsonl   "
                  f"(Python: mmcore.Predictor.load({str(run)!r}).predict(table))")
            export = Path("exports") / f"{run.name}-onnx-int8"  # the folder the export writes (named, so serve serves it)
            print(f"  deploy:    mmcore export {_shell(run)} --int8 --out {_shell(export)}   then   "
                  f"mmcore serve {_shell(export)}")
        return predictor


def _feature_budget(trainer, schedule, counts: Mapping[str, int], *, deadline: float, clock, reserve: float) -> dict[str, float]:
    """Give ``trainer`` a :attr:`~mmcore.engine.trainer.Trainer.feature_budget` when the plan computes frozen
    features: training rows' features go on while the time left covers the test pass at the pace just seen
    (its features are computed at that pace too), ``reserve`` (saving, the experts' choice) and half of the
    planned training -- so a machine that slows down while they are computed costs training rows, not the
    whole of training. Returns ``{"planned": s, "seen": s}`` seconds a row (``seen`` filled as it goes)."""
    rows = counts["train"] + counts["val"]
    pace = {"planned": schedule.planned["features"] / rows if rows else 0.0, "seen": 0.0}
    if pace["planned"] <= 0 or not counts["train"]:
        return pace
    test_reading = max(0.0, schedule.planned["test"] - counts["test"] * pace["planned"])  # the test pass less its features
    keep = 0.5 * schedule.planned["training"]

    def budget(done: int, total: int, seconds_per_row: float) -> bool:
        pace["seen"] = seconds_per_row
        need = test_reading + counts["test"] * max(seconds_per_row, pace["planned"]) + reserve + keep
        return deadline - clock() > need

    trainer.feature_budget = budget
    return pace


def _shell(path: Path) -> str:
    """``path`` as one shell word (a folder with spaces quoted), for the command lines fit prints."""
    import shlex

    return shlex.quote(str(path))


def planned_epochs(fitting: int, max_epochs: int) -> int:
    """The epochs a fit plans when ``fitting`` fit the time left by the estimate: one more from
    ``EXTRA_EPOCH_FROM`` on (never over ``max_epochs``). A plan that is short leaves the limit's time
    unused (measured: fits ending at 0.85-0.89x their limit, the learning rate at its floor); one
    that is long is ended within its last epoch at the limit by the progress plugin, when the
    cosine schedule has the rate near its floor anyway (the best checkpoint is kept)."""
    return fitting + 1 if EXTRA_EPOCH_FROM <= fitting < max_epochs else fitting


def _features_too_slow(compared: Mapping[str, Any], config: Mapping[str, Any], *, rows: int, left: float) -> dict[str, str]:
    """``{slot: why}`` for the pretrained candidates kept on accuracy whose frozen features of every
    row (train, val and test) would take more than ``FEATURE_SHARE`` of the ``left`` seconds even at
    the smallest image size fit scales to -- by the encoder's own pace measured while comparing. The
    from-scratch encoder is taken at once: measuring the frozen run's costs first would spend minutes
    of a busy machine to learn the same."""
    from mmcore_plugins.autofit.budget import IMAGE_SIZES
    from mmcore_plugins.autofit.candidates import PROBE_IMAGE_SIZE as COMPARED_SIZE

    out = {}
    for slot, c in compared.items():
        if c.chosen != "pretrained" or not c.feature_row_s:
            continue
        encoder = config["model"]["encoders"].get(slot, {})
        per_row, size = c.feature_row_s, ""
        if "image_size" in encoder:  # compared at min(COMPARED_SIZE, size); the cost grows with the pixels
            compared_at, smallest = min(COMPARED_SIZE, int(encoder["image_size"])), min(min(IMAGE_SIZES), int(encoder["image_size"]))
            per_row *= (smallest / compared_at) ** 2
            size = f" at {smallest} px"
        needed = per_row * rows
        if needed > FEATURE_SHARE * left:
            out[slot] = (f"measured: {c.why}; but its frozen features of {rows} rows{size} need about {needed:.0f} s "
                         f"({1000 * per_row:.1f} ms a row, as measured), more than {FEATURE_SHARE:.0%} of the {left:.0f} s left")
    return out


def _has_experts(config: Mapping[str, Any], plan) -> bool:
    """Whether the model is a uni-modal ensemble of two or more experts (a classification target)."""
    return plan.task == "classification" and config["model"]["head"].get("name") == "unimodal_ensemble" \
        and len(config["model"]["encoders"]) > 1


class ExpertChoice:
    """``fit``'s plugin for the one run it trains with a uni-modal ensemble: between training and the
    test pass (``mmcore_before_test``, the model holding the best checkpoint's weights) it measures each
    expert alone on the val split, leaves out those at chance and sharpens the under-confident ones,
    bounded (:func:`.experts.choose_experts`). A changed weight goes into the model, the best
    checkpoint and ``config.yaml`` (the head's ``expert_weights``), so the run's only test pass scores
    the choice and the saved run predicts with it. ``out`` (None: not run) is the choice for the
    summary, ``seconds`` its time, ``note`` what it changed."""

    def __init__(self, run: Path, *, clock, verbose: bool) -> None:
        self.run, self.clock, self.verbose = run, clock, verbose
        self.out: dict[str, Any] | None = None
        self.seconds, self.note = 0.0, ""

    @mmcore.hookimpl
    def mmcore_before_test(self, trainer) -> None:
        if not trainer.best_epoch or not len(trainer.datasets["val"]):
            return
        started = self.clock()
        try:
            self._choose(trainer)
        finally:
            self.seconds = self.clock() - started

    def _choose(self, trainer) -> None:
        from mmcore.engine.atomic import write_file
        from mmcore.engine.checkpoint import save_checkpoint
        from mmcore.engine.rundir import RunDir
        from mmcore.yamlio import dump_yaml, load_yaml_file
        from mmcore_plugins.autofit.experts import choose_experts, expert_outputs

        model, run = trainer.model, self.run
        batch = trainer.options.eval_batch_size or trainer.options.batch_size
        choice = choose_experts(expert_outputs(model, trainer.datasets["val"], batch_size=batch))
        self.out = choice.to_json()
        if choice.changed:
            weights = {s: w for s, w in choice.weights.items() if w != 1.0}
            model.head.expert_weights.update(weights)
            model.spec["head"]["expert_weights"] = weights
            meta = json.loads((run / "best" / "model.json").read_text())
            extra = {k: v for k, v in meta.items() if k not in ("spec", "processors")}
            save_checkpoint(model, run / "best", weights=trainer.best_weights, extra=extra)
            stored = load_yaml_file(run / RunDir.CONFIG)
            stored["model"]["head"]["expert_weights"] = weights
            write_file(run / RunDir.CONFIG, dump_yaml(stored))
            sharpened = ", ".join(f"{s} x{w:.2f}" for s, w in weights.items() if w > 0)
            self.note = "".join(f"; {note}" for note in ([f"left out: {', '.join(choice.dropped)}"] if choice.dropped else [])
                                + ([f"sharpened: {sharpened}"] if sharpened else []))
        _log(self.verbose, f"  {'experts':<12} {self.out['why']}")


def _registered(plugin, manager):
    """``plugin`` registered with ``manager`` while the block runs (nothing for None)."""
    import contextlib

    if plugin is None:
        return contextlib.nullcontext()
    return mmcore.register_plugin(plugin, name=f"autofit-{type(plugin).__name__}#{id(plugin)}", manager=manager)


def _check_left(clock: Phases, done: str) -> None:
    """Refuse at once when what ran so far left less than the least a training needs (the fixed
    reserve at the end, a setup and a little training): no measurement can change that answer."""
    least = FINAL_SECONDS + 4 * RUN_SECONDS
    if clock.left() < least:  # the least limit that passes here: what ran so far, plus the shortest training
        elapsed = clock.elapsed()
        load = next((f" (load {value:.1f})" for _, value in clock.loads if value is not None), "")
        raise TimeLimitError(f"--time-limit {clock.limit:.0f}s: {done} took {elapsed:.0f} s on this machine{load}, "
                             f"leaving {max(0.0, clock.left()):.0f} s, less than the {least:.0f} s the shortest training "
                             f"needs; pass --time-limit {duration_text(elapsed + least)} or more")


def _rows_text(listed: Sequence[int], limit: int = 10) -> str:
    """``"row 4:"`` / ``"rows 4, 9 and 3 more:"`` (data rows numbered from 1)."""
    shown = ", ".join(map(str, listed[:limit])) + (f" and {len(listed) - limit} more" if len(listed) > limit else "")
    return f"row{'s' if len(listed) > 1 else ''} {shown}:"


def _merge_target_vocabulary(info: ColumnInfo, rows: Sequence[Mapping[str, Any]]) -> None:
    """Classes / labels seen only in the user's val or test table join the vocabulary."""
    from mmcore.labels import fit_classes, label_values, multilabel_names

    values = [r.get(info.name) for r in rows if not is_missing(r.get(info.name))]
    try:
        if info.kind == "classification":
            known = dict(zip(info.details["classes"], info.details["class_values"], strict=True))
            classes = fit_classes(values, known=info.details["classes"])  # the training table's spellings kept
            info.details["classes"] = classes
            info.details["class_values"] = [known.get(c, v) for c, v in zip(classes, label_values(classes, values), strict=True)]
        elif info.kind == "multilabel":
            labels = [label for v in values for label in multilabel_names(v, info.details.get("delimiter"))]
            info.details["labels"] = fit_classes(labels, known=info.details["labels"])
    except ValueError as exc:
        raise ColumnError(f"target {info.name!r} (--val/--test table): {exc}") from exc


def _info_json(info: ColumnInfo) -> dict[str, Any]:
    details = {k: v for k, v in info.details.items() if k != "unusable"}
    details["unusable_rows"] = len(info.details.get("unusable", {}))
    details["unusable"] = unusable_json(info.details.get("unusable", {}))  # the first rows, named with their reason
    return {"name": info.name, "kind": info.kind, "role": info.role, "why": info.why, "missing": info.missing,
            "details": details}


#: The files fit writes into a run directory besides mmcore's own (never a user's file of these names).
RUN_FILES = (DATA_FILE, PLAN_FILE, SUMMARY_FILE)


def _claim_run_dir(run: Path, overwrite: bool, sources: Sequence[Any] = ()):
    """The run directory, checked, marked and locked for the whole fit (:meth:`RunDir.hold`: the
    probe and the trainer share the lock; a second fit on the folder stops at once naming this
    process). A user's ``data.jsonl``/``autofit.json``/``fit_summary.json`` is refused under
    ``overwrite``, never replaced; so is a source table that is one of the run's own files."""
    from mmcore.engine.rundir import RunDir

    for source in sources:
        if isinstance(source, (str, os.PathLike)):
            table = Path(source).expanduser()
            for name in RUN_FILES:
                target = run / name
                if table.exists() and target.exists() and os.path.samefile(table, target):
                    raise ColumnError(f"the table {str(source)!r} is the run directory's own {name}, which fit writes: "
                                      "copy it elsewhere, or choose another --run-dir")
    return RunDir.hold(run, overwrite=overwrite, files=RUN_FILES)


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    from mmcore.engine.atomic import write_file

    write_file(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def measure_costs(config: Mapping[str, Any], train_rows: Sequence[Mapping[str, Any]],
                  val_rows: Sequence[Mapping[str, Any]], *, manager, batches: int = PROBE_BATCHES) -> Costs:
    """Time real training steps of ``config`` on a few batches of its own rows (a throw-away run).

    Reading the rows into a data set is timed alone (``load_row``). The probe then trains
    ``batches`` batches twice over the same rows: the first pass reads and processes every input
    (``cold_step``), the second finds what ``cache_inputs`` remembered (``warm_step``); the first
    step of each pass (allocation warm-up) is not counted. Validation is timed on up to 64 val rows,
    reading them (``eval_cold_sample``) and again (``eval_sample``). Each frozen slot's features are
    computed again alone (``feature_row``; image slots at their ``image_size``); the rest of the
    setup is ``setup_fixed`` (loading weights, building the model).
    """
    from mmcore.engine.datasets import load_datasets
    from mmcore.engine.trainer import Trainer

    batch = int(config["trainer"]["batch_size"])
    frozen = bool(config["trainer"].get("cache_features"))
    if frozen:  # every probe row's frozen features are computed: the costliest part on a busy CPU
        batches = min(batches, FROZEN_PROBE_BATCHES)
    probe_train = list(train_rows[: batch * batches])
    probe_val = list(val_rows[: 32 if frozen else 64]) or probe_train[:batch]
    rows = len(probe_train) + len(probe_val)
    with tempfile.TemporaryDirectory(prefix="mmcore-fit-probe-") as tmp:
        probe = Path(tmp) / "probe.jsonl"
        split = config["data"]["split_column"]
        _write_jsonl(probe, [*({**r, split: "train"} for r in probe_train), *({**r, split: "val"} for r in probe_val)])
        cfg = copy.deepcopy(dict(config))
        cfg["data"] = {**cfg["data"], "path": str(probe), "test_fraction": 0.0}
        for encoder in cfg["model"]["encoders"].values():  # frozen image features measured small, planned by the pixels
            if encoder.get("freeze") is True and "image_size" in encoder:
                encoder["image_size"] = min(int(encoder["image_size"]), PROBE_IMAGE_SIZE)
        cfg["trainer"] = {**cfg["trainer"], "epochs": 1, "run_dir": str(Path(tmp) / "run"), "progress": False,
                          "plots": False, "tensorboard": False, "cache_features": frozen}
        load_row = math.inf
        for _ in range(2):  # the first read also pays one-time imports
            start = time.perf_counter()
            load_datasets(cfg, manager)
            load_row = min(load_row, (time.perf_counter() - start) / max(1, rows))
        trainer = Trainer(cfg, manager=manager)
        start = time.perf_counter()
        trainer.setup()
        setup = time.perf_counter() - start
        try:
            feature_row: dict[str, float] = {}
            cache = trainer.feature_cache
            if frozen and cache is not None:
                # The frozen encoders' first pass, per row and slot, measured alone (the setup also
                # loaded the pretrained weights: a fixed cost the real run pays once too).
                from mmcore.data import precompute_features

                cache.clear()
                train = trainer.datasets["train"]
                sample = [train[i] for i in range(min(FEATURE_PROBE_ROWS, len(train)))]
                for slot in list(trainer.model.feature_caches):
                    start = time.perf_counter()
                    precompute_features(trainer.model, slot, sample, batch_size=FEATURE_PROBE_ROWS)
                    feature_row[slot] = (time.perf_counter() - start) / max(1, len(sample))
            passes = [_timed_pass(trainer) for _ in range(2)]
            start = time.perf_counter()
            trainer.evaluate(trainer.datasets["val"])  # reads and remembers the val inputs
            eval_cold = (time.perf_counter() - start) / max(1, len(trainer.datasets["val"]))
            start = time.perf_counter()
            trainer.evaluate(trainer.datasets["val"])
            eval_sample = (time.perf_counter() - start) / max(1, len(trainer.datasets["val"]))
            # Saving the weights (a checkpoint per epoch, the best one again when it improved).
            import torch

            start = time.perf_counter()
            for name in ("last", "best"):  # with the optimiser's state, as a checkpoint holds it
                torch.save({"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict()},
                           Path(tmp) / f"{name}.pt")
            epoch_fixed = time.perf_counter() - start + EPOCH_BOOKKEEPING
        finally:
            trainer.close()  # the probe's (temporary) run directory lock
        # The first setup in a process also paid one-time imports; a second one (without features,
        # measured above) is what the run itself will pay.
        again = Trainer({**cfg, "trainer": {**cfg["trainer"], "run_dir": str(Path(tmp) / "again"), "cache_features": False}},
                        manager=manager)
        start = time.perf_counter()
        try:
            again.setup()
            setup = min(setup - sum(feature_row.values()) * rows, time.perf_counter() - start)
        finally:
            again.close()
    cold, warm = passes
    encoders = cfg["model"]["encoders"]
    image_slots = tuple(slot for slot in feature_row if "image_size" in encoders.get(slot, {}))
    sizes = {encoders[slot]["image_size"] for slot in image_slots}
    return Costs(cold_step=max(cold, warm), warm_step=warm, eval_sample=eval_sample, eval_cold_sample=max(eval_cold, eval_sample),
                 load_row=load_row, setup_fixed=max(0.0, setup - load_row * rows), epoch_fixed=epoch_fixed,
                 feature_row=feature_row, feature_size=next(iter(sizes)) if len(sizes) == 1 else None, image_slots=image_slots)


def _subsample(table: list[dict[str, Any]], plan, target_info: ColumnInfo, *, train: int, val: int) -> list[dict[str, Any]]:
    """``train`` training and ``val`` validation rows of the prepared ``table`` (seeded, stratified by
    class for a classification target); test rows all kept."""
    split = plan.split_column
    keep: set[int] = set()
    for name, count in (("train", train), ("val", val)):
        indices = [i for i, r in enumerate(table) if r[split] == name]
        if count >= len(indices):
            keep.update(indices)
            continue
        keys = [str(table[i].get(plan.target)) if plan.task == "classification" else None for i in indices]
        keep.update(carve_val(indices, keys, fraction=count / len(indices), seed=1))
    return [r for i, r in enumerate(table) if r[split] not in ("train", "val") or i in keep]


def _cache_bytes(config: Mapping[str, Any]) -> int:
    """Bytes of the run's frozen-feature cache on disk (0 without one)."""
    where = (config.get("trainer") or {}).get("cache_features")
    if not isinstance(where, str):
        return 0
    from mmcore.feature_cache import disk_bytes

    return disk_bytes(where)


def _timed_pass(trainer) -> float:
    """Mean seconds per training step (loading the batch included) over one pass of the probe rows."""
    trainer.begin_epoch(1)
    loader = trainer.train_loader(1)
    durations = []
    start = time.perf_counter()
    for batch in loader:
        trainer.train_step(batch)
        now = time.perf_counter()
        durations.append(now - start)
        start = now
    timed = durations[1:] or durations
    return sum(timed) / len(timed)
