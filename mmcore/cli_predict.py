"""``mmcore predict``: command-line inputs and whole tables -> the run's predictions, as JSON.

``slot=value`` / bare file paths become one raw sample (:func:`parse_predict_inputs`); ``--data
FILE`` predicts every row of a CSV / JSONL / Parquet table, one JSON line per row, a bad row
reported in its own line. The forward pass is :func:`mmcore.engine.evaluation.predict_output`.

Files are the plugins' to read, never this module's: a file given for one slot goes through the
hook ``mmcore_file_input`` (the built-in ``modalities`` plugin reads a text file's contents), a table
through ``mmcore_table_inputs`` (the built-in ``manifest`` plugin maps its columns to slots and
checks every row); ``MMCORE_DISABLE_PLUGINS`` blocks them like any plugin.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmcore.engine.unseen import UnseenValues
from mmcore.errors import ConfigError, ConfigIssue

#: The exit status of a successful command (mmcore.cli's contract).
EXIT_OK = 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mmcore predict`` to the command line (called by :func:`mmcore.cli.build_parser`)."""
    p = subparsers.add_parser("predict", help="predict from raw inputs or a table of them with a run's best checkpoint (JSON out)")
    p.add_argument("run_dir", help="a run directory written by `mmcore train` or `mmcore fit`")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="one sample: slot=value per modality (a file path, text, [a, list] or {a: mapping} such as "
                        "profile='{age: 41, city: oslo}'); a text slot given an existing file reads its UTF-8 contents; "
                        "a bare file path goes to the slot whose modality matches its extension (.png -> image, "
                        ".wav -> audio, .txt -> text), when exactly one slot has that modality; omitted slots are "
                        "missing modalities. A `mmcore fit` run: column=value with your own columns (the same rule for "
                        "a bare path: the one column of its modality; a .txt goes to a column of text files)")
    p.add_argument("--data", metavar="FILE",
                   help="predict every row of a .csv/.jsonl/.parquet table (columns as in the run's data config, or "
                        "named after the slots); one JSON line per row, a bad row reported in its line")
    p.add_argument("--out", metavar="FILE", help="write the --data predictions here (JSON lines) instead of stdout")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_table_options(p)
    p.add_argument("--batch-size", type=int, default=64, help="rows predicted at once with --data")
    p.add_argument("--missing", action="append", default=[], metavar="COLUMN",
                   help="a column the model reads that the --data table lacks on purpose: every cell of it is empty "
                        "(repeatable, or comma-separated); any other absent column is an error")
    p.add_argument("--strict", action="store_true",
                   help="a missing or unreadable file (or an input that fails when read) is the row's error instead "
                        "of a missing modality noted in its line")
    p.set_defaults(handler=cmd_predict)


def _is_file(value: str) -> bool:
    """Whether ``value`` names an existing file (False for text no file could be named after)."""
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # e.g. a name over the file system's length limit, a NUL byte
        return False


def _structured(value: str, processor: object) -> object:
    """A ``[list]`` or ``{mapping}`` command-line value, every scalar kept as written (``oslo``,
    ``yes``, ``007`` stay strings) and then read as a number where the processor expects one (not
    in its ``categorical`` columns). None when ``value`` is neither. Parsed by the project's one
    safe YAML loader (:func:`mmcore.yamlio.load_yaml`): tags refused, aliases bounded."""
    from mmcore.yamlio import YamlError, load_yaml

    text = value.strip()
    if not text.startswith(("[", "{")):
        return None
    try:
        parsed = load_yaml(text, source=f"input {value!r}", strings=True)
    except YamlError as exc:
        raise ValueError(f"{value!r} is not a valid [list] or {{mapping}}: {exc.problem}"
                         + (f" (line {exc.line}, column {exc.column})" if exc.line else "")) from exc
    categorical = set(processor.categorical or []) if processor is not None else set()

    def number(item: object) -> object:
        if isinstance(item, str):
            try:
                return int(item)
            except ValueError:
                try:
                    return float(item)
                except ValueError:
                    return item
        if isinstance(item, list):
            return [number(v) for v in item]
        return item

    if isinstance(parsed, dict):
        return {str(k): (v if str(k) in categorical else number(v)) for k, v in parsed.items()}
    return number(parsed)


