"""``fit``: a table -> inferred columns -> a prepared table + a complete config in a run directory ->
a measured step time -> epochs for the time limit -> the trainer -> a :class:`Predictor`.

Everything ``fit`` decides is written into the run directory: ``config.yaml`` (``mmcore train
RUN/config.yaml`` reproduces the run; editing it is how to go further), ``data.jsonl`` (the
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
from pathlib import Path
from typing import Any

import mmcore
from mmcore_plugins.autofit.choose import (
    MAX_EPOCHS,
    TRAIN_SHARE,
    Choice,
    StepTimes,
    build_config,
    cached_slots,
    epoch_seconds,
    epochs_for_budget,
    parse_duration,
)
from mmcore_plugins.autofit.infer import (
    SPLIT_NAMES,
    ColumnError,
    ColumnInfo,
    format_table,
    infer_columns,
    is_missing,
    is_nonfinite,
)
from mmcore_plugins.autofit.prepare import Preparer, make_plan
from mmcore_plugins.autofit.progress import FitProgress

#: Fraction of the training rows carved out for validation when no val split is given.
VAL_FRACTION = 0.15
#: Batches timed by the step-time probe (each pass; the first step of a pass is not counted).
PROBE_BATCHES = 5
#: Seconds kept after training for the test evaluation's bookkeeping and loading the Predictor.
FINAL_SECONDS = 5.0
DATA_FILE = "data.jsonl"
PLAN_FILE = "autofit.json"
SUMMARY_FILE = "fit_summary.json"


def read_rows(source: Any) -> tuple[list[dict[str, Any]], Path]:
    """A table (path or DataFrame) -> its rows and the folder its relative file paths start from."""
    from mmcore_plugins.io.tables import read_table

    rows = read_table(source)
    base = Path(source).expanduser().resolve().parent if isinstance(source, (str, os.PathLike)) else Path.cwd()
    return rows, base


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
        overwrite: bool = False, verbose: bool = True, manager=None, allow_outside_paths: bool = False) -> Any:
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

    Raises :class:`ColumnError` (a ValueError naming the column) for a column that cannot be
    used -- before anything is trained; ValueError for a bad option.
    """
    from mmcore.engine.atomic import write_file
    from mmcore.plugin_manager import get_plugin_manager
    from mmcore_plugins.autofit.choose import PRESETS
    from mmcore_plugins.autofit.predictor import Predictor

    started = time.perf_counter()
    limit = parse_duration(time_limit)
    if preset not in PRESETS:
        raise ColumnError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    manager = manager or get_plugin_manager()
    rows, base = read_rows(data)
    infos = infer_columns(rows, target=target, base=base, overrides=columns, allow_outside_paths=allow_outside_paths)
    extra = {name: read_rows(source) for name, source in (("val", val), ("test", test)) if source is not None}
    target_info = next(i for i in infos if i.role == "target")
    _merge_target_vocabulary(target_info, [r for table, _ in extra.values() for r in table])
    _log(verbose, format_table(infos), "")

    # ---- splits: the user's tables, else the split column, else carved from train
    split_info = next((i for i in infos if i.kind == "split"), None)
    nonfinite = target_info.details.get("nonfinite", {})  # a declared regression's inf/nan rows: left out, counted
    labelled = [i for i, r in enumerate(rows)
                if (not is_missing(r.get(target)) or isinstance(r.get(target), list)) and i not in nonfinite]
    unlabelled = len(rows) - len(labelled) - len(nonfinite)
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

    # ---- the run directory and its prepared table
    run = Path(run_dir) if run_dir is not None else default_run_dir()
    with _claim_run_dir(run, overwrite, sources=[data, val, test]):  # locked until the summary is written
        run = run.resolve()
        unusable = {i.name: i.details.get("unusable", {}) for i in infos}
        preparer = Preparer(plan, base, unusable=unusable, check_files=False, allow_outside_paths=allow_outside_paths)
        table = [preparer.table_row(rows[i], i, assignment[i]) for i in labelled]
        dropped = dict(preparer.dropped_files)
        for name, (extra_rows, extra_base) in extra.items():
            extra_preparer = Preparer(plan, extra_base, allow_outside_paths=allow_outside_paths)
            usable = [(i, r) for i, r in enumerate(extra_rows) if not is_missing(r.get(target)) or isinstance(r.get(target), list)]
            if plan.task == "regression":
                finite = [(i, r) for i, r in usable if not is_nonfinite(r.get(target))]
                if len(finite) < len(usable):
                    dropped[f"rows with a non-finite {target!r} ({name})"] = len(usable) - len(finite)
                usable = finite
            table += [extra_preparer.table_row(r, i, name) for i, r in usable]
            for column, count in extra_preparer.dropped_files.items():
                dropped[f"{column} ({name})"] = count
        kept = [r for r in table if not all(_absent(r, spec) for spec in plan.slots.values())]
        empty = len(table) - len(kept)
        if empty:  # a sample needs at least one modality; such rows teach nothing
            table = kept
            dropped["rows without any input"] = empty
        data_path = run / DATA_FILE
        _write_jsonl(data_path, table)
        counts = {s: sum(r[plan.split_column] == s for r in table) for s in ("train", "val", "test")}
        _log(verbose, f"rows: {counts['train']} train, {counts['val']} val ({val_source}), {counts['test']} test"
             + (f"; {unlabelled} without a {target!r} value left out" if unlabelled else "")
             + (f"; {len(nonfinite)} with a non-finite {target!r} (inf/nan) left out" if nonfinite else "")
             + (f"; {empty} with no input at all left out" if empty else ""))

        # ---- the config
        config, choices = build_config(plan, infos, n_train=counts["train"], n_val=counts["val"], data_path=str(data_path),
                                       run_dir=str(run), preset=preset)
        if not counts["test"]:
            config["data"]["test_fraction"] = 0.0  # no test rows: none are carved from train either
        _log(verbose, "", "choices:", *(f"  {c.slot:<12} {c.what}  -- {c.why}" for c in choices))

        # ---- time: measure a step, then fit the epochs into what is left of the limit
        times = measure_step_times(config, [r for r in table if r[plan.split_column] == "train"],
                                   [r for r in table if r[plan.split_column] == "val"], manager=manager)
        batch = config["trainer"]["batch_size"]
        steps = math.ceil(counts["train"] / batch)
        spent = time.perf_counter() - started
        test_cost = counts["test"] * times.eval_sample * 3  # cold reads; a small share anyway
        budget = limit * TRAIN_SHARE - spent - test_cost - times.setup_fixed
        max_epochs = MAX_EPOCHS[preset]
        epochs = epochs_for_budget(budget, times, steps_per_epoch=steps, val_rows=counts["val"],
                                   rows=counts["train"] + counts["val"], max_epochs=max_epochs)
        config["trainer"]["epochs"] = epochs
        per_epoch = epoch_seconds(times, steps_per_epoch=steps, val_rows=counts["val"])
        time_note = (f"measured {1000 * times.warm_step:.0f} ms/step ({1000 * times.cold_step:.0f} ms reading inputs the first "
                     f"time), {steps} steps + validation = {per_epoch:.1f} s/epoch; {budget:.0f} s of the {limit:.0f} s limit "
                     f"left for training -> {epochs} epochs (at most {max_epochs}; early stopping after "
                     f"{config['trainer']['early_stopping']} without improvement)")
        choices.append(Choice("epochs", str(epochs), time_note))
        cached = cached_slots(config)
        _log(verbose, f"  {'epochs':<12} {time_note}",
             f"  {'cached':<12} {', '.join(f'{s} ({how})' for s, how in cached.items()) or 'none (every slot is augmented)'}", "")

        autofit = {"target": target, "preset": preset, "time_limit_s": limit, "columns": [_info_json(i) for i in infos],
                   "plan": plan.to_json(), "choices": [c.__dict__ for c in choices], "step_times": times.__dict__,
                   "cached_slots": cached, "dropped_files": dropped, "rows": counts, "val_source": val_source,
                   "rows_left_out": {"no target": unlabelled, "non-finite target": len(nonfinite), "no input": empty}}
        write_file(run / PLAN_FILE, json.dumps(autofit, indent=2))

        # ---- train
        from mmcore.engine.trainer import Trainer

        trainer = Trainer(config, manager=manager)
        progress = FitProgress(deadline=started + limit - test_cost - FINAL_SECONDS,
                               log=(lambda line: print(line, flush=True)) if verbose else None)
        with mmcore.register_plugin(progress, name=f"autofit-progress#{id(progress)}", manager=manager):  # this run only
            report = trainer.fit()
        seconds = time.perf_counter() - started
        summary = {"run_dir": str(run), "task": plan.task, "status": report.get("status"), "best_epoch": report.get("best_epoch"),
                   "epochs_run": report.get("epochs_run"), "epochs_planned": epochs, "monitor": report.get("monitor"),
                   "best_val": report.get("best_value"), "test": report.get("test", {}), "train_seconds": report.get("seconds"),
                   "seconds": seconds, "cached_slots": cached, "rows": counts,
                   "stop_reason": report.get("stop_reason"), "stopped_by_time_limit_after_epoch": progress.stopped_after}
        write_file(run / SUMMARY_FILE, json.dumps(summary, indent=2))
        if verbose:
            test_part = ", ".join(f"{k} {v:.4f}" for k, v in summary["test"].items()) or "no test split"
            print(f"\nbest epoch {summary['best_epoch']} of {summary['epochs_run']} ({summary['status']}); "
                  f"val {summary['monitor']} {summary['best_val']:.4f}; test: {test_part}", flush=True)
            print(f"cached across epochs: {', '.join(f'{s} ({how})' for s, how in cached.items()) or 'nothing'}")
            print(f"total {seconds:.0f} s; run directory {run}")
            print(f"  reproduce: mmcore train {run / 'config.yaml'}")
            print(f"  predict:   mmcore.Predictor.load({str(run)!r}).predict(table)")
        return Predictor.load(run, manager=manager)


