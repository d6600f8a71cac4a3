"""``mmcore shard TABLE --config CONFIG --out DIR --shard-size N [--overwrite]``: a manifest's rows as
WebDataset shards (:mod:`.write`), for ``data: {name: shards, path: DIR}`` (:mod:`.dataset`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import mmcore
from mmcore.errors import ConfigError, ConfigIssue


def run_shard(args: argparse.Namespace, manager) -> int:
    from mmcore.engine.config import load_config, resolve_paths
    from mmcore.engine.datasets import model_data_options
    from mmcore_plugins.shards.write import summary, write_shards

    if args.shard_size < 1:
        raise ConfigError([ConfigIssue("--shard-size", f"must be a positive number of samples per shard, got {args.shard_size}")])
    table = Path(args.table)
    if not table.is_file():
        raise ConfigError([ConfigIssue("TABLE", f"{str(table)!r} {'is not a file' if table.exists() else 'does not exist'}")])
    config = resolve_paths(load_config(args.config, args.overrides))
    data = config.get("data")
    if not isinstance(data, dict) or data.get("name", "manifest") != "manifest":
        got = data.get("name") if isinstance(data, dict) else data
        raise ConfigError([ConfigIssue("data.name", f"`mmcore shard` reads a manifest's options (data.name: manifest), got {got!r}")])
    from mmcore.options import check_options

    # The data section checked as `mmcore train` checks it (unknown options with the closest name);
    # `path` is TABLE's.
    options = {k: v for k, v in data.items() if k not in ("name", "path")}
    issues = check_options(manager.registry.get("dataset", "manifest"), options, reserved=frozenset({"split"}), path="data")
    issues = [issue for issue in issues if issue.path != "data.path"]
    if issues:
        raise ConfigError(issues)
    implied = model_data_options(config.get("model"), manager.registry)
    from mmcore.errors import user_input_phase

    with user_input_phase("reading the data"):  # a ValueError/TypeError here lies in the data or its options
        index = write_shards(str(table.resolve()), data, implied, Path(args.out), shard_size=args.shard_size,
                             overwrite=args.overwrite)
    print(summary(index, Path(args.out)))
    return 0


@mmcore.hookimpl
def mmcore_add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "shard", help="write a table's rows as WebDataset shards (data: {name: shards}) for training past one machine",
        description="Read TABLE with the manifest options of CONFIG's data section (its model says which slots are text, "
                    "image or audio and the target type), validate every row once, and write WebDataset tar shards of "
                    "--shard-size samples per split, plus index.json, into --out.")
    parser.add_argument("table", help="the table (CSV, TSV, JSON Lines, Parquet); replaces the config's data.path")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="overrides of the config")
    parser.add_argument("--config", required=True, help="a config whose data section is a manifest's (columns, target, ...)")
    parser.add_argument("--out", required=True, help="the folder of the shards (created; a folder of yours is refused)")
    parser.add_argument("--shard-size", type=int, default=10_000, help="samples per shard (default 10000)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an existing non-empty folder that holds no shards (only the shards' own names)")
    parser.set_defaults(handler=run_shard)
