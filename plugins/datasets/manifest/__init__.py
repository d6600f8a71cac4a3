"""`manifest`: a table of samples (CSV, JSON Lines, Parquet, or a pandas DataFrame from Python), one
row per sample, columns mapped to modality slots.

    data:
      name: manifest
      path: data/train.csv              # .csv/.tsv, .jsonl/.ndjson/.json, .parquet; from Python also a
                                        # pandas DataFrame or a pyarrow Table
      encoding: utf-8-sig               # text formats; cp1252 for a CSV saved by Excel on Windows
      columns:
        image: image_path               # one column: a file path or an inline value (text)
        table: [age, height]            # a list: numeric columns -> one row of numbers
        profile: {numeric: [age], categorical: [city]}   # a row {column: value} for tabular encoders
      path_columns: [image_path]        # file (or frame-folder) paths, relative to the manifest's folder;
                                        # a text slot's file is read as its UTF-8 contents
      target: label                     # or a list of target columns
      split_column: split               # or val_path / test_path, or val/test fractions + seed

Targets
-------
``target_type`` says what the target column holds; the trainer sets it from the model's head when
it is not given (``classification`` -> ``class``, ``multilabel``, ``regression``, ``captioning`` ->
``raw``); ``auto`` (a direct Python call) guesses: list cells -> multilabel, integral numbers or
non-numeric strings -> class, other numbers -> regression.

* ``class``: names (``cat``/``dog``) or integers (``0``, ``1.0`` and ``"1"`` are one class ``"1"``).
  The vocabulary (``metadata["classes"]``, a list of names; target = index in it) is fitted on the
  training split: sorted (numerically when every name is an integer), so it is stable. Given
  ``classes`` fix it (and its order); given ``num_classes`` with integer labels make the
  vocabulary ``0 .. num_classes-1`` (label = index). A label the training split never had, NaN, a
  non-integral number, or an integer outside ``num_classes``: a data error naming the row.
* ``multilabel``: a list cell (JSON Lines / Parquet list) or a string of names joined by
  ``label_delimiter`` (default ``"|"``: ``"cat|dog"``); an empty list means no label. The target is
  multi-hot over the vocabulary fitted on the training split. With a list of 0/1 target
  columns, the column names are the classes.
* ``regression``: finite numbers (one column, or a list of columns).
* ``text``: a string (captions); ``raw``: the value as written, numeric strings as numbers (pair ids).

Splits
------
``split_column`` values are matched case-insensitively against aliases: ``train``/``training``,
``val``/``valid``/``validation``/``dev``, ``test``/``testing``. Any other value is an error that
lists the unexpected values with their counts. When the column holds no validation (or test)
rows, ``val_fraction`` (``test_fraction``) decides, and must be given: ``0`` trains without that
split (the trainer then validates on the training split), ``0 < f < 1`` carves that fraction out
of the training rows (seeded). Without a split column or split files, rows are shuffled with
``seed`` and cut by ``val_fraction``/``test_fraction`` (default 0.15 each); a split that comes out
empty without being asked to be is an error. The split sizes are logged when the data set is
built, and an empty split as a warning.

Validation
----------
Every row of every split is checked when the data set is built, before any model is trained,
and all problems are reported together (:class:`ManifestError`, at most 20 listed, with the
count): target types and ranges (above), numeric cells, text cells that are not strings,
ragged rows of numbers, rows lacking every modality, paths escaping the manifest's folder,
missing files, a folder where an image or audio file is expected, and (``validate: decode``)
every image and audio file's header through :func:`check_file`. ``on_bad_sample: skip`` drops
such rows instead (counted in ``metadata["skipped"]`` and logged once). An empty or absent cell
means the sample lacks that modality (raw input None, ``present=False`` downstream).
``slot_modalities`` (``{slot: modality}``, set by the trainer from the model's encoders) tells which
checks apply to a slot. Raw inputs handed to the processors are absolute file paths, except a
text slot's file, which is handed over as the file's contents.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import mmcore
from mmcore.data import SPLITS, SampleDataset, seeded_split
from mmcore.errors import UserInputError
from mmcore_plugins.io.tables import read_table

logger = logging.getLogger("mmcore.data.manifest")

#: ``split_column`` values (compared lower-cased, stripped) -> split.
SPLIT_ALIASES: dict[str, str] = {
    **dict.fromkeys(("train", "training"), "train"),
    **dict.fromkeys(("val", "valid", "validation", "dev"), "val"),
    **dict.fromkeys(("test", "testing"), "test"),
}
TARGET_TYPES = ("auto", "class", "multilabel", "regression", "text", "raw")
#: Problems listed in one error message (the rest are counted).
MAX_LISTED = 20
DEFAULT_FRACTION = 0.15


class BadSampleError(UserInputError):
    """A manifest row that cannot be used; the message names manifest, row and column."""


class ManifestError(BadSampleError):
    """Every problem found in a manifest when the data set was built; ``problems`` lists them all.

    The message lists the first ``MAX_LISTED`` (``"<manifest>: row N, column 'c': expected X, got Y"``)
    and counts the rest.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(shown)
        head = f"{len(self.problems)} problems in the data set:\n" if len(self.problems) > 1 else ""
        tail = f"\n... and {more} more" if more else ""
        super().__init__(head + "\n".join(shown) + tail)


