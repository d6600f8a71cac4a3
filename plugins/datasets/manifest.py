"""`manifest`: a CSV or JSONL file, one row per sample, columns mapped to modality slots.

    data:
      name: manifest
      path: data/train.jsonl            # CSV or JSONL (.jsonl / .ndjson / .json with one object a line)
      columns:
        image: image_path               # one column: a file path or inline value (text)
        table: [age, height]            # a list: numeric columns -> one row of numbers
        profile: {numeric: [age], categorical: [city]}   # a row {column: value} for tabular encoders
      path_columns: [image_path]        # file (or frame-folder) paths, relative to the manifest's folder
      target: label                     # or a list of target columns
      split_column: split               # or val_path / test_path, or val/test fractions + seed

An empty or absent cell means the sample lacks that modality (its raw input is None, carried as
``present=False`` downstream) — never a crash and never a silent zero. A bad row (unreadable
image, corrupt WAV, missing file, non-numeric value in a numeric column, path escaping the
manifest's folder) raises an error naming the manifest, the row and the column, or with
``on_bad_sample: skip`` is logged once and skipped.

Files are validated eagerly, when the data set is built (``validate``): ``decode`` opens every
image (PIL) and WAV (header and frames) referenced, so a bad file is reported up front with its
row instead of crashing a DataLoader worker mid-epoch; ``exists`` only checks the files exist;
``none`` checks nothing. Raw inputs handed to the processors are the absolute file paths.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import math
import wave
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import mmcore
from mmcore.data import SPLITS, SampleDataset, seeded_split

logger = logging.getLogger("mmcore.data.manifest")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
AUDIO_SUFFIXES = {".wav", ".wave"}


class BadSampleError(ValueError):
    """A manifest row that cannot be used; the message names manifest, row and column."""


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``.jsonl`` / ``.json`` / ``.ndjson`` (one object per line) or ``.csv`` file, as dicts."""
    if not path.is_file():
        raise FileNotFoundError(f"manifest {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        rows = []
        # utf-8-sig: a byte-order mark (as some editors write) is not part of the first field.
        for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadSampleError(f"{path}: line {number} is not valid JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise BadSampleError(f"{path}: line {number} must hold a JSON object, got {type(row).__name__}")
            rows.append(row)
        return rows
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return list(csv.DictReader(fh))
    raise ValueError(f"manifest {str(path)!r}: expected a .csv or .jsonl file, got {suffix or 'no suffix'}")


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
    """Decode an image or WAV file enough to be sure a processor can read it; ValueError if not."""
    suffix = file.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        from PIL import Image

        try:
            with Image.open(file) as img:
                img.load()  # decodes the pixels: catches truncated files that verify() lets through
        except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ...) for bad files
            raise ValueError(f"unreadable image: {exc}") from exc
    elif suffix in AUDIO_SUFFIXES:
        try:
            with wave.open(str(file), "rb") as f:
                frames = f.getnframes()
                if f.getsampwidth() not in (1, 2, 3, 4):
                    raise ValueError(f"unsupported sample width {8 * f.getsampwidth()} bits")
                data = f.readframes(frames)
        except (OSError, EOFError, wave.Error) as exc:
            raise ValueError(f"unreadable WAV file: {exc}") from exc
        if not data:
            raise ValueError("WAV file holds no audio frames")


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


def load_manifest(
    split: Literal["train", "val", "test"],
    path: str,
    columns: dict[str, Any],
    target: str | list[str] | None = None,
    path_columns: list[str] | None = None,
    split_column: str | None = None,
    val_path: str | None = None,
    test_path: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    on_bad_sample: Literal["error", "skip"] = "error",
    allow_outside_paths: bool = False,
    validate: Literal["decode", "exists", "none"] = "decode",
) -> SampleDataset:
    """Samples from a CSV/JSONL manifest; columns mapped to modality slots, empty cells = missing modality."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if on_bad_sample not in ("error", "skip"):
        raise ValueError(f"on_bad_sample must be 'error' or 'skip', got {on_bad_sample!r}")
    if validate not in ("decode", "exists", "none"):
        raise ValueError(f"validate must be 'decode', 'exists' or 'none', got {validate!r}")
    columns = _columns_spec(columns)
    named = _named_columns(columns, target, path_columns)
    manifest = Path(path).expanduser()
    if (split == "val" and val_path) or (split == "test" and test_path):
        manifest = Path(val_path if split == "val" else test_path).expanduser()
        rows = list(enumerate(read_rows(manifest), start=1))
        check_columns(manifest, [r for _, r in rows], named)
    else:
        rows = list(enumerate(read_rows(manifest), start=1))
        check_columns(manifest, [r for _, r in rows], named)
        if split_column is not None:
            if rows and all(split_column not in r for _, r in rows):
                raise ValueError(f"manifest {str(manifest)!r} has no split column {split_column!r}")
            rows = [(n, r) for n, r in rows if r.get(split_column) == split]
        elif not (val_path or test_path):
            keep = set(seeded_split(len(rows), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)[split])
            rows = [(n, r) for i, (n, r) in enumerate(rows) if i in keep]
        elif split != "train":
            rows = []  # a separate file exists for the other split, not for this one
    root = manifest.parent.resolve()
    context = _Context(manifest, root, columns, target, set(path_columns or []), allow_outside_paths, validate)
    samples, skipped = [], 0
    for number, row in rows:
        try:
            samples.append(context.sample(row, number))
        except BadSampleError as exc:
            if on_bad_sample == "error":
                raise
            if not skipped:
                logger.warning("%s (skipping this and any further bad rows: on_bad_sample=skip)", exc)
            skipped += 1
    if skipped > 1:
        logger.warning("%s: skipped %d bad rows in all (split %s)", manifest, skipped, split)
    metadata: dict[str, Any] = {"manifest": str(manifest), "skipped": skipped,
                                "missing": {slot: sum(s["inputs"][slot] is None for s in samples) for slot in columns}}
    if isinstance(target, str):
        labels = sorted({s["target"] for s in samples if isinstance(s["target"], int)})
        if labels and all(isinstance(s["target"], int) for s in samples):
            metadata["num_classes"] = max(labels) + 1 if labels[0] >= 0 else len(labels)
    return SampleDataset(samples, metadata=metadata)


class _Context:
    """What turning one row into a sample needs."""

    def __init__(self, manifest: Path, root: Path, columns: dict[str, Any], target: str | list[str] | None,
                 path_columns: set[str], allow_outside: bool, validate: str) -> None:
        self.manifest, self.root, self.columns, self.target = manifest, root, columns, target
        self.path_columns, self.allow_outside, self.validate = path_columns, allow_outside, validate

    def bad(self, number: int, column: str, why: str) -> BadSampleError:
        return BadSampleError(f"{self.manifest}: row {number}, column {column!r}: {why}")

    def sample(self, row: Mapping[str, Any], number: int) -> dict[str, Any]:
        inputs = {slot: self.cell(row, number, spec) for slot, spec in self.columns.items()}
        value = None
        if isinstance(self.target, str):
            value = self.target_value(row, number, self.target)
        elif isinstance(self.target, list):
            value = [self.target_value(row, number, t) for t in self.target]
        return {"inputs": inputs, "target": value}

    def target_value(self, row: Mapping[str, Any], number: int, column: str) -> Any:
        value = row.get(column)
        if _empty(value):
            raise self.bad(number, column, "the target is empty")
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    return value  # a string target (e.g. a caption)
        if isinstance(value, float) and not math.isfinite(value):
            raise self.bad(number, column, f"the target must be a finite number, got {value!r}")
        return value

    def cell(self, row: Mapping[str, Any], number: int, spec: Any) -> Any:
        if isinstance(spec, list):  # numeric columns -> one row of numbers
            return self.numbers(row, number, spec)
        if isinstance(spec, Mapping):  # {numeric: [...], categorical: [...]} -> {column: value}
            numeric, categorical = spec.get("numeric", []), spec.get("categorical", [])
            cells = [row.get(c) for c in [*numeric, *categorical]]
            if all(_empty(c) for c in cells):
                return None
            for c in numeric:
                if _empty(row.get(c)):
                    raise self.bad(number, c, "empty numeric cell in a present modality "
                                              "(leave all of its columns empty to mark the modality missing)")
            values: dict[str, Any] = dict(zip(numeric, self.numbers(row, number, numeric) or [], strict=True))
            for c in categorical:
                cell = row.get(c)
                values[c] = None if _empty(cell) else str(cell).strip()  # an empty category is its own value
            return values
        cell = row.get(spec)
        if _empty(cell):
            return None
        if spec in self.path_columns:
            return self.file(number, spec, cell)
        return cell

    def numbers(self, row: Mapping[str, Any], number: int, names: list[str]) -> list[float] | None:
        cells = [row.get(c) for c in names]
        if not names or all(_empty(c) for c in cells):
            return None
        values = []
        for c, cell in zip(names, cells, strict=True):
            if _empty(cell):
                raise self.bad(number, c, "empty cell among the numeric columns of a present modality "
                                          "(leave all of them empty to mark the modality missing)")
            try:
                values.append(_number(cell))
            except (TypeError, ValueError) as exc:
                raise self.bad(number, c, f"expected a number, got {cell!r}") from exc
        return values

    def file(self, number: int, column: str, cell: Any) -> str:
        if not isinstance(cell, str):
            raise self.bad(number, column, f"expected a file path, got {type(cell).__name__} {cell!r}")
        file = (self.root / cell).resolve()
        if not self.allow_outside and not file.is_relative_to(self.root):
            raise self.bad(number, column, f"path {cell!r} escapes the manifest's folder {str(self.root)!r} "
                                           "(allow_outside_paths: true permits it)")
        if self.validate != "none":
            if file.is_dir():  # a folder of frames (a video clip)
                frames = sorted(p for p in file.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                if not frames:
                    raise self.bad(number, column, f"folder {str(file)!r} holds no image frames")
                to_check = frames[:1]  # decoding every frame of every clip up front would be slow
            elif file.is_file():
                to_check = [file]
            else:
                raise self.bad(number, column, f"file {str(file)!r} does not exist")
            if self.validate == "decode":
                for item in to_check:
                    try:
                        check_file(item)
                    except ValueError as exc:
                        raise self.bad(number, column, f"{exc} ({str(item)!r})") from exc
        return str(file)


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_dataset("manifest", load_manifest)