def _slot_modality(model, slot: str) -> str | None:
    return model.encoders[slot].modality


def _file_input(manager, path: str, modality: str | None) -> object:
    """The raw input of a file given on the command line: what a plugin makes of it (hook
    ``mmcore_file_input``, e.g. a text file's contents), else the path (the processor opens it)."""
    if manager is None or modality is None:
        return path
    value = manager.hook.mmcore_file_input(path=Path(path), modality=modality)
    return path if value is None else value


def parse_predict_inputs(items: Sequence[str], model, extensions: Mapping[str, str] | None = None, *,
                         manager=None) -> dict:
    """``slot=value`` / bare file paths -> one raw sample ``{slot: raw}`` (see ``mmcore predict --help``).

    A slot given an existing file gets what a plugin reads from it (hook ``mmcore_file_input``: a
    text slot, the file's UTF-8 contents), else the path; ``[...]``/``{...}`` values become lists/mappings for any non-text slot (numbers where the
    processor expects them). ``extensions``: file extension -> modality (default: the default
    registry's, :meth:`~mmcore.registry.Registry.extension_modalities`). Every problem is collected
    into one ConfigError. ``manager``: the plugin manager (default: the process's).
    """
    if manager is None or extensions is None:
        from mmcore.plugin_manager import get_plugin_manager

        manager = manager or get_plugin_manager()
        extensions = manager.registry.extension_modalities() if extensions is None else extensions
    sample, issues = {}, []
    slots = model.slots
    for item in items:
        slot, sep, value = item.partition("=")
        try:
            if sep and slot in slots:
                modality = _slot_modality(model, slot)
                if _is_file(value):
                    sample[slot] = _file_input(manager, value, modality)
                    continue
                parsed = None if modality == "text" else _structured(value, model.processors.get(slot))
                sample[slot] = value if parsed is None else parsed
            elif _is_file(item):
                modality = extensions.get(Path(item).suffix.lower())
                matches = [s for s in slots if _slot_modality(model, s) == modality]
                if modality is None or len(matches) != 1:
                    issues.append(ConfigIssue("", f"cannot tell which slot {item!r} is for (slots: {slots}); write slot={item}"))
                else:
                    sample[matches[0]] = _file_input(manager, item, modality)
            elif sep:
                issues.append(ConfigIssue("", f"unknown modality slot(s) [{slot!r}] in {item!r}; the model has {slots}"))
            else:
                issues.append(ConfigIssue("", f"input {item!r} is neither slot=value nor an existing file"))
        except ValueError as exc:  # an unreadable text file, a malformed [list]/{mapping}
            issues.append(ConfigIssue(slot if sep else "", str(exc)))
    if issues:
        raise ConfigError(issues)
    return sample


def record_inputs(items: Sequence[str], model, manager, run_dir: str | Path) -> dict:
    """One record on the command line -> ``{slot: raw}``, as every command reads it (``predict``,
    ``explain``, ``search``): a run whose plugin maps the user's own columns (``mmcore fit``'s, hook
    ``mmcore_record_inputs``: derived columns derived again, a text file's contents read) reads
    ``column=value`` itself; any other run, :func:`parse_predict_inputs`. ConfigError for a bad item."""
    try:
        sample = manager.hook.mmcore_record_inputs(items=list(items), run_dir=Path(run_dir), model=model)
    except ValueError as exc:
        raise ConfigError([ConfigIssue("", str(exc))]) from exc
    if sample is None:
        sample = parse_predict_inputs(items, model, manager.registry.extension_modalities(), manager=manager)
    return sample


