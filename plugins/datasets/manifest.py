"""`manifest`: a CSV or JSONL file, one row per sample, columns mapped to modality slots.

    data:
      name: manifest
      path: data/train.jsonl            # CSV or JSONL
      columns: {image: image_path, text: caption, table: [age, height]}
      path_columns: [image_path]        # file paths, relative to the manifest's folder
      target: label
      split_column: split               # or test_path / val_path, or test/val fractions + seed

An empty or absent cell means the sample lacks that modality (``present=False`` downstream).
A bad row (missing file, non-numeric value in a numeric column, path escaping the manifest's
folder) raises an error naming manifest, row and column, or with ``on_bad_sample: skip`` is
logged once and skipped.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Any, Literal

import mmcore
from mmcore.data import SPLITS, SampleDataset, seeded_split

logger = logging.getLogger("mmcore.data.manifest")


class BadSampleError(ValueError):
    """A manifest row that cannot be used; the message names manifest, row and column."""


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``.jsonl`` / ``.json`` (one object per line) or ``.csv`` file, as dicts."""
    if not path.is_file():
        raise FileNotFoundError(f"manifest {str(path)!r} does not exist")
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), start=1):
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
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))
    raise ValueError(f"manifest {str(path)!r}: expected a .csv or .jsonl file")


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    result = float(value)  # accepts numeric strings from CSV; raises ValueError otherwise
    if not math.isfinite(result):
        raise ValueError(f"expected a finite number, got {value!r}")
    return result


def load_manifest(
    split: Literal["train", "val", "test"],
    path: str,
    columns: dict[str, Any],
    target: str | None = None,
    path_columns: list[str] | None = None,
    split_column: str | None = None,
    val_path: str | None = None,
    test_path: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    on_bad_sample: Literal["error", "skip"] = "error",
    allow_outside_paths: bool = False,
) -> SampleDataset:
    """Samples from a CSV/JSONL manifest; columns mapped to modality slots, empty cells = missing modality."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    manifest = Path(path).expanduser()
    if split == "val" and val_path or split == "test" and test_path:
        manifest = Path(val_path if split == "val" else test_path).expanduser()
        rows = read_rows(manifest)
    else:
        rows = read_rows(manifest)
        if split_column is not None:
            rows = [r for r in rows if r.get(split_column) == split]
        elif not (val_path or test_path):
            keep = set(seeded_split(len(rows), val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)[split])
            rows = [r for i, r in enumerate(rows) if i in keep]
        elif split != "train":
            rows = []  # a separate file exists for the other split, not for this one
    root = manifest.parent.resolve()
    path_columns = set(path_columns or [])
    samples, skipped = [], 0
    for number, row in enumerate(rows, start=1):
        try:
            samples.append(_sample(row, number, manifest, root, columns, target, path_columns, allow_outside_paths))
        except BadSampleError as exc:
            if on_bad_sample == "error":
                raise
            if not skipped:
                logger.warning("%s (skipping this and any further bad rows: on_bad_sample=skip)", exc)
            skipped += 1
    metadata = {"manifest": str(manifest), "skipped": skipped}
    if target is not None:
        labels = sorted({s["target"] for s in samples if isinstance(s["target"], int)})
        metadata["num_classes"] = len(labels)
    return SampleDataset(samples, metadata=metadata)


def _sample(row, number, manifest, root, columns, target, path_columns, allow_outside) -> dict[str, Any]:
    def bad(column: str, why: str) -> BadSampleError:
        return BadSampleError(f"{manifest}: row {number}, column {column!r}: {why}")

    inputs: dict[str, Any] = {}
    for slot, column in columns.items():
        if isinstance(column, list):  # numeric columns -> one row of numbers
            cells = [row.get(c) for c in column]
            if all(_empty(c) for c in cells):
                inputs[slot] = None
                continue
            values = []
            for c, cell in zip(column, cells, strict=True):
                try:
                    values.append(_number(cell))
                except (TypeError, ValueError) as exc:
                    raise bad(c, f"expected a number, got {cell!r}") from exc
            inputs[slot] = values
            continue
        cell = row.get(column)
        if _empty(cell):
            inputs[slot] = None
        elif column in path_columns:
            file = (root / str(cell)).resolve()
            if not allow_outside and not file.is_relative_to(root):
                raise bad(column, f"path {cell!r} escapes the manifest's folder {str(root)!r} (allow_outside_paths: true permits it)")
            if not file.is_file():
                raise bad(column, f"file {str(file)!r} does not exist")
            inputs[slot] = str(file)
        else:
            inputs[slot] = cell
    value = None
    if target is not None:
        value = row.get(target)
        if _empty(value):
            raise bad(target, "the target is empty")
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    pass  # a string target (e.g. a caption)
    return {"inputs": inputs, "target": value}


@mmcore.hookimpl
def mmcore_register(registry) -> None:
    registry.add_dataset("manifest", load_manifest)
