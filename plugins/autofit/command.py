"""``mmcore fit DATA --target COL``: the command line of :func:`~mmcore_plugins.autofit.fitting.fit`,
added through the ``mmcore_add_commands`` hook like any plugin's command."""

from __future__ import annotations

import argparse
import sys

import mmcore
from mmcore_plugins.autofit.infer import ColumnError


def parse_column_overrides(items: list[str]) -> dict[str, str]:
    """``["NAME=KIND", ...]`` -> ``{NAME: KIND}``; ColumnError for an item without ``=``.

    The last ``=`` separates, so a column name may itself contain ``=``.
    """
    out = {}
    for item in items:
        name, sep, kind = item.rpartition("=")
        if not sep or not name or not kind:
            raise ColumnError(f"--column {item!r}: expected NAME=KIND, e.g. --column photo=image")
        out[name] = kind.strip().lower()
    return out


def _sep(value: str) -> str:
    """``--sep``: one character; ``\\t`` and ``tab`` name a tab (a shell cannot pass one easily)."""
    return "\t" if value in ("\\t", "tab", "TAB") else value


def run_fit(args: argparse.Namespace, manager) -> int:
    from mmcore.engine.rundir import RunDir
    from mmcore_plugins.autofit.budget import process_age
    from mmcore_plugins.autofit.fitting import fit

    # A process started as `mmcore fit ...` has spent its start-up on this fit; main() called
    # in-process (a notebook, a test) has not.
    started_for_fit = sys.argv[1:2] == ["fit"]
    with RunDir.named_by("--run-dir"):  # a refused folder is named as the user named it
        fit(args.data, args.target, val=args.val, test=args.test, time_limit=args.time_limit, preset=args.preset,
            columns=parse_column_overrides(args.column), run_dir=args.run_dir, overwrite=args.overwrite, manager=manager,
            empty_labels=args.empty_labels, strict=args.strict, allow_outside_paths=args.allow_outside_paths,
            max_epochs=args.max_epochs, spent=process_age() if started_for_fit else 0.0,  # start-up counts against --time-limit
            encoding=args.encoding, sep=args.sep, decimal=args.decimal)
    return 0


@mmcore.hookimpl
def mmcore_add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit", help="train a model from a table (CSV/JSONL/Parquet) without writing a config",
        description="Infer each column's kind from its content, choose encoders, fusion and training options, "
                    "fit them into the time limit, train, and write everything (config.yaml included) into a run "
                    "directory.")
    parser.add_argument("data", help="the training table: CSV, JSONL or Parquet (file paths relative to its folder)")
    parser.add_argument("--target", required=True, help="the column to predict")
    parser.add_argument("--val", help="a validation table (default: the table's split column, else 15%% of train)")
    parser.add_argument("--test", help="a test table, evaluated with the best checkpoint")
    parser.add_argument("--time-limit", default="10m", help="for the whole fit, e.g. 10m, 90s, 1h (default 10m)")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="at most this many epochs (default: the preset's cap); fewer when the time limit says so")
    parser.add_argument("--preset", default="best", choices=["fast", "best"],
                        help="best: pretrained encoders where they help (default); fast: small models from scratch")
    parser.add_argument("--column", action="append", default=[], metavar="NAME=KIND",
                        help="override a column's inferred kind: image, audio, video, text, categorical, numeric, date, "
                             "ignore (the target: classification, multilabel, regression); repeatable")
    parser.add_argument("--empty-labels", default="none", choices=["none", "missing"],
                        help="a multilabel target's empty cell: none of the labels, a negative example (default), or "
                             "missing: the row is unlabelled and left out")
    parser.add_argument("--strict", action="store_true",
                        help="a cell naming a missing or unreadable file, or an input that fails when training reads "
                             "it, is an error naming row and column (default: a missing modality, counted)")
    parser.add_argument("--encoding", default="utf-8-sig",
                        help="text encoding of CSV/JSONL tables (default utf-8-sig; cp1252 for a CSV Excel saved on Windows)")
    parser.add_argument("--sep", default=None, type=_sep,
                        help="a CSV's delimiter, e.g. ';' or '\\t' (default: found from its first lines among , ; tab |)")
    parser.add_argument("--decimal", default=None, choices=[",", "."], metavar=",|.",
                        help="a CSV's decimal mark: ',' reads decimal-comma numbers (0,314) as numbers; default: found "
                             "per column (a column of decimal-comma numbers)")
    parser.add_argument("--run-dir", help="where the run goes (default: runs/fit, runs/fit-2, ...)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an existing non-empty folder that is not a run (your files stay; one named "
                             "data.jsonl, autofit.json or fit_summary.json is refused, never replaced)")
    parser.add_argument("--allow-outside-paths", action="store_true",
                        help="let file cells name files outside the table's folder (../, absolute paths, links): "
                             "refused by default, as mmcore train refuses them")
    parser.set_defaults(handler=run_fit)
