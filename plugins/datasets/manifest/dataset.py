"""``load_manifest``: the options checked, every table read, split, the targets fitted on the training
split and every row of every split turned into a sample (the expensive part, cached by the files'
identity and the options, so building the three splits reads and checks once)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from mmcore.data import SPLITS, SampleDataset
from mmcore_plugins.datasets.manifest.errors import ManifestError
from mmcore_plugins.datasets.manifest.options import Options, check_columns, columns_spec, named_columns
from mmcore_plugins.datasets.manifest.rows import RowParser
from mmcore_plugins.datasets.manifest.source import Table
from mmcore_plugins.datasets.manifest.splits import assign_splits
from mmcore_plugins.datasets.manifest.targets import TARGET_TYPES, is_empty

logger = logging.getLogger("mmcore.data.manifest")

#: ``validate``: every file's header read and its first frame / second decoded; the header only
#: (one open, nothing decoded); the file's existence and kind (one stat); nothing on disk at all.
VALIDATE_LEVELS = ("decode", "header", "exists", "none")


class Parsed:
    def __init__(self) -> None:
        self.samples: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        self.skipped: dict[str, int] = dict.fromkeys(SPLITS, 0)
        self.problems: list[str] = []
        self.classes: list[str] | None = None
        self.target_type = "none"
        self.names: dict[str, str] = {}
        #: rows per split whose empty multilabel cell was read as "no label" (empty_labels: none)
        self.empty_labels: dict[str, int] = dict.fromkeys(SPLITS, 0)
        self.sources: list[dict[str, Any]] = []
        self.taken: set[str] = set()  # splits whose samples were handed to a data set (take)
        #: (slots, resolved table folders) whose files are confirmed inside a folder when read (validate: none)
        self.confined: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())

    def take(self, split: str) -> list[dict[str, Any]]:
        """The split's samples, handed over: the parse keeps no reference to them (one copy of each
        sample in memory, held by the data set built from it). A split is taken once."""
        samples, self.samples[split] = self.samples[split], []
        self.taken.add(split)
        return samples


# Parses shared by the splits of one data set: building train, val and test reads and checks the
# files once. Each split's samples are handed to its data set (Parsed.take), so a parse holds
# only the splits not built yet, and goes when all three are.
_CACHE: dict[Any, Parsed] = {}
_CACHE_SIZE = 2


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
        check_columns(Path(table.name), table.rows, named)
    splits = assign_splits(main, val, test, opts.split_column, opts.val_fraction, opts.test_fraction, opts.seed)
    parsed = Parsed()
    parsed.names = {"main": main.name}
    parsed.sources = [table.describe() for table in tables]  # what --resume compares (mmcore.engine.data_record)
    parser = RowParser(opts)
    parser.targets.fit_targets([table.rows[i] for table, i in splits["train"]])
    parsed.classes, parsed.target_type = parser.targets.classes, parser.targets.target_type
    rows = []  # (split, table, row number, sample, problems)
    for split in SPLITS:
        for table, i in splits[split]:
            sample, problems = parser.sample(table, table.rows[i], i + 1)
            rows.append((split, table, i + 1, sample, problems))
    parser.run_checks()
    if parser.confined_slots:
        parsed.confined = (tuple(sorted(parser.confined_slots)), tuple(p.base for p in parser.paths.values()))
    parser.check_lengths(rows)
    empty_label = parsed.target_type == "multilabel" and isinstance(opts.target, str) and opts.empty_labels == "none"
    for split, table, number, sample, problems in rows:
        if problems:
            parsed.skipped[split] += 1
        else:
            parsed.samples[split].append(sample)
            if empty_label and is_empty(table.rows[number - 1].get(opts.target)):
                parsed.empty_labels[split] += 1
    if any(parsed.empty_labels.values()):
        logger.warning("manifest %s: %s rows with an empty %r cell read as no label (negative examples; empty_labels: "
                    "missing leaves them out)", main.name, sum(parsed.empty_labels.values()), opts.target)
    order = {id(t): k for k, t in enumerate(tables)}  # problems listed by file, then row
    for *_, problems in sorted(rows, key=lambda r: (order[id(r[1])], r[2])):
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
        "missing": {slot: sum(s["inputs"][slot] is None for s in samples) for slot in columns},
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