def read_rows(path: Path, *, encoding: str = "utf-8-sig") -> list[dict[str, Any]]:
    """Rows of a manifest file (see :func:`mmcore_plugins.io.tables.read_table`), as dicts."""
    return read_table(path, encoding=encoding)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    result = float(value)  # accepts numeric strings from CSV; raises ValueError otherwise
    if not math.isfinite(result):
        raise ValueError(f"expected a finite number, got {value!r}")
    return result


def check_file(file: Path) -> None:
    """Check an image or audio file the way the processors will read it (:func:`mmcore_plugins.io.check_media`:
    headers checked, decoding bounded); a :class:`~mmcore_plugins.io.MediaError` (ValueError) naming it if not."""
    from mmcore_plugins.io import AUDIO_SUFFIXES as READABLE_AUDIO
    from mmcore_plugins.io import IMAGE_SUFFIXES as READABLE_IMAGES
    from mmcore_plugins.io import check_media, looks_like_audio, looks_like_image

    suffix = file.suffix.lower()
    if suffix in READABLE_IMAGES or (suffix not in READABLE_AUDIO and looks_like_image(file)):
        check_media(file, "image")
    elif suffix in READABLE_AUDIO or looks_like_audio(file):
        check_media(file, "audio")


def _columns_spec(columns: Any) -> dict[str, Any]:
    if not isinstance(columns, Mapping) or not columns:
        raise ValueError(f"columns must be a non-empty mapping {{slot: column | [columns] | {{numeric: [...], categorical: [...]}}}}, got {columns!r}")
    for slot, spec in columns.items():
        if isinstance(spec, str):
            continue
        if isinstance(spec, list) and spec and all(isinstance(c, str) for c in spec):
            continue
        if isinstance(spec, Mapping) and set(spec) <= {"numeric", "categorical"} and spec and all(
            isinstance(cols, list) and all(isinstance(c, str) for c in cols) for cols in spec.values()
        ):
            continue
        raise ValueError(f"columns.{slot}: expected a column name, a list of numeric columns, or "
                         f"{{numeric: [...], categorical: [...]}}, got {spec!r}")
    return dict(columns)


def _named_columns(columns: Mapping[str, Any], target: str | list[str] | None, path_columns: list[str] | None) -> list[tuple[str, str]]:
    """``(option, column)`` for every column the options name."""
    named = []
    for slot, spec in columns.items():
        if isinstance(spec, str):
            named.append((f"columns.{slot}", spec))
        elif isinstance(spec, list):
            named += [(f"columns.{slot}", c) for c in spec]
        else:
            named += [(f"columns.{slot}.{kind}", c) for kind, cols in spec.items() for c in cols]
    targets = [target] if isinstance(target, str) else list(target or [])
    named += [("target", t) for t in targets] + [("path_columns", c) for c in path_columns or []]
    return named


