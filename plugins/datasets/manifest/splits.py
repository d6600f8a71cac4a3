"""Splitting a manifest's rows into train / val / test: a split column (aliases, any case), val/test
files, or fractions carved with a seed -- and saying how each split was made (an empty one as a warning)."""

from __future__ import annotations

import logging
from array import array
from collections import Counter
from collections.abc import Sequence
from typing import Any

from mmcore.data import SPLITS, seeded_split
from mmcore_plugins.datasets.manifest.errors import ManifestError
from mmcore_plugins.datasets.manifest.source import Table
from mmcore_plugins.datasets.manifest.targets import is_empty

logger = logging.getLogger("mmcore.data.manifest")

#: ``split_column`` values (compared lower-cased, stripped) -> split.
SPLIT_ALIASES: dict[str, str] = {
    **dict.fromkeys(("train", "training"), "train"),
    **dict.fromkeys(("val", "valid", "validation", "dev"), "val"),
    **dict.fromkeys(("test", "testing"), "test"),
}
DEFAULT_FRACTION = 0.15


def split_rows(table: Table, split_column: str) -> dict[str, Sequence[int]]:
    """``{split: row indices}`` (typed arrays: a million rows are 8 MB, not a list of ints) by the split column."""
    if len(table.rows) and split_column not in table.columns:
        raise ValueError(f"split_column: manifest {table.name!r} has no column {split_column!r}")
    out: dict[str, array] = {s: array("q") for s in SPLITS}
    unknown: Counter[str] = Counter()
    seen: dict[Any, str | None] = {}  # a split column repeats three values: each looked up once
    for i, value in enumerate(table.values(split_column)):
        try:
            split = seen[value]
        except KeyError:
            split = seen[value] = SPLIT_ALIASES.get(str(value).strip().lower()) if value is not None else None
        except TypeError:  # an unhashable cell (a JSON list)
            split = None
        if split is None:
            unknown[repr(value) if not is_empty(value) else "(empty)"] += 1
        else:
            out[split].append(i)
    if unknown:
        listed = ", ".join(f"{v} x{n}" for v, n in unknown.most_common())
        raise ManifestError([f"{table.name}: column {split_column!r} holds {sum(unknown.values())} row(s) with values that "
                             f"name no split: {listed}; expected one of {sorted(set(SPLIT_ALIASES))} (any case)"])
    return out


def assign_splits(main: Table, val: Table | None, test: Table | None, split_column: str | None,
                   val_fraction: float | None, test_fraction: float | None, seed: int) -> dict[str, tuple[Table, Sequence[int]]]:
    """``{split: (table, row indices in file order)}`` (a split's rows come from one table: train from the
    main one, val and test from theirs or the main one); how each split was made is logged (an empty one
    as a warning)."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0):
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    fractions = {"val": val_fraction, "test": test_fraction}
    n_main = len(main.rows)
    if split_column is None and val is None and test is None:
        # No split given at all: a seeded shuffle cut by the fractions (documented defaults).
        given = {s: DEFAULT_FRACTION if f is None else f for s, f in fractions.items()}
        if given["val"] + given["test"] >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must leave training rows, got {given['val'] + given['test']}")
        cut = seeded_split(n_main, val_fraction=given["val"], test_fraction=given["test"], seed=seed)
        out = {s: (main, array("q", sorted(cut[s]))) for s in SPLITS}  # file order within a split
        for split in ("val", "test"):
            if not out[split][1] and given[split] > 0:
                default = " (the default)" if fractions[split] is None else ""
                raise ValueError(f"{split}_fraction: {given[split]}{default} of the {n_main} rows of {main.name!r} is "
                                 f"no row; give more rows, a larger {split}_fraction, or {split}_fraction: 0 to go "
                                 f"without a {split} split")
    else:
        if split_column is not None:
            by_split = split_rows(main, split_column)
        else:
            by_split = {"train": range(n_main), "val": range(0), "test": range(0)}
        out = {s: (main, by_split[s]) for s in SPLITS}
        for split, table in (("val", val), ("test", test)):
            if table is not None:  # a file of its own (it takes precedence over the split column)
                if not len(table.rows):
                    raise ValueError(f"{split}_path: {table.name!r} holds no rows")
                out[split] = (table, range(len(table.rows)))
            elif not out[split][1]:
                fraction = fractions[split]
                if fraction is None:
                    source = f"column {split_column!r} of {main.name!r} holds no {split} rows" if split_column is not None \
                        else f"no {split}_path is given"
                    raise ValueError(
                        f"{split}_fraction: the {split} split is empty ({source}); add {split} rows, give {split}_path, set "
                        f"{split}_fraction: F to carve a fraction F of the training rows, or {split}_fraction: 0 to go "
                        f"without a {split} split" + (" (validation then uses the training split)" if split == "val" else ""))
                if fraction > 0:
                    train = out["train"][1]
                    cut = seeded_split(len(train), val_fraction=fraction, test_fraction=0.0, seed=seed + (split == "test"))
                    if not cut["val"]:
                        raise ValueError(f"{split}_fraction: {fraction} of the {len(train)} training rows is no row; "
                                         "give more rows or a larger fraction")
                    chosen = set(cut["val"])  # out[split] below keeps file order
                    out[split] = (main, array("q", (train[i] for i in sorted(chosen))))
                    out["train"] = (main, array("q", (row for i, row in enumerate(train) if i not in chosen)))
                    logger.warning("manifest %s: the %s split is %s of the training rows (%s_fraction, seed %d)",
                                   main.name, split, fraction, split, seed)
    if not out["val"][1]:  # worth a warning: the monitor then judges on rows it trains on
        logger.warning("manifest %s: no val split (val_fraction: 0); validation uses the training split", main.name)
    if not out["test"][1]:  # what test_fraction: 0 asked for (fit's tables, a held-out file evaluated later): a note
        logger.info("manifest %s: no test split (test_fraction: 0); no test metrics", main.name)
    logger.info("manifest %s: %s", main.name, ", ".join(f"{s} {len(out[s][1])} rows" for s in SPLITS))
    return out
