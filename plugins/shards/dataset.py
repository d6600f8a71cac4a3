"""``shards``: the samples of a folder written by ``mmcore shard``, read with ``webdataset``.

    data:
      name: shards
      path: shards/           # the folder `mmcore shard TABLE --out shards/ ...` wrote

A split is a map-style data set: its samples are numbered in shard order, and sample ``i`` is read
with one ``pread`` of its byte range (the index records it) parsed by webdataset's tar iterator
(``tar_file_iterator`` + ``group_by_keys``) -- so the trainer draws samples in its own (seed, epoch)
order and splits every global batch over the processes by sample index, exactly as for a manifest
(:class:`mmcore.engine.distributed.GlobalBatchSampler`). That makes these promises hold whatever
the number of shards, processes and DataLoader workers (fewer shards than processes x workers
included): every sample exactly once per epoch, the same number of steps on every process (a
process whose share of the last global batch is empty runs a placeholder with loss weight 0),
and the same batches -- hence the same weights -- as training on the manifest the shards came from.
A worker opens each shard file once (``os.pread``: no shared file position) and never holds a
whole shard in memory.

A sample is what the manifest data set gives for the same row: ``{"inputs": {slot: raw | None},
"target": ..., "origin": {"file", "row", "columns"}}``, the slots in the manifest's order; a file
cell of an image or audio slot comes as an ``io.BytesIO`` of the file's bytes (the processors read
it with the same reader and checks as the file), every other cell as the manifest made it; an
empty cell is None (the manifest's missing-cell rule was applied when the shards were written).
"""

from __future__ import annotations

import array
import bisect
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from torch.utils.data import Dataset

from mmcore_plugins.shards.layout import ShardsError, read_index

#: a sample read back larger than this is refused (a crafted offset would otherwise size the read)
MAX_SAMPLE_BYTES = 1 << 30