def _prediction_record(model, output, row: int) -> dict:
    """The JSON of sample ``row`` of a head output: prediction, and probabilities by class name when known."""
    import torch

    record = {"prediction": model.head.format_predictions(output)[row]}
    probabilities = output.extras.get("probabilities") if isinstance(output.extras, dict) else None
    if isinstance(probabilities, torch.Tensor) and probabilities.dim() == 2:
        values = [round(float(p), 4) for p in probabilities[row]]
        classes = model.head.classes
        record["probabilities"] = dict(zip(classes, values, strict=True)) if classes and len(classes) == len(values) else values
    return record


def declared_missing(values: list[str]) -> list[str]:
    """``--missing`` values (repeatable, each comma-separated) -> the column names, blanks dropped."""
    return [c.strip() for item in values for c in item.split(",") if c.strip()]


#: The text encoding of a table when neither the user nor the run says otherwise (a UTF-8 BOM is skipped).
DEFAULT_ENCODING = "utf-8-sig"


def add_table_options(parser: argparse.ArgumentParser, what: str = "a --data CSV/JSONL file") -> None:
    """``--encoding``, ``--sep`` and ``--decimal``: how a ``--data`` table is read (what ``mmcore fit`` takes
    too). Each defaults to None, "not given", so that the run's recorded reading applies
    (:func:`table_reading`) and an option the user gives -- even one equal to the default -- wins."""
    parser.add_argument("--encoding", default=None,
                        help=f"text encoding of {what} (default: as the fit run read its table, else {DEFAULT_ENCODING}; "
                             "cp1252 for a CSV Excel saved on Windows)")
    parser.add_argument("--sep", default=None, type=lambda v: "\t" if v in ("\\t", "tab", "TAB") else v,
                        help="a --data CSV's delimiter, e.g. ';' or '\\t' (default: found from its first lines, or as "
                             "the fit run read its table)")
    parser.add_argument("--decimal", default=None, choices=[",", "."], metavar=",|.",
                        help="a --data CSV's decimal mark: ',' reads decimal-comma numbers (0,314) as numbers (default: "
                             "found per column, or as the fit run read its table)")


def table_reading(manager, run_dir: Path | None, path: Path, *, encoding: str | None = None, sep: str | None = None,
                  decimal: str | None = None) -> dict[str, Any]:
    """``{encoding, sep, decimal}`` to read a table given to the run in ``run_dir``: each option the user
    gave (not None) as given, else as the run read its training table (hook ``mmcore_table_options``:
    ``mmcore fit`` records its ``--encoding``, ``--sep`` and ``--decimal``; ``path``, the table, may be
    looked at: a UTF-8 file is read as UTF-8 whatever legacy encoding was recorded), else the default
    (:data:`DEFAULT_ENCODING`; None: the delimiter and decimal mark found from the file)."""
    recorded = manager.hook.mmcore_table_options(run_dir=Path(run_dir), path=Path(path)) if run_dir is not None else None
    recorded = recorded if isinstance(recorded, Mapping) else {}
    given = {"encoding": encoding, "sep": sep, "decimal": decimal}
    reading = {key: value if value is not None else recorded.get(key) for key, value in given.items()}
    reading["encoding"] = reading["encoding"] or DEFAULT_ENCODING
    return reading


