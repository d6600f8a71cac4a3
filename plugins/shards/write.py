"""Writing shards: a manifest's rows (read and validated by the manifest data set itself, every row
once, before anything is written) -> WebDataset tar shards + ``index.json`` (:mod:`.layout`).

Each sample is one WebDataset sample (the key, ``KEY.json`` with the row's other cells — its values
as the manifest made them, its target, its origin — and one ``KEY.<slot>.<ext>`` per file cell of an
image or audio slot, the file's bytes as they are on disk). Shards are written with
``webdataset.TarWriter`` through mmcore's atomic writer, so a shard file is complete or absent;
the tar headers carry no time or owner (``mtime 0``): the same rows give the same bytes.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmcore.data import SPLITS
from mmcore_plugins.shards.layout import (
    FORMAT,
    INDEX,
    MARKER,
    SHARD_NAME,
    VERSION,
    ShardsError,
    check_out,
    json_bytes,
    shard_name,
)

logger = logging.getLogger("mmcore.shards")

#: slot names that can be a WebDataset member's suffix (``KEY.<slot>.<ext>``: no dot, no slash)
SLOT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def file_slots(options: Mapping[str, Any]) -> dict[str, str]:
    """``{slot: column}`` of the slots whose cells are media files stored as bytes: a single column
    listed in ``path_columns`` whose modality is not text (a text file's contents are the sample)."""
    columns, paths = options["columns"], set(options.get("path_columns") or [])
    modalities = options.get("slot_modalities") or {}
    return {slot: spec for slot, spec in columns.items()
            if isinstance(spec, str) and spec in paths and modalities.get(slot) != "text"}


def extension(file: str) -> str:
    suffix = Path(file).suffix.lower().lstrip(".")
    return suffix if re.fullmatch(r"[a-z0-9]{1,16}", suffix) else "bin"


def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON data (numpy scalars as Python numbers); a cell JSON cannot hold is the user's error."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ShardsError(f"{where}: a non-finite number cannot be stored")
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v, where) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", getattr(value, "dim", lambda: 1)) in (0, ()):
        return _plain(item(), where)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return _plain(tolist(), where)
    raise ShardsError(f"{where}: a {type(value).__name__} cannot be stored in a shard (expected numbers, text, lists)")


def sample_offsets(path: Path) -> list[int]:
    """The byte offset where each sample of the tar ``path`` starts, and its end: read from the tar
    headers (Python's :mod:`tarfile`; the data between them is skipped). A sample's members are
    consecutive (TarWriter writes them so), so sample ``i`` spans ``offsets[i]..offsets[i+1]``."""
    offsets: list[int] = []
    key = None
    end = 0
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            member_key = member.name.split(".", 1)[0]
            if member_key != key:
                offsets.append(member.offset)
                key = member_key
            end = member.offset_data + (member.size + 511) // 512 * 512
    return [*offsets, end]