class ShardDataset(Dataset):
    """One split of a shard folder (see the module docstring). ``metadata``: the manifest's metadata of
    that split (``classes``, ``num_classes``, ``target_type``, ``missing``, ``sources``, ...) plus
    ``shards`` (the folder)."""

    def __init__(self, folder: str | os.PathLike, split: str, index: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.split = split
        entry = index["splits"][split]
        self.slots = {slot: spec["kind"] for slot, spec in index["slots"].items()}
        self.names = [shard["name"] for shard in entry["shards"]]
        self.offsets = [array.array("q", shard["offsets"]) for shard in entry["shards"]]  # 8 bytes a sample
        self.starts = []  # the first sample number of each shard
        total = 0
        for shard in entry["shards"]:
            self.starts.append(total)
            total += shard["samples"]
        self.length = total
        self.metadata = {**entry["metadata"], "shards": str(self.folder)}
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own files
        return {**self.__dict__, "_fds": {}}

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # a forked worker: the parent's descriptors are the parent's
            self._fds, self._pid = {}, os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            path = self.folder / self.names[shard]
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
            except OSError as exc:
                raise ShardsError(f"cannot open shard {path}: {exc.strerror or exc}") from exc
            self._fds[shard] = fd
        return fd

    def locate(self, index: int) -> tuple[int, int]:
        """``(shard, position in it)`` of sample ``index``."""
        if not -self.length <= index < self.length:
            raise IndexError(f"sample {index} of a split of {self.length}")
        index %= self.length
        shard = bisect.bisect_right(self.starts, index) - 1
        return shard, index - self.starts[shard]

    def raw(self, index: int) -> dict[str, Any]:
        """Sample ``index`` as webdataset groups it: ``{"__key__", "json": bytes, "<slot>.<ext>": bytes, ...}``."""
        from webdataset.tariterators import group_by_keys, tar_file_iterator

        shard, position = self.locate(index)
        start, stop = self.offsets[shard][position], self.offsets[shard][position + 1]
        if stop - start > MAX_SAMPLE_BYTES:
            raise ShardsError(f"shard {self.folder / self.names[shard]}: sample {position} spans {stop - start} bytes, more "
                              f"than the {MAX_SAMPLE_BYTES}-byte limit")
        data = os.pread(self._fd(shard), stop - start, start)
        where = f"shard {self.folder / self.names[shard]}, sample {position}"
        try:
            members = ({**member, "__url__": self.names[shard]} for member in tar_file_iterator(io.BytesIO(data)))
            grouped = list(group_by_keys(members, lcase=False))
        except Exception as exc:  # noqa: BLE001 - tarfile's many errors for damaged bytes
            raise ShardsError(f"{where}: not a readable tar record ({exc}); write the shards again") from exc
        if len(grouped) != 1 or "json" not in grouped[0]:
            raise ShardsError(f"{where}: expected one sample with its .json, found {len(grouped)} record(s); write the shards again")
        return grouped[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.raw(index)
        try:
            stored = json.loads(record["json"])
        except ValueError as exc:
            shard, position = self.locate(index)
            raise ShardsError(f"shard {self.folder / self.names[shard]}, sample {position}: its .json is damaged ({exc}); "
                              "write the shards again") from exc
        files = {key.split(".", 1)[0]: value for key, value in record.items()
                 if "." in key and not key.startswith("__")}
        values = stored.get("inputs") or {}
        inputs = {slot: (io.BytesIO(files[slot]) if slot in files else None) if kind == "file" else values.get(slot)
                  for slot, kind in self.slots.items()}
        return {"inputs": inputs, "target": stored.get("target"), "origin": stored.get("origin")}


# The index of the folder last read: building train, val and test reads and checks it once.
_INDEX: dict[Any, dict[str, Any]] = {}


def cached_index(folder: Path) -> dict[str, Any]:
    """:func:`~mmcore_plugins.shards.layout.read_index`, kept while ``index.json`` is the same file."""
    from mmcore_plugins.shards.layout import INDEX

    try:
        st = os.stat(folder / INDEX)
        key = (str(folder.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _INDEX:
        index = _INDEX[key]
        try:  # the shards' sizes again (one stat each): a shard replaced since is reported by read_index
            if all(os.stat(folder / shard["name"]).st_size == shard["bytes"]
                   for entry in index["splits"].values() for shard in entry["shards"]):
                return index
        except OSError:
            pass
    index = read_index(folder)
    _INDEX.clear()
    if key is not None:
        _INDEX[key] = index
    return index


def load_shards(
    split: Literal["train", "val", "test"],
    path: str | os.PathLike,
    slot_modalities: dict[str, str] | None = None,
    target_type: str | None = None,
    classes: list[str | int] | None = None,
    num_classes: int | None = None,
) -> ShardDataset:
    """One split of the shard folder ``path`` (see the module docstring).

    ``slot_modalities``, ``target_type``, ``classes``, ``num_classes``: what the model implies (the
    trainer passes them); they must agree with what the shards were written for, since the values
    (a text file read as text, targets as class indices) were fixed then. Raises :class:`ShardsError`
    (a ValueError) naming the folder, the file or the option.
    """
    from mmcore_plugins.shards.layout import SPLITS

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    folder = Path(path).expanduser()
    index = cached_index(folder)
    written = {slot: spec.get("modality") for slot, spec in index["slots"].items()}
    for slot, modality in (slot_modalities or {}).items():
        if slot not in written:
            raise ShardsError(f"data.path: the shards in {folder} have no slot {slot!r} (they hold {', '.join(written)}); "
                              "write them with this model's config")
        if written[slot] not in (None, modality):
            raise ShardsError(f"data.path: slot {slot!r} of the shards in {folder} was written for a {written[slot]} encoder, "
                              f"the model reads it with a {modality} one; write the shards with this model's config")
    if target_type is not None and index.get("target_type") not in (None, "none", target_type):
        raise ShardsError(f"data.path: the shards in {folder} hold {index.get('target_type')} targets, the model's head needs "
                          f"{target_type}; write the shards with this model's config")
    written_classes = index.get("classes")
    if classes is not None and written_classes is not None and [str(c) for c in classes] != [str(c) for c in written_classes]:
        raise ShardsError(f"data.path: the shards in {folder} were written with the classes {written_classes}, the config "
                          f"gives {list(classes)}")
    if num_classes is not None and written_classes is not None and num_classes != len(written_classes):
        raise ShardsError(f"data.path: the shards in {folder} hold {len(written_classes)} classes, the config gives "
                          f"num_classes {num_classes}")
    return ShardDataset(folder, split, index)
