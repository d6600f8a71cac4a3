"""Splitting a manifest's rows into train / val / test: a split column (aliases, any case), val/test
files, or fractions carved with a seed -- and saying how each split was made (an empty one as a warning)."""

from __future__ import annotations

import logging
from collections import Counter

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


def split_rows(table: Table, split_column: str) -> dict[str, list[int]]:
    if table.rows and all(split_column not in r for r in table.rows):
        raise ValueError(f"split_column: manifest {table.name!r} has no column {split_column!r}")
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    unknown: Counter[str] = Counter()
    for i, row in enumerate(table.rows):
        value = row.get(split_column)
        split = SPLIT_ALIASES.get(str(value).strip().lower()) if value is not None else None
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
                   val_fraction: float | None, test_fraction: float | None, seed: int) -> dict[str, list[tuple[Table, int]]]:
    """``{split: [(table, row index)]}``; how each split was made is logged (an empty one as a warning)."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0):
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    fractions = {"val": val_fraction, "test": test_fraction}
    if split_column is None and val is None and test is None:
        # No split given at all: a seeded shuffle cut by the fractions (documented defaults).
        given = {s: DEFAULT_FRACTION if f is None else f for s, f in fractions.items()}
        if given["val"] + given["test"] >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must leave training rows, got {given['val'] + given['test']}")
        cut = seeded_split(len(main.rows), val_fraction=given["val"], test_fraction=given["test"], seed=seed)
        out = {s: [(main, i) for i in sorted(cut[s])] for s in SPLITS}  # file order within a split
        for split in ("val", "test"):
            if not out[split] and given[split] > 0:
                default = " (the default)" if fractions[split] is None else ""
                raise ValueError(f"{split}_fraction: {given[split]}{default} of the {len(main.rows)} rows of {main.name!r} is "
                                 f"no row; give more rows, a larger {split}_fraction, or {split}_fraction: 0 to go "
                                 f"without a {split} split")
    else:
        if split_column is not None:
            by_split = split_rows(main, split_column)
        else:
            by_split = {"train": list(range(len(main.rows))), "val": [], "test": []}
        out = {s: [(main, i) for i in by_split[s]] for s in SPLITS}
        for split, table in (("val", val), ("test", test)):
            if table is not None:  # a file of its own (it takes precedence over the split column)
                if not table.rows:
                    raise ValueError(f"{split}_path: {table.name!r} holds no rows")
                out[split] = [(table, i) for i in range(len(table.rows))]
            elif not out[split]:
                fraction = fractions[split]
                if fraction is None:
                    source = f"column {split_column!r} of {main.name!r} holds no {split} rows" if split_column is not None \
                        else f"no {split}_path is given"
                    raise ValueError(
                        f"{split}_fraction: the {split} split is empty ({source}); add {split} rows, give {split}_path, set "
                        f"{split}_fraction: F to carve a fraction F of the training rows, or {split}_fraction: 0 to go "
                        f"without a {split} split" + (" (validation then uses the training split)" if split == "val" else ""))
                if fraction > 0:
                    train = out["train"]
                    cut = seeded_split(len(train), val_fraction=fraction, test_fraction=0.0, seed=seed + (split == "test"))
                    if not cut["val"]:
                        raise ValueError(f"{split}_fraction: {fraction} of the {len(train)} training rows is no row; "
                                         "give more rows or a larger fraction")
                    chosen = set(cut["val"])  # out[split] below keeps file order
                    out[split] = [train[i] for i in sorted(chosen)]
                    out["train"] = [item for i, item in enumerate(train) if i not in chosen]
                    logger.warning("manifest %s: the %s split is %s of the training rows (%s_fraction, seed %d)",
                                   main.name, split, fraction, split, seed)
    if not out["val"]:  # worth a warning: the monitor then judges on rows it trains on
        logger.warning("manifest %s: no val split (val_fraction: 0); validation uses the training split", main.name)
    if not out["test"]:  # what test_fraction: 0 asked for (fit's tables, a held-out file evaluated later): a note
        logger.info("manifest %s: no test split (test_fraction: 0); no test metrics", main.name)
    logger.info("manifest %s: %s", main.name, ", ".join(f"{s} {len(out[s])} rows" for s in SPLITS))
    return out

