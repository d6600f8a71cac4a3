"""``load_manifest``: the options checked, every table read, split, the targets fitted on the training
split and every row of every split turned into a sample (the expensive part, cached by the files'
identity and the options, so building the three splits reads and checks once).

Streamed: a table is read in batches into columns (:class:`~mmcore_plugins.datasets.manifest.source.Table`),
and its rows become samples batch by batch, in file order (built, their files checked, then appended to
their split's :class:`~mmcore.sample_columns.SampleColumns`), so neither the table's rows nor the samples
are ever held whole as Python dicts (issue 26: a million-row manifest within 1.5 GB)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from mmcore.bulk import collector_paused
from mmcore.data import SPLITS, SampleDataset
from mmcore.sample_columns import SampleColumns
from mmcore_plugins.datasets.manifest.check_pool import CHUNK_FILES, POOL_MIN_ROWS
from mmcore_plugins.datasets.manifest.errors import ManifestError, bad
from mmcore_plugins.datasets.manifest.options import Options, check_columns, columns_spec, named_columns
from mmcore_plugins.datasets.manifest.rows import CheckProgress, RowParser
from mmcore_plugins.datasets.manifest.source import Table
from mmcore_plugins.datasets.manifest.splits import assign_splits
from mmcore_plugins.datasets.manifest.targets import TARGET_TYPES, is_empty

logger = logging.getLogger("mmcore.data.manifest")

#: ``validate``: every file's header read and its first frame / second decoded; the header only
#: (one open, nothing decoded); the file's existence and kind (one stat); nothing on disk at all.
VALIDATE_LEVELS = ("decode", "header", "exists", "none")

#: Samples re-encoded at a time when ragged rows leave a split (and rows of a table given as a list turned
#: into samples at a time); a table read from a file is turned into samples in the batches it was read in
#: (:data:`~mmcore_plugins.datasets.manifest.source.BATCH_ROWS`), their files checked together (each
#: distinct file once per batch).
CHUNK_ROWS = 65536


class Parsed:
    def __init__(self) -> None:
        self.samples: dict[str, SampleColumns] = {s: SampleColumns() for s in SPLITS}
        self.skipped: dict[str, int] = dict.fromkeys(SPLITS, 0)
        self.problems: list[str] = []
        self.classes: list[str] | None = None
        self.target_type = "none"
        self.names: dict[str, str] = {}
        #: rows per split whose empty multilabel cell was read as "no label" (empty_labels: none)
        self.empty_labels: dict[str, int] = dict.fromkeys(SPLITS, 0)
        #: per split, samples lacking each slot (counted as the samples are built)
        self.missing: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
        self.sources: list[dict[str, Any]] = []
        self.taken: set[str] = set()  # splits whose samples were handed to a data set (take)
        #: (slots, resolved table folders) whose files are confirmed inside a folder when read (validate: none)
        self.confined: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())

    def take(self, split: str) -> SampleColumns:
        """The split's samples, handed over: the parse keeps no reference to them (one copy of each
        sample in memory, held by the data set built from it). A split is taken once."""
        samples, self.samples[split] = self.samples[split], SampleColumns()
        self.taken.add(split)
        return samples


# Parses shared by the splits of one data set: building train, val and test reads and checks the
# files once. Each split's samples are handed to its data set (Parsed.take), so a parse holds
# only the splits not built yet, and goes when all three are.
_CACHE: dict[Any, Parsed] = {}
_CACHE_SIZE = 2


def _table_rows(table: Table) -> Iterator[tuple[int, Sequence[dict[str, Any]]]]:
    """``(index of the first, rows)``: the table's rows, one batch at a time (the batches it was read in,
    built column by column; :data:`CHUNK_ROWS` at a time for rows given as a list)."""
    rows = table.rows
    if hasattr(rows, "parts"):
        yield from rows.parts()
        return
    for start in range(0, len(rows), CHUNK_ROWS):
        yield start, rows[start:start + CHUNK_ROWS]


@collector_paused()  # millions of short-lived rows and samples: mmcore.bulk says why
def parse(opts: Options, *, fresh: bool = False) -> Parsed:
    """Read every table, split the rows, fit the label vocabulary on the training split, turn every
    row of every split into a sample and collect every problem (the expensive part, cached by the
    files' identity and the options, so building the three splits reads and checks once;
    ``fresh``: parse again even when cached)."""
    main = Table(opts.path, opts.encoding, opts.root)
    val = Table(opts.val_path, opts.encoding, opts.root, "val") if opts.val_path is not None else None
    test = Table(opts.test_path, opts.encoding, opts.root, "test") if opts.test_path is not None else None
    tables = [t for t in (main, val, test) if t is not None]
    key = opts.cache_key(tables)
    if key is not None and key in _CACHE and not fresh:
        return _CACHE[key]
    named = named_columns(opts.columns, opts.target, opts.path_columns)
    for table in tables:
        check_columns(Path(table.name), [dict.fromkeys(table.columns)] if len(table.rows) else [], named)
    splits = assign_splits(main, val, test, opts.split_column, opts.val_fraction, opts.test_fraction, opts.seed)
    parsed = Parsed()
    parsed.names = {"main": main.name}
    parsed.sources = [table.describe() for table in tables]  # what --resume compares (mmcore.engine.data_record)
    parser = RowParser(opts)
    train_table, train_rows = splits["train"]
    parser.targets.fit_target_cells(train_table.values(opts.target, train_rows) if isinstance(opts.target, str) else ())
    parsed.classes, parsed.target_type = parser.targets.classes, parser.targets.target_type
    empty_label = parsed.target_type == "multilabel" and isinstance(opts.target, str) and opts.empty_labels == "none"
    order = {id(t): k for k, t in enumerate(tables)}  # problems listed by file, then row
    bad_rows: list[tuple[int, int, str, list[str], dict[str, Any] | None]] = []  # (table, row number, split, problems, sample)
    progress = CheckProgress(sum(len(indices) for _, indices in splits.values()), decode=opts.validate == "decode",
                             unit=" rows")
    # Each table is read once, in file order, batch by batch; a row goes to its split's samples (each split's
    # rows come from one table, in file order, so every split's samples are in the order of assign_splits).
    codes: dict[int, bytearray] = {}  # id(table) -> each row's split (its index in SPLITS; 255: no split)
    for k, split in enumerate(SPLITS):
        table, indices = splits[split]
        code = codes.setdefault(id(table), bytearray(b"\xff") * len(table.rows))
        for i in indices:
            code[i] = k
    done = 0
    # A large table's files are checked in worker processes while its rows are parsed (check_pool).
    pooled = opts.validate in ("header", "decode") and progress.total >= POOL_MIN_ROWS
    try:
        for table in tables:
            code = codes.get(id(table))
            if code is None:
                continue
            for start, rows in _table_rows(table):
                built = []
                for i, row in enumerate(rows, start):
                    k = code[i]
                    if k == 255:
                        continue
                    parser.rank = (k, i)  # the split-major order check_lengths breaks ties of lengths by
                    sample, problems = parser.sample(table, row, i + 1)
                    built.append((SPLITS[k], table, i + 1, sample, problems, empty_label and is_empty(row.get(opts.target))))
                    if pooled and len(parser.pending) >= CHUNK_FILES:
                        parser.submit_checks()
                progress.offset, progress.span = done, len(built)
                parser.run_checks(progress)
                done += len(built)
                good: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
                for split, table, number, sample, problems, empty in built:
                    if problems:  # the sample kept only where a list cell may yet be found ragged (_ragged_rows)
                        has_list = any(isinstance(v, (list, tuple)) for v in sample["inputs"].values())
                        bad_rows.append((order[id(table)], number, split, problems, sample if has_list else None))
                    else:
                        good[split].append(sample)
                        parsed.empty_labels[split] += empty
                for split, samples in good.items():
                    if samples:
                        inputs = [s["inputs"] for s in samples]
                        for slot in opts.columns:
                            parsed.missing[split][slot] += [x[slot] for x in inputs].count(None)
                        parsed.samples[split].extend(samples)
    finally:
        parser.close()
    progress.close()
    _ragged_rows(parsed, parser, tables, bad_rows, empty_label and opts.target)
    if parser.confined_slots:
        parsed.confined = (tuple(sorted(parser.confined_slots)), tuple(p.base for p in parser.paths.values()))
    if any(parsed.empty_labels.values()):
        logger.warning("manifest %s: %s rows with an empty %r cell read as no label (negative examples; empty_labels: "
                    "missing leaves them out)", main.name, sum(parsed.empty_labels.values()), opts.target)
    for _, _, split, problems, _ in sorted(bad_rows, key=lambda r: r[:2]):
        parsed.skipped[split] += 1
        parsed.problems += problems
    # Not kept when it failed: a bad image may be fixed without touching the manifest.
    if key is not None and not (parsed.problems and opts.on_bad_sample == "error"):
        _CACHE.pop(key, None)
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = parsed
    if parsed.problems and opts.on_bad_sample == "skip":
        logger.warning("%s (skipping this and any further bad rows: on_bad_sample=skip; %d bad rows in all: %s)",
                       parsed.problems[0], sum(parsed.skipped.values()),
                       ", ".join(f"{s} {n}" for s, n in parsed.skipped.items() if n))
    return parsed


def _ragged_rows(parsed: Parsed, parser: RowParser, tables: list[Table],
                 bad_rows: list[tuple[int, int, str, list[str], dict[str, Any] | None]], empty_target: str | bool) -> None:
    """Rows of numbers given as one list cell must all have one length (the commonest one, over every row
    of every split, as :meth:`RowParser.check_lengths` finds it): each row with another length gets the
    problem, and a row that had none leaves its split's samples. Rare (list cells come from JSON Lines
    and Parquet), so its samples are read back from the columns only when a column is ragged."""
    lengths, first = parser.list_lengths, parser.list_first

    def commonest(slot: str) -> int:  # most rows; of those, the first seen in split-major order (Counter.most_common)
        return max(lengths[slot], key=lambda n: (lengths[slot][n], tuple(-r for r in first[slot][n])))

    common = {slot: (spec, commonest(slot)) for slot, spec in parser.columns.items()
              if isinstance(spec, str) and slot in parser.list_slots and len(lengths.get(slot, ())) >= 2}
    if not common:
        return

    def wrong(name: str, number: int, sample: dict[str, Any]) -> list[str]:
        found = []
        for slot, (spec, length) in common.items():
            cell = sample["inputs"][slot]
            if isinstance(cell, (list, tuple)) and len(cell) != length:
                found.append(str(bad(name, number, spec, f"expected {length} numbers (as most rows have), got {len(cell)}")))
        return found

    for k, number, _, problems, sample in bad_rows:
        if sample is not None:
            problems += wrong(tables[k].name, number, sample)
    order = {t.name: k for k, t in reversed(list(enumerate(tables)))}
    for split in SPLITS:
        kept, dropped, samples = SampleColumns(), False, parsed.samples[split]
        batch: list[dict[str, Any]] = []
        for sample in samples:
            origin = sample["origin"]
            problems = wrong(origin["file"], origin["row"], sample)
            if not problems:
                batch.append(sample)
                if len(batch) == CHUNK_ROWS:
                    kept.extend(batch)
                    batch = []
                continue
            dropped = True
            k = order[origin["file"]]
            bad_rows.append((k, origin["row"], split, problems, sample))
            parsed.missing[split].subtract(slot for slot, raw in sample["inputs"].items() if raw is None)
            if empty_target:
                parsed.empty_labels[split] -= is_empty(tables[k].rows[origin["row"] - 1].get(empty_target))
        kept.extend(batch)
        if dropped:
            parsed.samples[split] = kept


def load_manifest(
    split: Literal["train", "val", "test"],
    path: str | os.PathLike | Any,
    columns: dict[str, Any],
    target: str | list[str] | None = None,
    path_columns: list[str] | None = None,
    split_column: str | None = None,
    val_path: str | os.PathLike | Any | None = None,
    test_path: str | os.PathLike | Any | None = None,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
    on_bad_sample: Literal["error", "skip"] = "error",
    allow_outside_paths: bool = False,
    validate: Literal["decode", "header", "exists", "none"] = "header",
    encoding: str = "utf-8-sig",
    root: str | None = None,
    target_type: Literal["auto", "class", "multilabel", "regression", "text", "raw"] = "auto",
    classes: list[str | int] | None = None,
    num_classes: int | None = None,
    label_delimiter: str = "|",
    slot_modalities: dict[str, str] | None = None,
    empty_labels: Literal["none", "missing"] = "none",
) -> SampleDataset:
    """One split of a manifest's samples (see the module docstring for every option).

    ``path`` (and ``val_path``/``test_path``): a ``.csv``/``.tsv``/``.jsonl``/``.json``/``.parquet``
    file, or from Python a pandas ``DataFrame`` / pyarrow ``Table`` (relative file paths in it then
    resolve against ``root``, default the current folder). ``metadata`` holds ``manifest``,
    ``skipped`` (bad rows dropped from this split), ``missing`` (per slot), ``target_type`` and, for
    class and multilabel targets, ``classes`` (names, index = class) and ``num_classes``.

    Raises :class:`ManifestError` (a ``ValueError``) listing every bad row of every split, each
    naming the manifest, row, column, what was expected and what came; ``ValueError`` naming the
    option for bad options or splits; ``FileNotFoundError`` for a missing manifest.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if on_bad_sample not in ("error", "skip"):
        raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
    if validate not in VALIDATE_LEVELS:
        raise ValueError(f"validate must be one of {', '.join(map(repr, VALIDATE_LEVELS))}, got {validate!r}")
    if target_type not in TARGET_TYPES:
        raise ValueError(f"target_type must be one of {TARGET_TYPES}, got {target_type!r}")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(label_delimiter, str) or not label_delimiter:
        raise ValueError(f"label_delimiter must be a non-empty string, got {label_delimiter!r}")
    if empty_labels not in ("none", "missing"):
        raise ValueError(f"empty_labels must be 'none' or 'missing', got {empty_labels!r}")
    if isinstance(target, list) and target_type == "class":
        raise ValueError(f"target_type 'class' takes one target column, got {target}")
    columns = columns_spec(columns)
    opts = Options(
        path=path, columns=columns, target=target, path_columns=list(path_columns or []), split_column=split_column,
        val_path=val_path, test_path=test_path, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
        on_bad_sample=on_bad_sample, allow_outside_paths=allow_outside_paths, validate=validate, encoding=encoding,
        root=root, target_type=target_type, classes=list(classes) if classes is not None else None,
        num_classes=num_classes, label_delimiter=label_delimiter, modalities=dict(slot_modalities or {}),
        empty_labels=empty_labels,
    )
    parsed = parse(opts)
    if split in parsed.taken:  # built before from this parse: its samples belong to that data set
        parsed = parse(opts, fresh=True)
    if parsed.problems and on_bad_sample == "error":
        raise ManifestError(parsed.problems)
    samples = parsed.take(split)
    if len(parsed.taken) == len(SPLITS):  # every split built: nothing left worth keeping
        for k in [k for k, v in _CACHE.items() if v is parsed]:
            del _CACHE[k]
    metadata: dict[str, Any] = {
        "manifest": parsed.names["main"], "skipped": parsed.skipped[split], "target_type": parsed.target_type,
        "missing": {slot: parsed.missing[split][slot] for slot in columns},
        "sources": [dict(source) for source in parsed.sources],
    }
    if parsed.target_type == "multilabel":
        metadata["empty_labels"] = parsed.empty_labels[split]  # rows read as "no label"
    if parsed.classes is not None:
        metadata["classes"] = list(parsed.classes)
        metadata["num_classes"] = len(parsed.classes)
    # Held as columns: a table's samples as dicts cost ~0.9 KB a row for the whole run (issue 26).
    if parsed.confined[0]:
        return ConfinedFiles(samples, metadata=metadata, slots=parsed.confined[0], folders=parsed.confined[1])
    return SampleDataset(samples, metadata=metadata, compact=True)


class ConfinedFiles(SampleDataset):
    """A manifest read with ``validate: none`` (nothing on disk looked at): each file a sample names
    is confirmed inside its table's folder -- links followed, one ``realpath`` -- when the sample is
    handed out to be read, so a symbolic link planted in the folder cannot lead a read outside it
    (``allow_outside_paths: true`` permits it). Raises :class:`~mmcore_plugins.io.paths.OutsidePathError`."""

    def __init__(self, samples, *, metadata, slots: tuple[str, ...], folders: tuple[str, ...]) -> None:
        super().__init__(samples, metadata=metadata, compact=True)
        self.slots, self.folders = slots, folders

    def __getitem__(self, index: int):
        from mmcore_plugins.io.paths import confirm_inside

        sample = self.samples[index]
        for slot in self.slots:
            path = sample["inputs"].get(slot)
            if isinstance(path, str):
                confirm_inside(path, self.folders)
        return sample
