"""``mmcore explain RUN [--data F | inputs...] [--json] [--split NAME] [--limit N]``: per-modality Shapley
values of a run's predictions (:mod:`.attribution`), a waterfall PNG per record and a summary.

Records come from command-line inputs (one record: ``slot=value`` or bare file paths, as for
``mmcore predict``), a table (``--data FILE``: CSV / JSONL / Parquet, read as ``mmcore predict
--data`` reads it) or the run's own data (``--split NAME``: train, val or test); ``--limit N`` keeps
the first ``N`` (rows past it are never read). Printed: one block per record, named by its id values
where a fit run's table has id columns (``sku=A-113: prediction ...``, as ``mmcore predict`` carries
them), else ``record N`` (or with ``--json`` one JSON object per line:
``record``, ``prediction``, ``value``, ``full``, ``empty``, ``shapley`` ``{slot: value}``,
``exact``, ``present``, ``stderr`` when sampled, and ``missing`` naming the files read as a missing
modality: a missing or unreadable file is one, as ``mmcore predict`` reads it; ``--strict``: an error), then the summary over the records (mean
|value| per modality; on stderr with ``--json``). PNGs go to ``--out DIR`` (default: the run's
``explain/`` folder): ``record_<n>.png`` per record (at most ``--plots`` of them, default 20) and
``summary.png``, with ``summary.json``. Added to the command line through ``mmcore_add_commands``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import mmcore

#: Waterfall PNGs drawn by default (one per record, the first ones).
DEFAULT_PLOTS = 20


#: The keys of an explained record (``--json``): a row's identifier column of the same name gets ``" (id)"``.
RECORD_KEYS = ("record", "prediction", "value", "full", "empty", "shapley", "exact", "present", "missing")


def _records_from_table(args: argparse.Namespace, model, config: dict, manager
                        ) -> tuple[list[dict], list[str | None], list[dict[str, Any]], list[str | None]]:
    """The records of a --data table (at most ``--limit``: rows past it are never read) and, per record,
    the note of its cells read as missing (or None), its identifiers for its JSON line (a fit run's id
    columns, keyed as ``mmcore predict`` keys them) and its name in the printed report (:func:`record_name`:
    ``sku=A-113``, or None where the row has no id), the columns mapped to slots as ``mmcore predict
    --data`` maps them (the ``mmcore_table_inputs`` hook; the built-in one is the manifest plugin's). A
    missing or unreadable file is a missing modality of its row, as predict and fit count it (``--strict``:
    the row's error); a row that cannot be read at all (a bad number cell) is an error naming it: an
    explanation of another input than the one predict would read is no explanation."""
    from itertools import islice

    from mmcore.cli_predict import declared_missing, row_ids, table_inputs
    from mmcore.errors import UserInputError

    built = table_inputs(manager, path=Path(args.data), encoding=args.encoding, model=model, data=config.get("data"),
                         run_dir=Path(args.run_dir), missing=declared_missing(args.missing), strict=args.strict,
                         sep=args.sep, decimal=args.decimal)
    try:  # a plugin may stream the rows; every record is explained and kept
        built = list(built if args.limit is None else islice(built, args.limit))
    except (OSError, ValueError) as exc:
        raise UserInputError(f"--data: {exc}") from exc
    problems = [f"row {i}: {why}" if not str(why).startswith("row") else str(why)
                for i, item in enumerate(built, start=1) if item[1] is not None or item[0] is None  # no input: none to explain
                for why in [item[1] if item[1] is not None else (item[2] if len(item) > 2 and item[2] else "no input")]]
    if problems:
        more = f" (and {len(problems) - 1} more row(s))" if len(problems) > 1 else ""
        raise UserInputError(f"--data {args.data}: {problems[0]}{more}")
    return ([item[0] for item in built], [item[2] if len(item) > 2 and item[2] else None for item in built],
            [row_ids(item, RECORD_KEYS) for item in built],  # a fit run's id columns, as predict carries them
            [record_name(item[3] if len(item) > 3 and isinstance(item[3], dict) else {}) for item in built])


def record_name(ids: dict[str, Any]) -> str | None:
    """A record's name in the printed report and its waterfall's title: its identifiers as the table wrote
    them (``{"sku": "A-113"}`` -> ``"sku=A-113"``; several joined by ``", "``; an empty cell left out), so
    that a user finds the row an explanation is of; None where the row has no id value (the report then
    says ``record N``)."""
    parts = [f"{column}={value}" for column, value in ids.items() if value is not None and str(value).strip()]
    return ", ".join(parts) or None


def _records_from_split(args: argparse.Namespace, config: dict, manager) -> list[dict]:
    from mmcore.engine.datasets import load_datasets
    from mmcore.errors import ConfigError, ConfigIssue

    if args.split not in ("train", "val", "test"):
        raise ConfigError([ConfigIssue("--split", f"expected train, val or test, got {args.split!r}")])
    dataset = load_datasets(config, manager, splits=(args.split,))[args.split]
    n = len(dataset) if args.limit is None else min(len(dataset), args.limit)
    return [dict(dataset[i]["inputs"]) for i in range(n)]


def run_explain(args: argparse.Namespace, manager) -> int:
    from mmcore.cli import check_split, load_run
    from mmcore.cli_predict import note_unseen, record_inputs
    from mmcore.engine.atomic import write_file
    from mmcore.engine.checkpoint import dumps_json
    from mmcore.engine.plots import plot_attribution_summary, plot_waterfall
    from mmcore.engine.rundir import RunDir
    from mmcore.errors import ConfigError, ConfigIssue
    from mmcore_plugins.explain.attribution import explain_samples, summarise

    sources = [name for name, given in (("--data", args.data), ("--split", args.split), ("inputs", args.inputs)) if given]
    if len(sources) != 1:
        raise ConfigError([ConfigIssue("", "give exactly one of slot=value inputs, --data FILE or --split NAME"
                                           + (f" (got {', '.join(sources)})" if sources else ""))])
    for option, value, low in (("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1), ("--pairs", args.pairs, 2),
                               ("--plots", args.plots, 0)):
        if value is not None and value < low:
            raise ConfigError([ConfigIssue(option, f"must be an int >= {low}, got {value}")])
    if args.split:  # a split that is no split, or has no rows, is said before the model is built
        check_split(args.run_dir, args.split, alternative="--data FILE")
    model, config = load_run(args.run_dir, manager, args.checkpoint)
    notes: list[str | None] = []
    ids: list[dict[str, Any]] = []
    named: list[str | None] = []  # a fit run's rows by their id values ("sku=A-113"); else "record N"
    if args.data:
        samples, notes, ids, named = _records_from_table(args, model, config, manager)
    elif args.split:
        samples = _records_from_split(args, config, manager)
    else:
        samples = [record_inputs(args.inputs, model, manager, args.run_dir)]
    if args.limit is not None:
        samples = samples[:args.limit]
    if not samples:
        raise ConfigError([ConfigIssue("", "no records to explain")])
    note_unseen(model, samples, "explain")  # categories not seen in training: explained all the same, and said
    # The run's explain/ folder is mmcore's; a folder the user names may hold the user's files, which
    # are never replaced: refused before any work, as embed --out is.
    out = Path(args.out) if args.out else RunDir(args.run_dir).explain
    root = None if args.out else Path(args.run_dir)
    names = [f"record_{i}.png" for i in range(1, min(len(samples), args.plots or 0) + 1)]
    if len(samples) > 1 or args.plots:
        names += ["summary.png", "summary.json"]
    taken = [n for n in names if args.out and os.path.lexists(out / n)]
    if taken:
        raise ConfigError([ConfigIssue("--out", f"{str(out)!r} already holds {taken[0]}"
                                                + (f" and {len(taken) - 1} more of the files explain writes" if len(taken) > 1 else "")
                                                + "; name an empty or new folder (explain never replaces a file)")])
    # A file that cannot be read follows the run's rule, as in predict (trainer.unreadable_inputs, "missing"
    # by default: a missing modality of its record, noted in it); --strict: the row's error.
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    model.unreadable_inputs = "error" if args.strict else trainer.get("unreadable_inputs", "missing")
    plan = manager.hook.mmcore_export_columns(run_dir=Path(args.run_dir))  # a fit run: its slots' user columns
    names = {slot: spec["column"] for slot, spec in (plan or {}).get("slots", {}).items() if "column" in spec}
    origins = ([{"file": str(args.data), "row": i, "columns": names} for i in range(1, len(samples) + 1)]
               if args.data else None)
    try:
        records = explain_samples(model, samples, batch_size=args.batch_size, pairs=args.pairs, names=names,
                                  origins=origins)
    except ValueError as exc:
        from mmcore.errors import UserInputError

        raise UserInputError(str(exc)) from exc
    for record, note in zip(records, notes, strict=False):
        if note:
            record["missing"] = "; ".join(filter(None, (note, record.get("missing"))))
    summary = summarise(records)
    labels = [(named[i - 1] if i <= len(named) else None) or f"record {i}" for i in range(1, len(records) + 1)]
    drawn = []
    if args.plots:
        for i, record in enumerate(records[:args.plots], start=1):
            plot = plot_waterfall(record, out / f"record_{i}.png", title=f"{labels[i - 1]}: prediction {record['prediction']}",
                                  root=root)
            if plot is not None:
                drawn.append(plot)
    if len(records) > 1 or args.plots:
        summary_plot = plot_attribution_summary(summary, out / "summary.png", root=root)
        if summary_plot is not None:
            drawn.append(summary_plot)
        write_file(out / "summary.json", dumps_json(summary, indent=2), root=root)
    if args.json:
        for i, record in enumerate(records, start=1):
            keys = ids[i - 1] if i <= len(ids) else {}
            sys.stdout.write(json.dumps({"record": i, **keys, **record}, ensure_ascii=False) + "\n")
        print(json.dumps({"summary": summary}), file=sys.stderr)
    else:
        print(format_records(records, summary, labels))
        if drawn:
            print(f"\nplots: {out}/ ({len(drawn)} PNG files)")
    return 0


def format_records(records: list[dict], summary: dict, labels: list[str] | None = None) -> str:
    """The printed report: one block per record, then the mean |value| per modality. ``labels``: each
    record's name (its id values, ``sku=A-113``); by default ``record N``."""
    lines = []
    what = "log p(predicted class)" if summary["value"] == "log_probability" else "predicted value"
    for i, record in enumerate(records, start=1):
        name = labels[i - 1] if labels and i <= len(labels) else f"record {i}"
        lines.append(f"{name}: prediction {record['prediction']}  ({what}: {record['full']:.4f} with "
                     f"{', '.join(record['present']) or 'nothing'}; {record['empty']:.4f} with no modality)")
        if record.get("missing"):
            lines.append(f"    read as missing: {record['missing']}")
        for slot, value in sorted(record["shapley"].items(), key=lambda kv: -abs(kv[1])):
            err = record.get("stderr", {}).get(slot)
            lines.append(f"    {slot:<16} {value:+.4f}" + (f" ± {1.96 * err:.4f}" if err is not None else "")
                         + ("" if slot in record["present"] else "  (absent)"))
    lines.append(f"\nmean |Shapley value| over {summary['records']} record(s):")
    for slot, value in sorted(summary["mean_abs"].items(), key=lambda kv: -kv[1]):
        lines.append(f"    {slot:<16} {value:.4f}  (present in {summary['present'][slot]})")
    return "\n".join(lines)


@mmcore.hookimpl
def mmcore_add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain", help="exact per-modality Shapley values of a run's predictions (waterfall PNGs, a summary)",
        description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", metavar="RUN", help="a run directory (mmcore train / fit)")
    parser.add_argument("inputs", nargs="*", metavar="slot=value", help="one record's inputs (as mmcore predict)")
    parser.add_argument("--data", metavar="FILE", help="explain every row of a CSV / JSONL / Parquet table")
    parser.add_argument("--split", metavar="NAME", help="explain records of the run's own data: train, val or test")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N records")
    parser.add_argument("--json", action="store_true", help="one JSON object per record on stdout")
    parser.add_argument("--out", metavar="DIR", help="folder for the PNGs and summary.json (default RUN/explain)")
    parser.add_argument("--plots", type=int, default=DEFAULT_PLOTS, metavar="N",
                        help=f"waterfall PNGs for the first N records (default {DEFAULT_PLOTS}; 0: none)")
    parser.add_argument("--batch-size", type=int, default=64, help="records per batched pass (default 64)")
    parser.add_argument("--pairs", type=int, default=64,
                        help="antithetic permutation pairs when sampling (models with more than 6 slots; default 64)")
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint (default best)")
    from mmcore.cli_predict import add_table_options

    add_table_options(parser)
    parser.add_argument("--missing", action="append", default=[], metavar="COLUMN",
                        help="a column the model reads that the --data table lacks on purpose: every cell of it is "
                             "empty (repeatable, or comma-separated); any other absent column is an error")
    parser.add_argument("--strict", action="store_true",
                        help="a missing or unreadable file a --data row names is that row's error (default: a missing "
                             "modality of the row, noted in its record, as mmcore predict reads it)")
    parser.set_defaults(handler=run_explain)