def table_inputs(manager, *, path: Path, encoding: str | None, model, data: Any, run_dir: Path | None, missing: list[str],
                 strict: bool, sep: str | None = None, decimal: str | None = None) -> Any:
    """A table's rows as model inputs, through the ``mmcore_table_inputs`` hook (reading the table and
    mapping its columns to slots is a plugin's job: the built-in manifest's, ``mmcore fit``'s for its
    runs): what the hook returns (records, possibly streamed). Shared by predict, explain and embed.
    ``encoding``, ``sep``, ``decimal``: the user's options, None where not given (:func:`table_reading`).

    Raises:
        ConfigError: on ``--missing`` (a declared column the model does not read) or ``--data`` (the
            table cannot be read, lacks a column, or no installed plugin reads tables).
    """
    reading = table_reading(manager, run_dir, path, encoding=encoding, sep=sep, decimal=decimal)  # the user's, else the run's
    try:
        built = manager.hook.mmcore_table_inputs(path=path, model=model, data=dict(data or {}), run_dir=run_dir,
                                                 missing=missing, strict=strict, **reading)
    except (OSError, ValueError) as exc:
        message = str(exc)
        declared = message.startswith("--missing: ") or "declared missing" in message  # a --missing name the model lacks
        raise ConfigError([ConfigIssue("--missing" if declared else "--data", message.removeprefix("--missing: "))]) from exc
    if built is None:
        raise ConfigError([ConfigIssue("--data", "no installed plugin reads tables into model inputs (hook "
                                                 "mmcore_table_inputs; the built-in one is the manifest plugin's: is it "
                                                 "blocked by MMCORE_DISABLE_PLUGINS?)")])
    return built


def _predict_table(args: argparse.Namespace, model, config: dict, manager) -> int:
    if args.inputs:
        raise ConfigError([ConfigIssue("--data", "give either --data FILE or slot=value inputs, not both")])
    if args.batch_size < 1:
        raise ConfigError([ConfigIssue("--batch-size", f"must be a positive int, got {args.batch_size}")])
    out_path = Path(args.out) if args.out else None
    if out_path is not None and out_path.exists() and not args.overwrite:
        raise ConfigError([ConfigIssue("--out", f"{str(out_path)!r} exists; choose another file or pass --overwrite")])
    if out_path is not None and out_path.is_dir():
        raise ConfigError([ConfigIssue("--out", f"{str(out_path)!r} is a folder, expected a file")])
    source = Path(args.data)
    missing = declared_missing(args.missing)
    built = table_inputs(manager, path=source, encoding=args.encoding, model=model, data=config.get("data"),
                         run_dir=Path(args.run_dir), missing=missing, strict=args.strict, sep=args.sep, decimal=args.decimal)
    # The run's rule for an input that fails when read (trainer.unreadable_inputs, "missing" by default): a
    # missing modality noted in the row's line; --strict: the row's error.
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    model.unreadable_inputs = "error" if args.strict else trainer.get("unreadable_inputs", "missing")
    counts = {"rows": 0, "bad": 0, "partial": 0, "empty": 0}
    unseen = UnseenValues(model)

    def write_lines(out) -> None:
        # Streamed: rows are read, predicted and written batch by batch (the hook may return an
        # iterator), so memory follows one batch whatever the table's length.
        for records in _predicted_batches(built, model, source, args.batch_size, unseen):
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            out(text)
            counts["rows"] += len(records)
            counts["bad"] += sum("error" in r for r in records)
            counts["partial"] += sum("missing" in r and r.get("prediction") is not None for r in records)
            counts["empty"] += sum("error" not in r and r.get("prediction", 0) is None for r in records)

    try:
        if out_path is None:
            write_lines(sys.stdout.write)
        else:
            from mmcore.engine.atomic import write_file

            # Whole or not at all, under an unpredictable name created exclusively in the same folder
            # (a planted link at a fixed '.out.tmp' name would have been followed); a link at --out
            # itself is replaced, never written through.
            write_file(out_path, lambda fh: write_lines(lambda text: fh.write(text.encode("utf-8"))))
    except ValueError as exc:  # the table turned out unreadable part-way (a bad line deep in the file)
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError([ConfigIssue("--data", str(exc))]) from exc
    warn_unseen(unseen)
    if out_path is not None:
        rows, bad, partial, empty = counts["rows"], counts["bad"], counts["partial"], counts["empty"]
        print(f"{rows} rows -> {out_path} ({rows - bad - empty} predicted, {bad} with an error"
              + (f", {empty} with no input (no prediction)" if empty else "")
              + (f", {partial} with a missing modality noted" if partial else "") + ")", file=sys.stderr)
    return EXIT_OK