def _absent(row: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    """Whether a prepared row lacks the slot ``spec`` (every one of its cells empty)."""
    columns = [spec["column"]] if "column" in spec else [*spec.get("numeric", []), *spec.get("categorical", [])]
    return all(row.get(c) is None for c in columns)


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


def measure_step_times(config: Mapping[str, Any], train_rows: Sequence[Mapping[str, Any]],
                       val_rows: Sequence[Mapping[str, Any]], *, manager, batches: int = PROBE_BATCHES) -> StepTimes:
    """Time real training steps of ``config`` on a few batches of its own rows (a throw-away run).

    The probe trains ``batches`` batches twice over the same rows: the first pass reads and
    processes every input (``cold_step``), the second finds what ``cache_inputs`` remembered
    (``warm_step``); the first step of each pass (allocation warm-up) is not counted. Validation
    is timed on up to 64 val rows (second pass). Setup (data set, processor fitting, frozen
    features for the probe rows) gives ``setup_per_row`` when an encoder is frozen.
    """
    from mmcore.engine.trainer import Trainer

    batch = int(config["trainer"]["batch_size"])
    probe_train = list(train_rows[: batch * batches])
    probe_val = list(val_rows[:64]) or probe_train[:batch]
    with tempfile.TemporaryDirectory(prefix="mmcore-fit-probe-") as tmp:
        probe = Path(tmp) / "probe.jsonl"
        split = config["data"]["split_column"]
        _write_jsonl(probe, [*({**r, split: "train"} for r in probe_train), *({**r, split: "val"} for r in probe_val)])
        cfg = copy.deepcopy(dict(config))
        cfg["data"] = {**cfg["data"], "path": str(probe), "test_fraction": 0.0}
        frozen = bool(cfg["trainer"].get("cache_features"))
        cfg["trainer"] = {**cfg["trainer"], "epochs": 1, "run_dir": str(Path(tmp) / "run"), "progress": False,
                          "plots": False, "tensorboard": False, "cache_features": frozen}
        trainer = Trainer(cfg, manager=manager)
        start = time.perf_counter()
        trainer.setup()
        setup = time.perf_counter() - start
        try:
            per_row = 0.0
            cache = trainer.feature_cache
            slots = list(trainer.model.feature_caches)
            if frozen and cache is not None and slots:
                # The frozen encoders' first pass, per row, measured alone (the setup also loaded
                # the pretrained weights: a fixed cost the real run pays once too).
                from mmcore.data import precompute_features

                cache.clear()
                start = time.perf_counter()
                for slot in slots:
                    precompute_features(trainer.model, slot, trainer.datasets["train"], batch_size=64)
                per_row = (time.perf_counter() - start) / max(1, len(trainer.datasets["train"]))
            passes = [_timed_pass(trainer) for _ in range(2)]
            trainer.evaluate(trainer.datasets["val"])  # reads and remembers the val inputs
            start = time.perf_counter()
            trainer.evaluate(trainer.datasets["val"])
            eval_sample = (time.perf_counter() - start) / max(1, len(trainer.datasets["val"]))
        finally:
            trainer.close()  # the probe's (temporary) run directory lock
    cold, warm = passes
    rows = len(probe_train) + len(probe_val)
    if frozen and not per_row:  # no separate measurement: the whole setup, per row (an upper bound)
        per_row = setup / max(1, rows)
    return StepTimes(cold_step=max(cold, warm), warm_step=warm, eval_sample=eval_sample, setup_per_row=per_row,
                     setup_fixed=max(0.0, setup - per_row * rows))


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
