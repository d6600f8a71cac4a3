"""A run trained with ``mmcore train`` from a ``fit`` run's ``config.yaml`` -- as fit wrote it, or edited
(another fusion, another encoder's options, more epochs, a third-party component) -- keeps fit's contract:
``Predictor``, ``mmcore predict`` / ``eval`` / ``embed`` / ``explain`` / ``export`` / ``serve`` take the user's
own columns exactly as for the fit run, never the columns fit derived (``"<column> missing"``, a date's parts).

The contract travels with fit's prepared table. A config whose ``data.path`` is a fit run's ``data.jsonl``
(as fit's ``config.yaml`` names it) trains on the columns fit derived, which only fit's column plan
(``autofit.json`` beside it) derives from a user's table; so when such a run is set up (hook
``mmcore_train_setup``), the plan is checked against the run's config and model -- the same slots, each
of the plan's modality, read from the plan's columns, the same target and classes -- and copied into the
new run (the plan, the column table with each column's kind -- the id columns -- and how fit read the table:
its encoding, delimiter and decimal commas; the run is then a fit-style run, self-contained wherever it is
copied or moved, and its own ``config.yaml``, which still names fit's ``data.jsonl``, reproduces it again).
An edit the plan does not fit is refused before any training with a :class:`~mmcore.errors.ConfigError`
naming the key (the command exits 2 with one line). A config reading any other table is left alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mmcore
from mmcore.errors import ConfigError, ConfigIssue
from mmcore_plugins.autofit.fitting import DATA_FILE, PLAN_FILE


def fit_run_of(data: Any) -> Path | None:
    """The ``fit`` run whose prepared table a config's ``data`` section reads (``data.path`` is
    ``RUN/data.jsonl`` of a marked run holding ``autofit.json``), else None."""
    from mmcore.engine.rundir import RunDir

    if not isinstance(data, Mapping) or data.get("name") != "manifest" or not isinstance(data.get("path"), str):
        return None
    table = Path(data["path"]).expanduser()
    if table.name != DATA_FILE:
        return None
    run = Path(os.path.abspath(table.parent))
    return run if (run / PLAN_FILE).is_file() and RunDir(run).is_marked else None


def plan_issues(plan: Any, config: Mapping[str, Any], model: Any, plan_file: Path) -> list[ConfigIssue]:
    """Every way the run's ``config`` / ``model`` departs from what fit's ``plan`` fills, as config issues
    naming the key (``model.encoders.note``, ``data.columns.tabular``, ``data.target``, ``data.classes``, ``model.head``)."""
    from mmcore.engine.artefacts import CheckpointError
    from mmcore_plugins.autofit.predictor import _check_plan_fits

    where = f"the fit run's column plan ({plan_file})"
    issues: list[ConfigIssue] = []
    slots = list(model.slots)
    reads: dict[str, str] = {}
    for slot, spec in plan.slots.items():
        read = reads[slot] = f"column {spec['column']!r}" if "column" in spec else \
            f"columns {', '.join(repr(c) for c in [*spec['numeric'], *spec['categorical'], *spec.get('dates', [])])}"
        if slot not in slots:
            issues.append(ConfigIssue(f"model.encoders.{slot}", f"is gone, but {where} fills slot {slot!r} ({spec['kind']}, from "
                                      f"{read}): keep the slot, or fit again without it (mmcore fit --column {spec.get('column', 'NAME')}=ignore)"))
            continue
        modality = getattr(model.encoders[slot], "modality", None)
        if modality != spec["kind"]:
            name = ((config.get("model") or {}).get("encoders") or {}).get(slot, {}).get("name")
            issues.append(ConfigIssue(f"model.encoders.{slot}.name", f"encoder {name!r} reads {modality!r}, but {where} fills "
                                      f"slot {slot!r} with {spec['kind']} (from {read}); use a {spec['kind']} encoder"))
    for slot in slots:
        if slot not in plan.slots:
            issues.append(ConfigIssue(f"model.encoders.{slot}", f"is not a slot of {where}, which fills "
                                      f"{', '.join(repr(s) for s in plan.slots)} only: a slot users' own columns cannot fill"))
    data = config.get("data") or {}
    columns = data.get("columns") if isinstance(data.get("columns"), Mapping) else {}
    for slot, mapped in plan.manifest_columns().items():
        if slot not in slots or any(i.path.startswith(f"model.encoders.{slot}") for i in issues):
            continue
        spec, read = plan.slots[slot], reads[slot]
        if columns.get(slot) != mapped:
            issues.append(ConfigIssue(f"data.columns.{slot}", f"reads {columns.get(slot)!r}, but {where} fills slot {slot!r} "
                                      f"from {mapped!r} (derived from {read}): keep fit's mapping"))
            continue
        if spec["kind"] == "tabular":  # the prepared row's columns, which the plan derives (and an export's front end too)
            options = ((config.get("model") or {}).get("encoders") or {}).get(slot, {})
            for key, derived in zip(("columns", "categorical"), plan.tabular_columns(spec), strict=True):
                given = options.get(key)
                if isinstance(given, list) and set(given) != set(derived) or given is None and derived and key == "categorical" \
                        and "columns" in options:
                    issues.append(ConfigIssue(f"model.encoders.{slot}.{key}", f"is {given!r}, but {where} fills slot {slot!r} "
                                              f"with the columns {derived!r} (from {read}): keep them"))
    if data.get("target") != plan.target:
        issues.append(ConfigIssue("data.target", f"is {data.get('target')!r}, but {where} predicts {plan.target!r}"))
    named = plan.classes if plan.task == "classification" else plan.labels if plan.task == "multilabel" else None
    if named is not None and isinstance(data.get("classes"), list) and [str(c) for c in data["classes"]] != list(named):
        issues.append(ConfigIssue("data.classes", f"is {data['classes'][:10]!r}, but {where} encodes the target {plan.target!r} "
                                  f"as {list(named)[:10]!r} (the same names in the same order): keep them"))
    if not issues:
        try:
            _check_plan_fits(plan, model, plan_file)
        except CheckpointError as exc:
            message = str(exc).removeprefix(f"{plan_file}: ").replace("; the run's files come from different fits", "")
            issues.append(ConfigIssue("model.head", f"{message}, as {where} encodes the target {plan.target!r}"))
    return issues


@mmcore.hookimpl
def mmcore_train_setup(trainer: Any, config: Mapping[str, Any]) -> None:
    """A run reading a fit run's prepared table gets that fit's column plan, checked (see the module docstring)."""
    from mmcore.engine.artefacts import CheckpointError

    source = fit_run_of(config.get("data"))
    if source is None:
        return
    here = Path(trainer.run_dir)
    plan_file = source / PLAN_FILE
    if (here / PLAN_FILE).exists() and os.path.samefile(plan_file, here / PLAN_FILE):
        return  # fit's own training (or its --resume): the plan is the run's own
    from mmcore_plugins.autofit.predictor import _read_columns, read_plan, read_table_record

    try:
        plan, columns, table = read_plan(source), _read_columns(source), read_table_record(source)
    except CheckpointError as exc:
        raise ConfigError([ConfigIssue("data.path", f"the fit run's column plan cannot be used: {exc}")]) from exc
    issues = plan_issues(plan, config, trainer.model, plan_file)
    if issues:
        raise ConfigError(issues)
    if trainer.is_main:
        from mmcore.engine.atomic import write_file

        # every column's entry as fit recorded it (its kind and why: the id columns predict and explain carry into
        # each line, a date's format) and how fit read the table (encoding, delimiter, decimal commas), so every
        # surface treats this run as the fit run
        copied = {"target": plan.target, "plan": plan.to_json(), "columns": columns,
                  **({"table": table} if table is not None else {}),
                  "trained_from": {"fit_run": str(source), "how": "mmcore train from the fit run's config: its column "
                                   "plan, checked against this run's model and copied here"}}
        write_file(here / PLAN_FILE, json.dumps(copied, indent=2))