#: The keys ``mmcore predict --data`` writes in a row's line itself (an identifier column of the same name
#: is written as ``"<name> (id)"``).
RECORD_KEYS = ("row", "prediction", "probabilities", "error", "missing")


def note_unseen(model, records, command: str) -> None:
    """:func:`warn_unseen` for ``records`` (each a mapping of the model's inputs by slot), read all at once:
    eval, explain and embed tell of categories not seen in training in the same words as predict."""
    unseen = UnseenValues(model)
    for inputs in records:
        unseen.add(inputs)
    warn_unseen(unseen, command)


def warn_unseen(unseen: UnseenValues, command: str = "predict") -> None:
    """One warning line on stderr per column whose values the model read as unknown (categories not seen in
    training): the records were predicted, and the user is told."""
    for line in unseen.lines():
        print(f"mmcore {command}: warning: {line}", file=sys.stderr)


def row_ids(item: tuple, taken: Sequence[str]) -> dict[str, Any]:
    """The identifiers of a row of the ``mmcore_table_inputs`` hook (its optional 4th element, ``{column:
    value}``: a fit run's id columns) to write into that row's output record under the columns' own names, so
    that outputs join back to the user's rows; a name the record uses itself (``taken``) gets ``" (id)"``."""
    keys = item[3] if len(item) > 3 and isinstance(item[3], Mapping) else {}
    return {(f"{k} (id)" if k in taken else k): v for k, v in keys.items()}


def _predicted_batches(built, model, source: Path, batch_size: int, unseen: UnseenValues | None = None):
    """The JSON records of the rows of ``built`` (``(inputs, problem[, note[, ids]])`` per row, a list or an
    iterator), ``batch_size`` rows at a time, in row order: the row number and its identifiers (``ids``,
    ``{column: value}``), a prediction or the row's error, and a ``missing`` note for cells read as missing."""
    from mmcore.engine.evaluation import predict_output

    origin = {"file": str(source), "columns": {}}
    seen = len(model.unreadable.entries)
    chunk: list[tuple[int, tuple]] = []

    def head(i: int, item: tuple) -> dict:
        """A line's first keys: the row number, then the row's identifiers (:func:`row_ids`)."""
        return {"row": i + 1, **row_ids(item, RECORD_KEYS)}

    def flush() -> list[dict]:
        nonlocal seen
        records: dict[int, dict] = {}
        notes: dict[int, list[str]] = {}
        good = []
        items = dict(chunk)
        for i, item in chunk:
            if item[1] is not None:
                records[i] = {**head(i, item), "error": item[1]}
                continue
            if item[0] is None:  # a row with no input at all: no prediction, and the note says why
                records[i] = {**head(i, item), "prediction": None, "missing": (item[2] if len(item) > 2 else "") or "no input in this row"}
                continue
            if len(item) > 2 and item[2]:
                notes.setdefault(i, []).append(item[2])
            good.append((i, item[0]))
            if unseen is not None:
                unseen.add(item[0])
        if good:
            try:
                output = predict_output(model, [x for _, x in good], origins=[{**origin, "row": i + 1} for i, _ in good])
                for j, (i, _) in enumerate(good):
                    records[i] = {**head(i, items[i]), **_prediction_record(model, output, j)}
            except (ValueError, TypeError, OSError):  # one bad row spoils its batch: find it, row by row
                for i, inputs in good:
                    try:
                        output = predict_output(model, [inputs], origins=[{**origin, "row": i + 1}])
                        records[i] = {**head(i, items[i]), **_prediction_record(model, output, 0)}
                    except (ValueError, TypeError, OSError) as exc:
                        records[i] = {**head(i, items[i]), "error": str(exc)}
        entries = list(model.unreadable.entries.values())
        for entry in entries[seen:]:
            if isinstance(entry.get("row"), int):
                notes.setdefault(entry["row"] - 1, []).append(f"slot {entry['column']!r}: {entry['error']} (a missing modality)")
        seen = len(entries)
        for i, note in notes.items():
            if i in records and "error" not in records[i]:
                records[i]["missing"] = "; ".join(note)
        chunk.clear()
        return [records[i] for i in sorted(records)]

    for i, item in enumerate(built):
        chunk.append((i, item))
        if len(chunk) >= batch_size:
            yield flush()
    if chunk:
        yield flush()