def check_columns(manifest: Path, rows: list[dict[str, Any]], named: list[tuple[str, str]]) -> None:
    """Every named column must occur in the manifest: a misspelt one would otherwise make a whole
    modality silently missing (or every target "empty")."""
    if not rows:
        return
    present = set().union(*(row.keys() for row in rows))
    missing = [(option, column) for option, column in named if column not in present]
    if missing:
        lines = []
        for option, column in missing:
            close = difflib.get_close_matches(column, sorted(present), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"{option}: manifest {str(manifest)!r} has no column {column!r}{hint}")
        raise ValueError("\n".join(lines) + f"\n(its columns: {', '.join(sorted(present))})")


# ---------------------------------------------------------------------- labels
def _integral(value: float) -> bool:
    return math.isfinite(value) and value == int(value)


def class_name(value: Any) -> str:
    """A class label as its vocabulary name: stripped strings; integers and integral floats (``1``,
    ``1.0``, ``"1.0"``) as ``"1"``. ValueError (saying what was expected) for anything else."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a class label, got {value!r}")
        if not _integral(value):
            raise ValueError(f"expected a class name or an integral class number, got {value!r} "
                             "(for numeric targets use a regression head / target_type: regression)")
        return str(int(value))
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return text
        try:
            return class_name(number)
        except ValueError as exc:  # say what the cell held, not the number it was read as
            raise ValueError(str(exc).replace(repr(number), repr(value), 1)) from None
    raise ValueError(f"expected a class label (a name or an integer), got {type(value).__name__} {value!r:.60}")


def _sorted_names(names: set[str]) -> list[str]:
    """Numerically when every name is an integer (``2`` before ``10``), else alphabetically."""
    try:
        return [str(n) for n in sorted(int(n) for n in names)]
    except ValueError:
        return sorted(names)


def _multilabel_names(value: Any, delimiter: str) -> list[str]:
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str):
        items = [part for part in value.split(delimiter) if part.strip()]
    else:
        items = [value]
    return [class_name(item) for item in items]


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _guess_target_type(values: list[Any]) -> str:
    """``auto``: list cells -> multilabel; all numbers, some non-integral -> regression; else class."""
    if any(isinstance(v, (list, tuple)) for v in values):
        return "multilabel"
    numbers = [float(v) for v in values if _is_number(v)]
    if values and len(numbers) == len(values) and not all(_integral(n) for n in numbers if math.isfinite(n)):
        return "regression"
    return "class"


# ---------------------------------------------------------------------- reading and splitting
class _Table:
    """One manifest source (the main one, or a val/test file) and its rows."""

    def __init__(self, source: Any, encoding: str, root: str | None, role: str = "") -> None:
        self.source = source
        if isinstance(source, (str, os.PathLike)):
            self.path: Path | None = Path(source).expanduser()
            self.name = str(self.path)
            self.root = Path(root).expanduser().resolve() if root else self.path.parent.resolve()
        else:
            self.path = None
            self.name = f"<{role + ' ' if role else ''}{type(source).__name__}>"
            self.root = Path(root).expanduser().resolve() if root else Path.cwd().resolve()
        self.encoding = encoding
        self._rows: list[dict[str, Any]] | None = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The table's rows, read on first use (a cached parse never reads the file again)."""
        if self._rows is None:
            self._rows = read_table(self.source, encoding=self.encoding)
        return self._rows

    @rows.setter
    def rows(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows

    def key(self) -> Any:
        if self.path is None or not self.path.is_file():
            return None  # an in-memory table is never cached; a missing file is reported when read
        st = self.path.stat()
        return (str(self.path.resolve()), st.st_size, st.st_mtime_ns)


def _split_rows(table: _Table, split_column: str) -> dict[str, list[int]]:
    if table.rows and all(split_column not in r for r in table.rows):
        raise ValueError(f"split_column: manifest {table.name!r} has no column {split_column!r}")
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    unknown: Counter[str] = Counter()
    for i, row in enumerate(table.rows):
        value = row.get(split_column)
        split = SPLIT_ALIASES.get(str(value).strip().lower()) if value is not None else None
        if split is None:
            unknown[repr(value) if not _empty(value) else "(empty)"] += 1
        else:
            out[split].append(i)
    if unknown:
        listed = ", ".join(f"{v} x{n}" for v, n in unknown.most_common())
        raise ManifestError([f"{table.name}: column {split_column!r} holds {sum(unknown.values())} row(s) with values that "
                             f"name no split: {listed}; expected one of {sorted(set(SPLIT_ALIASES))} (any case)"])
    return out


def _assign_splits(main: _Table, val: _Table | None, test: _Table | None, split_column: str | None,
                   val_fraction: float | None, test_fraction: float | None, seed: int) -> dict[str, list[tuple[_Table, int]]]:
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
            by_split = _split_rows(main, split_column)
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
    for split in ("val", "test"):
        if not out[split]:
            logger.warning("manifest %s: no %s split (%s_fraction: 0)%s", main.name, split, split,
                           "; validation uses the training split" if split == "val" else "; no test metrics")
    logger.info("manifest %s: %s", main.name, ", ".join(f"{s} {len(out[s])} rows" for s in SPLITS))
    return out


# ---------------------------------------------------------------------- building the data set
class _Options:
    """The options of one manifest, normalised and checked (what :func:`_parse` needs)."""

    def __init__(self, **options: Any) -> None:
        self.__dict__.update(options)

    def cache_key(self, tables: Sequence[_Table]) -> Any:
        keys = [t.key() for t in tables]
        if any(k is None for k in keys):
            return None
        plain = {k: v for k, v in self.__dict__.items() if k not in ("path", "val_path", "test_path")}
        return (tuple(keys), json.dumps(plain, sort_keys=True, default=str))


class _Parsed:
    def __init__(self) -> None:
        self.samples: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        self.skipped: dict[str, int] = dict.fromkeys(SPLITS, 0)
        self.problems: list[str] = []
        self.classes: list[str] | None = None
        self.target_type = "none"
        self.names: dict[str, str] = {}


_CACHE: dict[Any, _Parsed] = {}
_CACHE_SIZE = 8


def _parse(opts: _Options) -> _Parsed:
    """Read every table, split the rows, fit the label vocabulary on the training split, turn every
    row of every split into a sample and collect every problem (the expensive part, cached by the
    files' identity and the options, so building the three splits reads and checks once)."""
    main = _Table(opts.path, opts.encoding, opts.root)
    val = _Table(opts.val_path, opts.encoding, opts.root, "val") if opts.val_path is not None else None
    test = _Table(opts.test_path, opts.encoding, opts.root, "test") if opts.test_path is not None else None
    tables = [t for t in (main, val, test) if t is not None]
    key = opts.cache_key(tables)
    if key is not None and key in _CACHE:
        return _CACHE[key]
    named = _named_columns(opts.columns, opts.target, opts.path_columns)
    for table in tables:
        check_columns(Path(table.name), table.rows, named)
    splits = _assign_splits(main, val, test, opts.split_column, opts.val_fraction, opts.test_fraction, opts.seed)
    parsed = _Parsed()
    parsed.names = {"main": main.name}
    context = _Context(opts)
    context.fit_targets([table.rows[i] for table, i in splits["train"]])
    parsed.classes, parsed.target_type = context.classes, context.target_type
    rows = []  # (split, table, row number, sample, problems)
    for split in SPLITS:
        for table, i in splits[split]:
            sample, problems = context.sample(table, table.rows[i], i + 1)
            rows.append((split, table, i + 1, sample, problems))
    context.check_lengths(rows)
    for split, _table, _number, sample, problems in rows:
        if problems:
            parsed.skipped[split] += 1
        else:
            parsed.samples[split].append(sample)
    order = {id(t): k for k, t in enumerate(tables)}  # problems listed by file, then row
    for *_, problems in sorted(rows, key=lambda r: (order[id(r[1])], r[2])):
        parsed.problems += problems
    # Not kept when it failed: a bad image may be fixed without touching the manifest.
    if key is not None and not (parsed.problems and opts.on_bad_sample == "error"):
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
    validate: Literal["decode", "exists", "none"] = "decode",
    encoding: str = "utf-8-sig",
    root: str | None = None,
    target_type: Literal["auto", "class", "multilabel", "regression", "text", "raw"] = "auto",
    classes: list[str | int] | None = None,
    num_classes: int | None = None,
    label_delimiter: str = "|",
    slot_modalities: dict[str, str] | None = None,
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
    if validate not in ("decode", "exists", "none"):
        raise ValueError(f"validate must be 'decode', 'exists' or 'none', got {validate!r}")
    if target_type not in TARGET_TYPES:
        raise ValueError(f"target_type must be one of {TARGET_TYPES}, got {target_type!r}")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(label_delimiter, str) or not label_delimiter:
        raise ValueError(f"label_delimiter must be a non-empty string, got {label_delimiter!r}")
    if isinstance(target, list) and target_type == "class":
        raise ValueError(f"target_type 'class' takes one target column, got {target}")
    columns = _columns_spec(columns)
    opts = _Options(
        path=path, columns=columns, target=target, path_columns=list(path_columns or []), split_column=split_column,
        val_path=val_path, test_path=test_path, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
        on_bad_sample=on_bad_sample, allow_outside_paths=allow_outside_paths, validate=validate, encoding=encoding,
        root=root, target_type=target_type, classes=list(classes) if classes is not None else None,
        num_classes=num_classes, label_delimiter=label_delimiter, modalities=dict(slot_modalities or {}),
    )
    parsed = _parse(opts)
    if parsed.problems and on_bad_sample == "error":
        raise ManifestError(parsed.problems)
    # Fresh sample dicts: the parse is cached and shared by every split and call.
    samples = [{"inputs": dict(s["inputs"]), "target": s["target"]} for s in parsed.samples[split]]
    metadata: dict[str, Any] = {
        "manifest": parsed.names["main"], "skipped": parsed.skipped[split], "target_type": parsed.target_type,
        "missing": {slot: sum(s["inputs"][slot] is None for s in samples) for slot in columns},
    }
    if parsed.classes is not None:
        metadata["classes"] = list(parsed.classes)
        metadata["num_classes"] = len(parsed.classes)
    return SampleDataset(samples, metadata=metadata)


class _Context:
    """What turning one row into a sample needs: the options, and the fitted label vocabulary."""

    def __init__(self, opts: _Options) -> None:
        self.opts = opts
        self.columns: dict[str, Any] = opts.columns
        self.target = opts.target
        self.path_columns = set(opts.path_columns)
        self.modalities: dict[str, str] = opts.modalities
        self.classes: list[str] | None = None
        self.index: dict[str, int] = {}
        self.target_type = "none" if opts.target is None else opts.target_type
        self.list_slots: set[str] = set()  # slots whose cells are lists of numbers (checked for one length)

    # ------------------------------------------------------------------ targets
    def fit_targets(self, train_rows: Sequence[Mapping[str, Any]]) -> None:
        """Decide the target type (``auto``) and fit the class vocabulary on the training rows."""
        opts, target = self.opts, self.target
        if target is None:
            return
        if isinstance(target, list):
            if self.target_type == "auto":
                self.target_type = "raw"
            if self.target_type == "multilabel":
                self.classes = list(target)  # one 0/1 column per class
            return
        values = [row.get(target) for row in train_rows if not _empty(row.get(target))]
        if self.target_type == "auto":
            self.target_type = _guess_target_type(values)
        if self.target_type not in ("class", "multilabel"):
            return
        if opts.classes is not None:
            names = []
            for c in opts.classes:
                try:
                    names.append(class_name(c))
                except ValueError as exc:
                    raise ValueError(f"classes: {exc}") from exc
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"classes: {duplicates} given more than once")
            self.classes = names
        else:
            seen: set[str] = set()
            for value in values:
                try:
                    seen.update([class_name(value)] if self.target_type == "class" else _multilabel_names(value, opts.label_delimiter))
                except ValueError:
                    continue  # reported with its row
            integers = all(_is_int_name(n) for n in seen)
            if opts.num_classes is not None and integers:
                self.classes = [str(i) for i in range(opts.num_classes)]  # the label is the class index
            else:
                self.classes = _sorted_names(seen)
        self.index = {name: i for i, name in enumerate(self.classes)}

    def target_value(self, row: Mapping[str, Any], number: int, table: _Table) -> Any:
        target = self.target
        if isinstance(target, list):
            return [self.one_number(row, number, table, column) if self.target_type in ("regression", "multilabel")
                    else self.raw(row, number, table, column) for column in target]
        value = row.get(target)
        if _empty(value):
            raise self.bad(table, number, target, "the target is empty")
        if self.target_type == "class":
            return self.class_index(value, number, table)
        if self.target_type == "multilabel":
            try:
                names = _multilabel_names(value, self.opts.label_delimiter)
            except ValueError as exc:
                raise self.bad(table, number, target, str(exc)) from exc
            hot = [0] * len(self.classes or [])
            for name in names:
                hot[self.lookup(name, value, number, table)] = 1
            return hot
        if self.target_type == "regression":
            return self.one_number(row, number, table, target)
        if self.target_type == "text":
            if not isinstance(value, str):
                raise self.bad(table, number, target, f"expected text (a string), got {type(value).__name__} {value!r:.40}")
            return value
        return self.raw(row, number, table, target)

    def class_index(self, value: Any, number: int, table: _Table) -> int:
        try:
            name = class_name(value)
        except ValueError as exc:
            raise self.bad(table, number, self.target, str(exc)) from exc
        return self.lookup(name, value, number, table)

    def lookup(self, name: str, value: Any, number: int, table: _Table) -> int:
        if name in self.index:
            return self.index[name]
        column = self.target
        if self.opts.num_classes is not None and _is_int_name(name) and self.classes == [str(i) for i in range(self.opts.num_classes)]:
            raise self.bad(table, number, column, f"expected a class index in [0, {self.opts.num_classes}), got {value!r}")
        where = "the classes option" if self.opts.classes is not None else "the labels of the training split"
        shown = self.classes if len(self.classes or []) <= 12 else [*self.classes[:12], "..."]
        raise self.bad(table, number, column, f"expected one of {where} {shown}, got {value!r}"
                                              + (f" (read as {name!r})" if str(value) != name else ""))

    def one_number(self, row: Mapping[str, Any], number: int, table: _Table, column: str) -> float | int:
        value = row.get(column)
        if _empty(value):
            raise self.bad(table, number, column, "the target is empty")
        if self.target_type == "multilabel":
            if not _is_number(value) or float(value) not in (0.0, 1.0):
                raise self.bad(table, number, column, f"expected 0 or 1 (a multilabel target column), got {value!r}")
            return int(float(value))
        try:
            return _number(value)
        except (TypeError, ValueError):
            raise self.bad(table, number, column, f"expected a finite number (a regression target), got {value!r}") from None

    def raw(self, row: Mapping[str, Any], number: int, table: _Table, column: str) -> Any:
        value = row.get(column)
        if _empty(value):
            raise self.bad(table, number, column, "the target is empty")
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    return value  # a string target (e.g. a caption)
        if isinstance(value, float) and not math.isfinite(value):
            raise self.bad(table, number, column, f"the target must be a finite number, got {value!r}")
        return value

    # ------------------------------------------------------------------ one row
    def bad(self, table: _Table, number: int, column: str | None, why: str) -> BadSampleError:
        where = f", column {column!r}" if column is not None else ""
        return BadSampleError(f"{table.name}: row {number}{where}: {why}")

    def sample(self, table: _Table, row: Mapping[str, Any], number: int) -> tuple[dict[str, Any], list[str]]:
        """The row as a sample, and every problem with it (an empty list for a good row)."""
        problems: list[str] = []
        inputs: dict[str, Any] = {}
        for slot, spec in self.columns.items():
            try:
                inputs[slot] = self.cell(table, row, number, slot, spec)
            except BadSampleError as exc:
                problems.append(str(exc))
                inputs[slot] = None
        value = None
        if self.target is not None:
            try:
                value = self.target_value(row, number, table)
            except BadSampleError as exc:
                problems.append(str(exc))
        if not problems and all(v is None for v in inputs.values()):
            cells = sorted({c for _, c in _named_columns(self.columns, None, None)})
            problems.append(str(self.bad(table, number, None, f"no modality: every input column ({', '.join(cells)}) is empty "
                                                              "(a sample needs at least one)")))
        return {"inputs": inputs, "target": value}, problems

    def cell(self, table: _Table, row: Mapping[str, Any], number: int, slot: str, spec: Any) -> Any:
        if isinstance(spec, list):  # numeric columns -> one row of numbers
            return self.numbers(table, row, number, spec)
        if isinstance(spec, Mapping):  # {numeric: [...], categorical: [...]} -> {column: value}
            numeric, categorical = spec.get("numeric", []), spec.get("categorical", [])
            cells = [row.get(c) for c in [*numeric, *categorical]]
            if all(_empty(c) for c in cells):
                return None
            for c in numeric:
                if _empty(row.get(c)):
                    raise self.bad(table, number, c, "empty numeric cell in a present modality "
                                                     "(leave all of its columns empty to mark the modality missing)")
            values: dict[str, Any] = dict(zip(numeric, self.numbers(table, row, number, numeric) or [], strict=True))
            for c in categorical:
                cell = row.get(c)
                if cell is not None and not isinstance(cell, (str, int, float, bool)):
                    raise self.bad(table, number, c, f"expected a category (a string or number), got {type(cell).__name__} {cell!r:.40}")
                values[c] = None if _empty(cell) else str(cell).strip()  # an empty category is its own value
            return values
        cell = row.get(spec)
        if _empty(cell):
            return None
        modality = self.modalities.get(slot)
        if spec in self.path_columns:
            return self.file(table, number, spec, cell, modality)
        if modality == "text" and not isinstance(cell, str):
            raise self.bad(table, number, spec, f"expected text (a string), got {type(cell).__name__} {cell!r:.40}")
        if isinstance(cell, (list, tuple)) and modality in (None, "tabular") and not any(isinstance(v, (list, tuple, dict)) for v in cell):
            for v in cell:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise self.bad(table, number, spec, f"expected a list of finite numbers, got {v!r} in it")
            self.list_slots.add(slot)
        return cell

    def check_lengths(self, rows: list[tuple[str, _Table, int, dict[str, Any], list[str]]]) -> None:
        """Rows of numbers given as one list cell must all have one length (the commonest one)."""
        for slot, spec in self.columns.items():
            if not isinstance(spec, str) or slot not in self.list_slots:
                continue
            lengths = Counter(len(s["inputs"][slot]) for _, _, _, s, _ in rows if isinstance(s["inputs"][slot], (list, tuple)))
            if len(lengths) < 2:
                continue
            common = lengths.most_common(1)[0][0]
            for _, table, number, sample, problems in rows:
                cell = sample["inputs"][slot]
                if isinstance(cell, (list, tuple)) and len(cell) != common:
                    problems.append(str(self.bad(table, number, spec, f"expected {common} numbers (as most rows have), got {len(cell)}")))

    def numbers(self, table: _Table, row: Mapping[str, Any], number: int, names: list[str]) -> list[float] | None:
        cells = [row.get(c) for c in names]
        if not names or all(_empty(c) for c in cells):
            return None
        values = []
        for c, cell in zip(names, cells, strict=True):
            if _empty(cell):
                raise self.bad(table, number, c, "empty cell among the numeric columns of a present modality "
                                                 "(leave all of them empty to mark the modality missing)")
            try:
                values.append(_number(cell))
            except (TypeError, ValueError) as exc:
                raise self.bad(table, number, c, f"expected a number, got {cell!r}") from exc
        return values

    def file(self, table: _Table, number: int, column: str, cell: Any, modality: str | None) -> str:
        if not isinstance(cell, str):
            raise self.bad(table, number, column, f"expected a file path, got {type(cell).__name__} {cell!r}")
        root = table.root
        file = (root / cell).resolve()
        if not self.opts.allow_outside_paths and not file.is_relative_to(root):
            raise self.bad(table, number, column, f"path {cell!r} escapes the manifest's folder {str(root)!r} "
                                                  "(allow_outside_paths: true permits it)")
        if modality == "text":  # the file's contents are the sample (a text encoder reads strings as text)
            from mmcore_plugins.io import read_text

            try:
                return read_text(file)
            except ValueError as exc:
                raise self.bad(table, number, column, str(exc)) from exc
        if self.opts.validate == "none":
            return str(file)
        if file.is_dir():
            if modality in ("image", "audio"):
                raise self.bad(table, number, column, f"{str(file)!r} is a folder, expected an {modality} file")
            from mmcore_plugins.io import MediaError, video_frames

            try:
                frames = [Path(f) for f in video_frames(file)]  # a video clip's frames, as the video encoder reads them
            except MediaError as exc:
                raise self.bad(table, number, column, str(exc)) from exc
            to_check = frames[:1]  # decoding every frame of every clip up front would be slow
        elif file.is_file():
            to_check = [file]
        else:
            raise self.bad(table, number, column, f"file {str(file)!r} does not exist")
        if self.opts.validate == "decode":
            for item in to_check:
                try:
                    check_file(item)
                except ValueError as exc:
                    raise self.bad(table, number, column, str(exc)) from exc  # the message names the file
        return str(file)