def load_splits(table: str, data: Mapping[str, Any], implied: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest data set's three splits of ``table`` with ``data``'s options (plus the model's
    ``implied`` ones that the data section does not set), every row read and validated once by the
    manifest itself (:class:`~mmcore_plugins.datasets.manifest.ManifestError` listing every bad row)."""
    from mmcore_plugins.datasets.manifest import load_manifest

    options = {k: v for k, v in data.items() if k != "name"}
    options["path"] = table
    for key, value in implied.items():
        options.setdefault(key, value)
    columns = options.get("columns")
    if isinstance(columns, Mapping):
        bad = [slot for slot in columns if not SLOT_NAME.match(str(slot))]
        if bad:
            raise ShardsError(f"data.columns: slot {bad[0]!r} cannot name a shard member (letters, digits, '_' and '-' only)")
    datasets = {split: load_manifest(split, **options) for split in SPLITS}
    return datasets, options


def write_shards(table: str, data: Mapping[str, Any], implied: Mapping[str, Any], out: Path, *, shard_size: int,
                 overwrite: bool = False) -> dict[str, Any]:
    """Shard ``table`` (a manifest with the options ``data``) into ``out``; returns the index written.

    Raises :class:`ShardsError` (``out`` may not be written, a cell a shard cannot hold, a video folder),
    the manifest's errors for bad rows — all before any file is written."""
    from mmcore.engine.atomic import write_file

    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ShardsError(f"--shard-size must be a positive number of samples, got {shard_size!r}")
    check_out(out, overwrite=overwrite)
    started = time.perf_counter()
    datasets, options = load_splits(table, data, implied)
    files = file_slots(options)
    modalities = dict(options.get("slot_modalities") or {})
    columns = options["columns"]
    # Everything that could refuse a row is checked before the first byte is written. Each sample's
    # JSON is kept beside it (a data set's samples may be columns: what it hands out is a copy).
    encoded: dict[str, list[bytes]] = {split: [] for split in datasets}
    for split, dataset in datasets.items():
        for sample in dataset.samples:
            origin = sample.get("origin") or {}
            for slot, column in files.items():
                cell = sample["inputs"][slot]
                if cell is not None and os.path.isdir(cell):
                    raise ShardsError(f"{origin.get('file')}: row {origin.get('row')}, column {column!r}: {cell!r} is a folder "
                                      "(a video's frames); shards hold one file per cell")
            where = f"{origin.get('file')}: row {origin.get('row')}"
            encoded[split].append(json_bytes({
                "inputs": {slot: _plain(value, f"{where}, slot {slot!r}") for slot, value in sample["inputs"].items()
                           if slot not in files},
                "target": _plain(sample.get("target"), f"{where}, target"),
                "origin": _plain(origin, where)}))
    out.mkdir(parents=True, exist_ok=True)
    previous = out / INDEX
    if not (out / MARKER).is_file():
        from mmcore import __version__

        write_file(out / MARKER, json_bytes({"mmcore": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + b"\n")
    import webdataset

    splits: dict[str, Any] = {}
    written: set[str] = set()
    for split, dataset in datasets.items():
        samples = dataset.samples
        shards = []
        for number, begin in enumerate(range(0, len(samples), shard_size)):
            part = samples[begin:begin + shard_size]
            name = shard_name(split, number)

            def fill(fh, part: Sequence[Mapping[str, Any]] = part, begin: int = begin, split: str = split) -> None:
                # mtime an int: a float one makes tarfile add a PAX header to every member (two headers
                # to parse for each member read)
                writer = webdataset.TarWriter(fh, encoder=False, mtime=0, user="mmcore", group="mmcore")
                for i, sample in enumerate(part):
                    record: dict[str, Any] = {"__key__": f"{begin + i:09d}", "json": encoded[split][begin + i]}
                    for slot in files:
                        cell = sample["inputs"][slot]
                        if cell is not None:
                            with open(cell, "rb") as media:
                                record[f"{slot}.{extension(cell)}"] = media.read()
                    writer.write(record)
                writer.close()

            write_file(out / name, fill)
            written.add(name)
            shards.append({"name": name, "samples": len(part), "bytes": (out / name).stat().st_size,
                           "offsets": sample_offsets(out / name)})
        metadata = {k: v for k, v in dataset.metadata.items()}
        splits[split] = {"samples": len(samples), "shards": shards, "metadata": _plain(metadata, f"{split} metadata")}
    train_meta = datasets["train"].metadata
    index = {
        "format": FORMAT, "version": VERSION,
        "source": train_meta.get("sources"),
        "slots": {slot: {"column": spec if isinstance(spec, str) else None, "kind": "file" if slot in files else "value",
                         "modality": modalities.get(slot)} for slot, spec in columns.items()},
        "target_type": train_meta.get("target_type"), "classes": train_meta.get("classes"),
        "options": _plain({k: v for k, v in options.items() if k != "path"}, "options"),
        "splits": splits,
    }
    stale = []
    if previous.is_file():  # shards of an earlier index of ours that the new one does not list
        stale = [p for p in out.iterdir() if SHARD_NAME.match(p.name) and p.name not in written]
    write_file(out / INDEX, json_bytes(index))
    for path in stale:
        path.unlink(missing_ok=True)
    logger.info("sharded %s into %s in %.1f s", table, out, time.perf_counter() - started)
    return index


def summary(index: Mapping[str, Any], out: Path) -> str:
    parts = [f"{split} {entry['samples']} samples in {len(entry['shards'])} shard(s)" for split, entry in index["splits"].items()]
    return f"{out}: " + ", ".join(parts) + f"; index {out / INDEX}"


__all__ = ["file_slots", "load_splits", "sample_offsets", "summary", "write_shards"]