def _shown_record(sample: Mapping[str, Any], model, manager, run_dir: str | Path,
                  typed: Mapping[str, str] | None = None) -> tuple[dict, list, dict]:
    """What ``mmcore predict`` prints of the record it read: ``{slot: raw}``, the slots left out and ``{}``; for
    a run whose plugin names its slots from the user's own columns (hook ``mmcore_export_columns``, ``mmcore
    fit``'s), ``{column: raw}`` of the cells the user gave (``typed``: column -> text as typed), the columns
    left out, and ``{column: value}`` the model read in place of a number left out (the training median) --
    never a slot name or a column the plugin derived."""
    from mmcore.labels import is_missing

    cut = lambda raw: raw if not isinstance(raw, str) or len(raw) <= 200 else raw[:200] + "..."  # noqa: E731
    plan = manager.hook.mmcore_export_columns(run_dir=Path(run_dir))
    slots = plan.get("slots") if isinstance(plan, Mapping) else None
    if not isinstance(slots, Mapping) or set(slots) != set(model.slots):
        return {slot: cut(raw) for slot, raw in sample.items()}, [s for s in model.slots if s not in sample], {}
    fill = plan.get("fill") if isinstance(plan.get("fill"), Mapping) else {}
    shown: dict[str, Any] = {}
    missing: list[str] = []
    filled: dict[str, Any] = {}
    for slot, spec in slots.items():
        columns = [spec["column"]] if "column" in spec else [*spec.get("numeric", []), *spec.get("categorical", []),
                                                               *spec.get("dates", [])]
        raw = sample.get(slot)
        if raw is None:
            missing += columns
        elif "column" in spec:
            shown[spec["column"]] = cut(raw)
        else:  # the user's cells as the model reads them; a cell left out is missing, a number filled is said
            for c in columns:
                if typed is not None and (c not in typed or is_missing(typed[c])):
                    missing.append(c)
                    if c in fill and isinstance(raw, Mapping) and c in raw:
                        filled[c] = raw[c]
                elif isinstance(raw, Mapping) and c in raw:
                    shown[c] = raw.get(c)
    return shown, missing, filled


def cmd_predict(args: argparse.Namespace, manager) -> int:
    from mmcore.engine.checkpoint import load_run
    from mmcore.engine.evaluation import predict_output

    model, config = load_run(args.run_dir, manager.registry)
    if args.data is not None:
        return _predict_table(args, model, config, manager)
    if args.out is not None:
        raise ConfigError([ConfigIssue("--out", "--out goes with --data FILE (a single sample prints its JSON)")])
    if not args.inputs:
        raise ConfigError([ConfigIssue("", f"give slot=value inputs (the model's slots: {model.slots}) or --data FILE")])
    sample = record_inputs(args.inputs, model, manager, args.run_dir)
    try:
        if not sample:
            raise ValueError(f"give at least one of the model's modality slots {model.slots}")
        output = predict_output(model, [sample])
    except (ValueError, TypeError) as exc:
        raise ConfigError([ConfigIssue("", str(exc))]) from exc
    unseen = UnseenValues(model)
    unseen.add(sample)
    warn_unseen(unseen)
    typed = dict(item.split("=", 1) for item in args.inputs if "=" in item)
    shown, missing, filled = _shown_record(sample, model, manager, args.run_dir, typed)
    result = {"inputs": shown, "missing": missing, **({"filled": filled} if filled else {}),
              **_prediction_record(model, output, 0)}
    print(json.dumps(result, ensure_ascii=False))
    return EXIT_OK