def inputs_from_rows(
    rows: Sequence[Mapping[str, Any]], columns: Mapping[str, Any], *, path_columns: Sequence[str] = (),
    root: str | os.PathLike | None = None, name: str = "<table>", modalities: Mapping[str, str] | None = None,
    validate: Literal["decode", "exists", "none"] = "exists", allow_outside_paths: bool = False,
) -> list[tuple[dict[str, Any] | None, str | None]]:
    """Each row's model inputs ``{slot: raw}`` as a manifest would build them (for ``mmcore predict
    --data``), or the row's problems: ``[(inputs, None) | (None, "row N, column 'c': ...")]``.

    Raises ValueError (listing them) when a column named in ``columns``/``path_columns`` is absent
    from every row.
    """
    spec = _columns_spec(columns)
    check_columns(Path(name), list(rows), _named_columns(spec, None, list(path_columns)))
    opts = _Options(columns=spec, target=None, path_columns=list(path_columns), target_type="raw", classes=None,
                    num_classes=None, label_delimiter="|", modalities=dict(modalities or {}), validate=validate,
                    allow_outside_paths=allow_outside_paths)
    context = _Context(opts)
    table = _Table.__new__(_Table)
    table.source, table.path, table.name, table.rows = None, None, name, list(rows)
    table.root = Path(root).expanduser().resolve() if root is not None else Path.cwd().resolve()
    built = []
    for i, row in enumerate(table.rows):
        sample, problems = context.sample(table, row, i + 1)
        built.append(("predict", table, i + 1, sample, problems))
    context.check_lengths(built)
    prefix = f"{name}: "
    return [(None, "; ".join(p.removeprefix(prefix) for p in problems)) if problems else (sample["inputs"], None)
            for *_, sample, problems in built]


def _is_int_name(name: str) -> bool:
    try:
        int(name)
    except ValueError:
        return False
    return True


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_dataset("manifest", load_manifest)
